"""The logits stage: one set of models loaded once per actor, per-frame scores for a batch of faces.

Frame models emit their logits; clip/sequence models (Mao, PRL) emit per-frame CNN features, and their
cheap temporal heads run later per video (fer_ray.infer.postprocess), where the frame order is known.
Each model gets its own resize from the one stored face (112/128/224). GPU with bf16 and channels_last
when one is present, float32 on CPU.

Prior correction (`prior_correction=True`, frame models only): logits minus the log of the class shares
the model saw in training (models.json `train_prior`), so its softmax no longer carries the training
set's class balance (logit adjustment). Classes the model never saw in training keep their logit.

Flip test (`flip_test=True`, frame models only): each face is also scored mirrored left-right, and the
frame's scores are the log of the two softmaxes' mean, so a face and its mirror image get the same answer.
Training mirrors faces at random (augment `flip`), so the mirror is a view the model knows; it costs a
second forward pass. Clip/sequence models keep their plain features: their temporal heads were trained on
single views.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fer_ray import schema
from fer_ray.infer.cascade import log_prior, log_softmax
from fer_ray.infer.systems import ModelEntry, check_prior_correction

if TYPE_CHECKING:
    import torch

# torch, torchvision and timm (through codec and fer_ray.models) are imported where they run, in the actor:
# the annotate job's driver only needs this class to name the stage, and importing them costs it ~4 s.

# Ray Data column names can't hold "/"; per-model columns are "scores:<task>:<run name>".
COLUMN_PREFIX = schema.LOGITS_COLUMN_PREFIX
key_of_column = schema.model_key_of_column


def column(entry: ModelEntry) -> str:
    return schema.logits_column(entry.key)


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def decode_faces(faces) -> tuple[torch.Tensor, np.ndarray]:
    """(uint8 (k,3,H,W) images, bool (n,) has-face mask) from a column of encoded faces (empty: no face)."""
    import torch

    from fer_ray import codec

    present = np.array([face is not None and len(face) > 0 for face in faces], dtype=bool)
    images = [codec.decode_face(faces[i]) for i in np.flatnonzero(present)]
    if not images:
        return torch.zeros((0, 3, 1, 1), dtype=torch.uint8), present
    return torch.stack(images), present


class LogitsStage:
    """`__call__(batch) -> batch`: adds one scores column per model; frames without a face get NaN rows."""

    def __init__(self, models: list[ModelEntry], device: str = "auto", threads: int = 1,
                 prior_correction: bool = False, flip_test: bool = False):
        import torch

        from fer_ray.models import data_config, load_checkpoint
        from fer_ray.models.transforms import eval_transform

        torch.set_num_threads(threads)
        self.device = pick_device(device)
        self.entries = list(models)
        self.flip_test = flip_test
        self.models = {}
        for entry in self.entries:
            model, _ = load_checkpoint(entry.checkpoint, device=self.device)
            if self.device == "cuda":
                model = model.to(memory_format=torch.channels_last)
            self.models[entry.key] = model
        self.log_prior = {}
        if prior_correction:
            check_prior_correction(self.entries)
            for entry in self.entries:
                self.log_prior[entry.key] = log_prior(entry.train_prior).astype(np.float32)
        # Each model's data config at the side it was trained at; models sharing one share the resize.
        self.configs = {e.key: data_config(e.arch, e.input_size) for e in self.entries}
        self.transforms = {config: eval_transform(config) for config in self.configs.values()}
        # Output widths are fixed up front so a batch without any face still has well-shaped columns.
        probe = self._inputs(torch.zeros((1, 3, 112, 112), dtype=torch.uint8))
        with torch.inference_mode():
            self.widths = {e.key: self._run(e, probe[e.key]).shape[1] for e in self.entries}

    def _inputs(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """model key -> its input tensor (one resize per data config) from uint8 (k,3,H,W) images."""
        import torch

        # uint8 goes to the device before resizing: a quarter of the float bytes over PCIe, and the
        # resize runs on the GPU instead of the actor's few CPU threads.
        batch = images.to(self.device).contiguous()
        resized = {}
        for config, transform in self.transforms.items():
            tensor = transform(batch)
            resized[config] = tensor.to(memory_format=torch.channels_last) if self.device == "cuda" else tensor
        return {key: resized[config] for key, config in self.configs.items()}

    def _run(self, entry: ModelEntry, inputs: torch.Tensor) -> np.ndarray:
        import torch

        model = self.models[entry.key]
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device == "cuda"):
            if entry.kind == "frame":
                out = model(inputs)
            else:  # clip/sequence models: per-frame features, the temporal head runs per video
                out = model.frame_features(inputs)
        return out.float().cpu().numpy()

    def _model_scores(self, entry: ModelEntry, inputs: torch.Tensor) -> np.ndarray:
        """The model's scores; with the flip test, the log of the mean softmax of the face and its mirror."""
        scores = self._run(entry, inputs)
        if not self.flip_test or entry.kind != "frame":
            return scores
        mirrored = self._run(entry, inputs.flip(-1))
        both = np.logaddexp(log_softmax(scores), log_softmax(mirrored)) - np.log(2.0)
        return both.astype(np.float32)

    def __call__(self, batch: dict) -> dict:
        import torch

        with torch.inference_mode():
            return self._scores(batch)

    def _scores(self, batch: dict) -> dict:
        images, present = decode_faces(batch[schema.FACE])
        inputs = self._inputs(images) if present.any() else None
        out = {k: v for k, v in batch.items() if k != schema.FACE}
        out[schema.FACE_FOUND] = present
        for entry in self.entries:
            full = np.full((len(present), self.widths[entry.key]), np.nan, dtype=np.float32)
            if inputs is not None:
                full[present] = self._model_scores(entry, inputs[entry.key]) - self.log_prior.get(entry.key, 0.0)
            out[column(entry)] = full
        return out
