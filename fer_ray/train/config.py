"""Typed training config: one `TrainConfig` with a list of `ModelSpec`s, loaded with `fer_ray.config.load`.

Example (configs/smoke.yaml):

    output: s3://bucket/models/smoke
    faces: [s3://bucket/preprocess/ckplus]     # preprocess output URI(s): <uri>/faces/ shards
    max_concurrent_trials: 2
    models:
      - {name: coarse_swin, arch: swin_tiny_smoke, task: coarse, epochs: 2, max_steps_per_epoch: 4}

`validate()` resolves defaults that depend on the model registry (input size, kind, clip length), so the
config saved beside a checkpoint is the fully resolved one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from fer_ray import labels, storage
from fer_ray.config import ConfigError

TASKS = ("expr", "coarse", "negative")


@dataclass
class LossConfig:
    name: Literal["ce", "focal"] = "ce"
    label_smoothing: float = 0.0
    alpha: float | None = None          # focal: scalar weight (PRL: 0.9); None = 1
    gamma: float = 2.0                  # focal: focusing parameter (PRL: 2)
    # one per task class, or "balanced": n / (K * n_c) from the training split's class counts after
    # oversampling, so every class carries the same share of the loss (fer_ray.train.losses.balanced_weights)
    class_weights: list[float] | Literal["balanced"] | None = None

    def validate(self) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"loss.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.gamma < 0:
            raise ConfigError(f"loss.gamma must be >= 0, got {self.gamma}")


@dataclass
class OversampleConfig:
    """LVIS class-balanced repeat factors (CFC-SP): r_c = max(1, sqrt(threshold / f_c))."""

    enabled: bool = False
    threshold: float = 0.15


@dataclass
class AugmentConfig:
    """CFC-SP augmentations; set a probability / magnitude to 0 (or enabled: false) to switch one off."""

    enabled: bool = True
    rotation: float = 6.0                 # degrees
    crop_scale: list[float] = field(default_factory=lambda: [0.8, 1.0])  # RandomResizedCrop area range
    flip: float = 0.5                     # horizontal flip probability
    grayscale: float = 0.2
    color_jitter: float = 0.4             # brightness/contrast/saturation strength
    color_jitter_p: float = 0.8
    blur: float = 0.5                     # Gaussian blur probability
    erasing: float = 0.25                 # random erasing probability

    def validate(self) -> None:
        if len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ConfigError(f"augment.crop_scale must be [lo, hi] with 0 < lo <= hi <= 1, got {self.crop_scale}")
        for name in ("flip", "grayscale", "color_jitter_p", "blur", "erasing"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"augment.{name} is a probability, got {value}")


Precision = Literal["auto", "float32", "bfloat16"]  # a model's training arithmetic (ModelSpec.precision)
PRECISIONS = get_args(Precision)  # the command lines' --precision choices


@dataclass
class ModelSpec:
    """One model to train. `name` is the run name (unique, used in output paths); `arch` a registry name."""

    name: str
    arch: str
    task: Literal["expr", "coarse", "negative"] = "expr"
    input_size: int | None = None         # default: the registry's input size for `arch`
    epochs: int = 1
    max_steps_per_epoch: int | None = None
    max_val_steps: int | None = None
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = 0.9                 # sgd only
    scheduler: Literal["cosine", "multistep", "none"] = "cosine"  # stepped once per epoch
    milestones: list[int] = field(default_factory=lambda: [2, 4, 8])  # multistep epochs (Mao: 2, 4, 8)
    lr_gamma: float = 0.1                 # multistep factor
    loss: LossConfig = field(default_factory=LossConfig)
    oversample: OversampleConfig = field(default_factory=OversampleConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    pretrained: str | None = None         # timm state dict or fer-ray checkpoint (local or s3)
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    num_workers: int = 1                  # Ray Train workers for this model
    cpus_per_worker: float = 1.0
    use_gpu: bool | None = None           # None: use a GPU when the cluster has one
    # Forward/backward arithmetic. auto: bfloat16 autocast (with channels_last frame inputs) on a CUDA GPU,
    # float32 on a CPU. bfloat16 on a CPU that does it natively (AVX512-BF16 / AMX) trains the 48-px FerCNN
    # 3x as fast on the 2-core AMD EPYC and equals float32 on fer2013 and (over two seeds) on the dev videos
    # (benchmarks/README.md); opt in (configs/accuracy_fer.yaml does), so a config's arithmetic stays the same
    # on every CPU. Weights, optimiser state and the loss stay float32.
    precision: Precision = "auto"
    clip_length: int | None = None        # frames per input; default from the registry (1, 9 or 64)
    kind: str | None = None               # resolved from the registry: frame | clip | sequence
    after: list[str] = field(default_factory=list)  # models that must finish first (e.g. a frozen backbone's)
    # Fine-tune: start from the trained weights of this other model of the config (a pretraining stage, e.g.
    # an 8-class backbone on every face), all but a classifier of another size; trained after it.
    init_from: str | None = None
    # Added to the config's seed for this model (initialisation, augmentation, sampling): ensemble members
    # fine-tuned from one checkpoint on the same rows are otherwise the same model. A run's --seed still
    # moves every model.
    seed_offset: int = 0
    # Added to the config's seed for this model's train/validation split (which subjects, and which images
    # without one, are held out for validation), so ensemble members can train on different rows. Models with
    # the same offset share one split. At val_fraction 0.1 two splits still share 89 % of their training rows,
    # and the accuracy recipe's ensembles gained 0.001-0.004 from it (benchmarks/README.md).
    split_seed_offset: int = 0
    # Frame models: read this worker's train/val rows into memory once instead of streaming them from Ray
    # Data every epoch. For small face sets (thousands of ~5 KB crops), where the per-epoch stream start-up
    # costs more than the epoch itself; temporal models always hold their rows in memory.
    cache_rows: bool = False
    # Training rows drawn this many times as often as now, per source: an image set's folder name (its rows'
    # video_id "<set>/<path>") or a video id; e.g. {fer2013: 1, ckplus48: 2, taiwanese_dev: 4}. Multiplies
    # the class oversampling's factor; frame models only. Unnamed sources: 1.
    source_weights: dict[str, float] = field(default_factory=dict)
    # ABAW classes whose rows this model never trains or validates on (e.g. [Other]: CK+'s few contempt faces
    # are its only examples in the shared image sets, too few to learn and a balanced loss would weight them
    # ~30x). Frame models only.
    ignore_classes: list[str] = field(default_factory=list)
    # Which epoch becomes checkpoint.pt: the best validation macro-F1, or the last (a fixed schedule, for
    # validation splits too small to rank epochs: a few subjects pick a noisy early epoch).
    keep: Literal["best", "last"] = "best"
    # Per-step decay of an exponential moving average of the weights (fer_ray.train.average), which is then
    # what validation scores and the checkpoint holds; 0 off. 0.999 with its warm-up averages about the last
    # tenth of a run of a few thousand steps (benchmarks/README.md, "Weight average").
    ema: float = 0.0

    @property
    def ignored_labels(self) -> list[int]:
        return [labels.class_index(name) for name in self.ignore_classes]

    @property
    def num_classes(self) -> int:
        return len(labels.TASK_CLASSES[self.task])

    def validate(self) -> None:
        from fer_ray import models

        known = set(models.list_models())
        if self.arch not in known and not _is_timm_model(self.arch):
            raise ConfigError(f"model {self.name!r}: unknown arch {self.arch!r}; valid: {', '.join(sorted(known))} "
                              "(or any timm model name)")
        if not self.name or any(c in self.name for c in "/\\ ") or self.name.startswith(("_", ".")):
            raise ConfigError(f"model name {self.name!r} must be a non-empty path-safe word")
        default_size = int(models.input_size(self.arch))
        if self.input_size is None:
            self.input_size = default_size
        if models.model_info(self.arch).sized and self.input_size != default_size:
            # IResNet's embedding layer and Swin's position tables are built for one side: build this one
            self.model_kwargs.setdefault("img_size", int(self.input_size))
        if "img_size" in self.model_kwargs and int(self.model_kwargs["img_size"]) != self.input_size:
            raise ConfigError(f"model {self.name!r}: model_kwargs.img_size {self.model_kwargs['img_size']} differs "
                              f"from input_size {self.input_size}; set one of them")
        if self.kind is None:
            self.kind = models.model_kind(self.arch)
        if self.clip_length is None:
            self.clip_length = int(models.clip_length(self.arch)) if hasattr(models, "clip_length") else (
                {"frame": 1, "clip": 9, "sequence": 64}[self.kind])
        for name in ("epochs", "batch_size", "num_workers", "input_size", "clip_length"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model {self.name!r}: {name} must be >= 1")
        if not 0.0 <= self.ema < 1.0:
            raise ConfigError(f"model {self.name!r}: ema is a decay in [0, 1) (0 off), got {self.ema}")
        if self.cpus_per_worker <= 0:
            raise ConfigError(f"model {self.name!r}: cpus_per_worker must be > 0")
        if any(not 0 < float(w) <= 100 for w in self.source_weights.values()):
            raise ConfigError(f"model {self.name!r}: source_weights must be in (0, 100], got {self.source_weights}")
        for option in ("source_weights", "ignore_classes"):
            if getattr(self, option) and self.kind != "frame":
                raise ConfigError(f"model {self.name!r}: {option} apply to frame models, not {self.kind} ones")
        try:
            ignored = self.ignored_labels
        except labels.LabelFormatError as exc:
            raise ConfigError(f"model {self.name!r}: ignore_classes: {exc}") from None
        if any(i < 0 for i in ignored):
            raise ConfigError(f"model {self.name!r}: ignore_classes names classes: {', '.join(labels.ABAW_CLASSES)}")
        self.ignore_classes = [labels.ABAW_CLASSES[i] for i in ignored]  # canonical names in the saved config
        if isinstance(self.loss.class_weights, list) and len(self.loss.class_weights) != self.num_classes:
            raise ConfigError(f"model {self.name!r}: loss.class_weights needs {self.num_classes} values "
                              f"for task {self.task}")


def _is_timm_model(name: str) -> bool:
    import timm

    return bool(timm.list_models(name))


@dataclass
class TrainConfig:
    output: str                           # models/<name>/..., models.json go here
    faces: list[str] | str                # preprocess output URI(s) holding faces/ shards
    models: list[ModelSpec]
    max_concurrent_trials: int = 2
    val_split: Literal["subject", "video"] = "subject"
    val_fraction: float = 0.2
    seed: int = 0
    max_failures: int = 2                 # Ray Train restarts of a failed trial from its last checkpoint
    read_cpus: float = 0.1                # CPUs per Ray Data read task (small: trainers hold the rest)
    experiment_name: str = "train_all"

    def validate(self) -> None:
        if isinstance(self.faces, str):
            self.faces = [self.faces]
        if not self.faces:
            raise ConfigError("faces: at least one preprocess output URI is needed")
        self.faces = [storage.absolute(f) for f in self.faces]
        self.output = storage.absolute(self.output)
        if not self.models:
            raise ConfigError("models: the list is empty")
        names = [m.name for m in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"models: duplicate name(s) {', '.join(dupes)}; names must be unique")
        for model in self.models:
            if model.init_from is not None:
                if model.init_from not in names or model.init_from == model.name:
                    raise ConfigError(f"model {model.name!r}: init_from {model.init_from!r} is not another model "
                                      f"of this config; models: {', '.join(names)}")
                if model.pretrained:
                    raise ConfigError(f"model {model.name!r}: set pretrained or init_from, not both")
                if model.init_from not in model.after:
                    model.after.append(model.init_from)
            unknown = [a for a in model.after if a not in names]
            if unknown or model.name in model.after:
                raise ConfigError(f"model {model.name!r}: after {unknown or [model.name]} is not another model "
                                  f"of this config; models: {', '.join(names)}")
        self.stages()  # raises on a cycle
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.max_concurrent_trials < 1:
            raise ConfigError("max_concurrent_trials must be >= 1")

    def stages(self) -> list[list[str]]:
        """Model names grouped so every model comes after the models in its `after` list."""
        done: set[str] = set()
        left = [m for m in self.models]
        stages = []
        while left:
            ready = [m.name for m in left if set(m.after) <= done]
            if not ready:
                raise ConfigError(f"models: `after` has a cycle among {', '.join(m.name for m in left)}")
            stages.append(ready)
            done |= set(ready)
            left = [m for m in left if m.name not in done]
        return stages

    def spec(self, name: str) -> ModelSpec:
        for model in self.models:
            if model.name == name:
                return model
        raise KeyError(f"no model named {name!r}; models: {', '.join(m.name for m in self.models)}")


def spec_from_dict(data: dict) -> ModelSpec:
    """A resolved ModelSpec back from `dataclasses.asdict` (used inside trials and workers)."""
    from fer_ray.config import from_dict

    return from_dict(ModelSpec, data, where=f"models[{data.get('name')}]")


def spec_to_dict(spec: ModelSpec) -> dict:
    return dataclasses.asdict(spec)
