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

Crop test (`crop_test=True`, frame models only): the face is also scored as five crops of CROP_SIDE its side
(its four corners and its centre), each resized back to the model's input: training crops faces at random
(augment `crop_scale`, area 0.8-1.0 in the recipes), so a model has seen its faces framed that way far more
often than whole. The scores are the log of the views' mean softmax; with the flip test every view is also
mirrored (twelve views: the "ten-crop" test of the FER2013 records, plus the whole face and its mirror).
Six (twelve) forward passes instead of one (two).

Per-video normalisation (`adapt_bn` > 0, fer_ray.infer.adapt): each call holds whole normalisation groups
(the annotate step groups faces by video, photos by person, first) and every group (a video's face track, a
person's photos) is scored with BatchNorm statistics that are `adapt_bn` its own faces' and the rest the
trained ones. It costs one more forward pass per model over a sample of the group's faces (adapt.SAMPLE),
and a second decode of those faces.
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

CROP_SIDE = 11 / 12  # the crop test's crops: 44 of 48 px, area 0.84, inside the recipes' training crop_scale

# Ray Data column names can't hold "/"; per-model columns are "scores:<task>:<run name>".
COLUMN_PREFIX = schema.LOGITS_COLUMN_PREFIX
key_of_column = schema.model_key_of_column


def column(entry: ModelEntry) -> str:
    return schema.logits_column(entry.key)


def crops(inputs: torch.Tensor, side: float = CROP_SIDE) -> list[torch.Tensor]:
    """The crop test's five views of a (k, C, H, W) batch: its four corners and its centre, each about `side`
    of the image's sides, resized back to (H, W). The margins are even, so the centre crop of a mirrored face
    is the mirror of its centre crop (and the corners swap): with the flip test a face and its mirror image
    get the same twelve views."""
    import torch.nn.functional as F

    height, width = inputs.shape[-2:]
    h, w = (max(1, n - 2 * round(n * (1 - side) / 2)) for n in (height, width))
    corners = [(0, 0), (0, width - w), (height - h, 0), (height - h, width - w),
               ((height - h) // 2, (width - w) // 2)]
    return [F.interpolate(inputs[..., y:y + h, x:x + w], size=(height, width), mode="bilinear", align_corners=False)
            for y, x in corners]


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def has_face(faces) -> np.ndarray:
    """bool (n,): which entries of a column of encoded faces hold one (empty or None: no face)."""
    return np.array([face is not None and len(face) > 0 for face in faces], dtype=bool)


def decode_faces(faces) -> tuple[torch.Tensor, np.ndarray]:
    """(uint8 (k,3,H,W) images, bool (n,) has-face mask) from a column of encoded faces (empty: no face)."""
    import torch

    from fer_ray import codec

    present = has_face(faces)
    images = [codec.decode_face(faces[i]) for i in np.flatnonzero(present)]
    if not images:
        return torch.zeros((0, 3, 1, 1), dtype=torch.uint8), present
    return torch.stack(images), present


class LogitsStage:
    """`__call__(batch) -> batch`: adds one scores column per model; frames without a face get NaN rows."""

    def __init__(self, models: list[ModelEntry], device: str = "auto", threads: int = 1,
                 prior_correction: bool = False, flip_test: bool = False, adapt_bn: float = 0.0,
                 crop_test: bool = False):
        import torch

        from fer_ray.models import data_config, load_checkpoint
        from fer_ray.models.transforms import eval_transform

        torch.set_num_threads(threads)
        self.device = pick_device(device)
        self.entries = list(models)
        self.flip_test = flip_test
        self.crop_test = crop_test
        self.adapt_bn = float(adapt_bn)
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
        """The model's scores; with the flip / crop test, the log of the mean softmax of the face's views."""
        if entry.kind != "frame" or not (self.flip_test or self.crop_test):
            return self._run(entry, inputs)
        views = [inputs, *(crops(inputs) if self.crop_test else [])]
        if self.flip_test:
            views += [v.flip(-1) for v in views]
        total = None
        for view in views:  # one view at a time: twelve copies of a large batch need not fit at once
            logp = log_softmax(self._run(entry, view))
            total = logp if total is None else np.logaddexp(total, logp)
        return (total - np.log(len(views))).astype(np.float32)

    def __call__(self, batch: dict) -> dict:
        import torch

        with torch.inference_mode():
            return self._scores(batch)

    def _scores(self, batch: dict) -> dict:
        if self.adapt_bn:
            return self._adapted_scores(batch)
        images, present = decode_faces(batch[schema.FACE])
        parts = [(np.flatnonzero(present), self._entry_scores(self._inputs(images)))] if present.any() else []
        return self._output(batch, present, parts)

    def _entry_scores(self, inputs: dict) -> dict[str, np.ndarray]:
        """model key -> its scores (flip test and prior correction applied) of one set of model inputs."""
        return {e.key: self._model_scores(e, inputs[e.key]) - self.log_prior.get(e.key, 0.0) for e in self.entries}

    def _output(self, batch: dict, present: np.ndarray, parts: list[tuple[np.ndarray, dict]]) -> dict:
        """The batch without its faces, its face-found mask and a scores column per model: each (rows, model
        key -> scores of those rows) part filled in, NaN where no part has a row."""
        out = {k: v for k, v in batch.items() if k not in (schema.FACE, schema.NORM_GROUP)}
        out[schema.FACE_FOUND] = present
        for entry in self.entries:
            full = np.full((len(present), self.widths[entry.key]), np.nan, dtype=np.float32)
            for rows, scores in parts:
                full[rows] = scores[entry.key]
            out[column(entry)] = full
        return out

    def _adapted_scores(self, batch: dict) -> dict:
        """Whole normalisation groups (adapt.groups: a video's face tracks, a person's photos): each group with
        enough faces (adapt.MIN_FACES) scored with normalisation statistics partly its own; the faces of the
        smaller groups together with the trained ones."""
        from fer_ray.infer import adapt

        faces = batch[schema.FACE]
        present = has_face(faces)
        units = adapt.groups(batch).astype(str)
        ids, counts = np.unique(units[present], return_counts=True)
        small = np.flatnonzero(present & np.isin(units, ids[counts < adapt.MIN_FACES]))
        parts = [(small, self._rows_scores(faces, small, adapted=False))] if small.size else []
        parts += [(rows, self._rows_scores(faces, rows, adapted=True))
                  for rows in (self._in_order(batch, present & (units == u)) for u in ids[counts >= adapt.MIN_FACES])]
        return self._output(batch, present, parts)

    @staticmethod
    def _in_order(batch: dict, mask: np.ndarray) -> np.ndarray:
        """The rows of `mask` by video id, then frame: a shuffle delivers a group's rows in any order, and the
        statistics' sample and chunks are drawn by position, so the same group must get the same positions."""
        rows = np.flatnonzero(mask)
        keys = [np.asarray(batch[k])[rows] for k in (schema.FRAME_INDEX, schema.VIDEO_ID) if k in batch]
        return rows[np.lexsort([k.astype(str) if k.dtype == object else k for k in keys])] if keys else rows

    def _rows_scores(self, faces, rows: np.ndarray, adapted: bool) -> dict[str, np.ndarray]:
        """model key -> scores of these rows (faces all present); `adapted`: with normalisation statistics
        partly theirs (adapt.video_statistics over a sample of them). Faces are decoded chunk by chunk: a video
        may not fit decoded."""
        from fer_ray.infer import adapt

        def inputs(chunk: np.ndarray) -> dict:
            return self._inputs(decode_faces([faces[i] for i in chunk])[0])

        def score_all() -> dict[str, np.ndarray]:
            parts = [self._entry_scores(inputs(chunk))
                     for chunk in np.array_split(rows, max(1, -(-len(rows) // adapt.CHUNK)))]
            return {e.key: np.concatenate([p[e.key] for p in parts]) for e in self.entries}

        if not adapted:
            return score_all()
        sample = (inputs(rows[chunk]) for chunk in adapt.chunk_rows(len(rows), sample=adapt.SAMPLE))
        # the statistics are measured on the views scoring runs (mirrored and cropped too, with the flip / crop test)
        with adapt.video_statistics(list(self.models.values()), sample, self._entry_scores, self.adapt_bn):
            return score_all()
