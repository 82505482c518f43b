"""The training loop: one `Trainer` (model, optimiser, loss, AMP) used by Ray Train workers and local runs.

- `train_func(config)` runs on each Ray Train worker: reads `ray.train.get_dataset_shard("train"/"val")`,
  resumes from `ray.train.get_checkpoint()` (model, optimiser, scheduler, epoch, history), and after every
  epoch reports scalar metrics on all ranks (Train V2: every rank calls `report`, it is a barrier) with a
  checkpoint from rank 0 only. Train/val shards of frame models stream (`iter_batches` + our decode), or with
  `cache_rows` are read into memory once and reshuffled each epoch (small face sets: no per-epoch stream start);
  clip/sequence models materialise their share of whole videos per worker (see data.TemporalSamples), each
  worker taking the videos `data.video_of_worker` gives it (the datasets are not split for them).
- `train_local(spec, train_rows, val_rows)` runs the same epochs in-process, without Ray (tests, benchmarks).
- Both run `fit`, the one epoch loop, over a batch source (`temporal_batches`, `memory_batches`,
  `streamed_batches`: epoch -> train and validation batches).

The forward/backward run under bf16 autocast with channels_last frame inputs where the spec's `precision`
says so (auto: on CUDA only), else in float32; each epoch row records which.
Validation metrics over the task's classes: macro-F1 (every class, zero when absent: the ABAW convention),
accuracy and the ABAW2 score 0.67 * F1 + 0.33 * accuracy; with several workers the confusion matrices are
summed across ranks first.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable

import numpy as np
import torch
import torch.nn as nn

from fer_ray.safe_load import as_plain, load_data
from fer_ray.train import data, sampler
from fer_ray.train.average import WeightAverage
from fer_ray.train.config import ModelSpec, spec_from_dict
from fer_ray.train.losses import build_loss, class_weights

__all__ = ["Trainer", "autocast_device", "confusion_metrics", "fit", "train_func", "train_local", "training_prior",
           "STATE_FILE"]

log = logging.getLogger(__name__)
STATE_FILE = "state.pt"
SCORE = "val_macro_f1"


def confusion_metrics(cm: np.ndarray) -> dict[str, float]:
    """macro-F1 over all K classes (0 for a class with 2TP+FP+FN = 0), accuracy, ABAW2 score."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    den = cm.sum(0) + cm.sum(1)
    f1 = np.divide(2 * tp, den, out=np.zeros_like(tp), where=den > 0)
    total = cm.sum()
    acc = float(tp.sum() / total) if total else 0.0
    macro = float(f1.mean()) if len(f1) else 0.0
    return {"val_macro_f1": macro, "val_accuracy": acc, "val_abaw2": 0.67 * macro + 0.33 * acc,
            "val_frames": int(total)}


def _all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return tensor
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MIN)
    return tensor


def oversample_factors(spec: ModelSpec, class_counts) -> np.ndarray | None:
    """Per-class repeat factors of the spec's oversampling, None when it is off or counts are unknown."""
    if not spec.oversample.enabled or class_counts is None:
        return None
    return sampler.repeat_factors(class_counts, spec.oversample.threshold)


def training_prior(spec: ModelSpec, class_counts) -> list[float]:
    """The class shares the loss saw in training: counts x oversampling factors x class weights, normalised.

    A model's softmax carries this prior; annotation's prior correction (fer_ray.infer.logits) divides it
    out, for videos whose classes are distributed otherwise (posed photo sets vs mostly-Neutral videos)."""
    counts = np.asarray(class_counts, dtype=np.float64)
    factors = oversample_factors(spec, counts)
    drawn = counts * (1.0 if factors is None else factors)
    weights = class_weights(spec.loss, counts, factors)
    if weights is not None:
        drawn = drawn * np.asarray(weights, dtype=np.float64)
    total = drawn.sum()
    return (drawn / total).tolist() if total > 0 else drawn.tolist()


def cpu_has_native_bf16() -> bool:
    """True on CPUs whose oneDNN kernels do bfloat16 in hardware (AVX512-BF16, AMX); elsewhere it is emulated
    and slower than float32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without oneDNN
        return False


def autocast_device(device: torch.device, precision: str) -> str | None:
    """The device type to run bf16 autocast on ("cuda", "cpu"), or None for float32 (auto on a CPU)."""
    if precision == "bfloat16":
        if device.type == "cpu" and not cpu_has_native_bf16():
            log.warning("precision bfloat16 on a CPU without native bf16: emulated, slower than float32")
        return device.type
    return "cuda" if precision == "auto" and device.type == "cuda" else None


class Trainer:
    """Model + optimiser + loss + schedule for one ModelSpec; framework-free (Ray wraps it, tests call it)."""

    def __init__(self, spec: ModelSpec, device: torch.device | str = "cpu", class_counts: list | None = None,
                 seed: int = 0, wrap: Callable[[nn.Module], nn.Module] | None = None):
        # timm and torchvision are the worker's imports, not the Tune trial's or Train controller's (train_func)
        from fer_ray.models import create_model, load_pretrained
        from fer_ray.train import augment

        torch.manual_seed(seed)
        self.spec, self.seed = spec, seed
        self.device = torch.device(device)
        self.amp = autocast_device(self.device, spec.precision)  # None: float32
        self.precision = "bfloat16" if self.amp else "float32"
        model = create_model(spec.arch, spec.num_classes, **spec.model_kwargs)
        if spec.pretrained:
            load_pretrained(model, spec.pretrained)
        model = model.to(self.device)
        if self.amp and spec.kind == "frame":
            model = model.to(memory_format=torch.channels_last)
        self.model = wrap(model) if wrap is not None else model
        self.average = WeightAverage(model, spec.ema) if spec.ema else None
        params = [p for p in self.model.parameters() if p.requires_grad]
        if spec.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum,
                                             weight_decay=spec.weight_decay, nesterov=True)
        else:
            self.optimizer = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
        self.scheduler = None
        if spec.scheduler == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=max(1, spec.epochs))
        elif spec.scheduler == "multistep":
            self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, spec.milestones, spec.lr_gamma)
        self.factors = oversample_factors(spec, class_counts)
        self.loss_fn = build_loss(spec.loss, class_counts, self.factors).to(self.device)
        if spec.loss.class_weights == "balanced":
            log.info("%s: balanced class weights %s from class counts %s", spec.name,
                      np.round(self.loss_fn.weight.tolist(), 3).tolist(), list(class_counts))
        self.train_tf = augment.train_transform(spec.input_size, spec.augment, arch=spec.arch)
        self.eval_tf = augment.eval_transform(spec.input_size, arch=spec.arch)

    @property
    def core(self) -> nn.Module:
        """The model without a DistributedDataParallel wrapper."""
        return getattr(self.model, "module", self.model)

    @property
    def deployed(self) -> nn.Module:
        """The weights a run validates and exports: the weight average when the spec keeps one, else the model."""
        return self.core if self.average is None else self.average.module

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.amp and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, x: torch.Tensor, model: nn.Module | None = None) -> torch.Tensor:
        """`model`'s (default: the trained one's) outputs under the spec's precision: bf16 autocast when amp."""
        model = self.model if model is None else model
        with torch.autocast(self.amp or self.device.type, dtype=torch.bfloat16, enabled=bool(self.amp)):
            return model(x)

    def train_epoch(self, batches: Iterable, max_steps: int | None = None, sync: bool = False) -> dict:
        """One pass (at most max_steps); with `sync` every rank stops as soon as one runs out of batches."""
        self.model.train()
        total_loss, steps, images = 0.0, 0, 0
        start = time.perf_counter()
        iterator = iter(batches)
        while max_steps is None or steps < max_steps:
            batch = next(iterator, None)
            if sync:
                flag = torch.tensor([0 if batch is None else 1], device=self.device)
                if int(_all_reduce(flag, "min").item()) == 0:
                    break
            elif batch is None:
                break
            x, y = batch
            x, y = self._inputs(x), y.to(self.device)
            logits = self.forward(x)
            loss = self.loss_fn(logits.float(), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.average is not None:
                self.average.update(self.core)
            total_loss += float(loss.detach())
            steps += 1
            images += int(x.shape[0] * (x.shape[1] if x.ndim == 5 else 1))
        seconds = time.perf_counter() - start
        if self.scheduler is not None:
            self.scheduler.step()
        return {"train_loss": total_loss / max(1, steps), "train_steps": steps, "train_images": images,
                "train_images_per_s": images / seconds if seconds > 0 else 0.0}

    @torch.inference_mode()
    def evaluate(self, batches: Iterable, max_steps: int | None = None) -> tuple[dict, np.ndarray]:
        """Validation metrics (summed over ranks when distributed) and the confusion matrix."""
        model = self.deployed.eval()  # no DDP forward: ranks may see different numbers of batches
        k = self.spec.num_classes
        cm = torch.zeros(k * k, dtype=torch.float64)
        loss_sum = torch.zeros(2, dtype=torch.float64)
        for step, (x, y) in enumerate(batches):
            if max_steps is not None and step >= max_steps:
                break
            x, y = self._inputs(x), y.to(self.device)
            logits = self.forward(x, model).float()
            loss_sum += torch.tensor([float(self.loss_fn(logits, y)) * y.numel(), y.numel()], dtype=torch.float64)
            pred = logits.argmax(-1).reshape(-1).cpu()
            true = y.reshape(-1).cpu()
            keep = true >= 0
            cm += torch.bincount(true[keep] * k + pred[keep], minlength=k * k).double()
        both = _all_reduce(torch.cat([cm, loss_sum]).to(self.device)).cpu()
        cm_np = both[: k * k].numpy().reshape(k, k).astype(np.int64)
        metrics = confusion_metrics(cm_np)
        metrics["val_loss"] = float(both[-2] / both[-1]) if float(both[-1]) > 0 else float("nan")
        return metrics, cm_np

    def state(self, epoch: int, history: list, best: dict | None) -> dict:
        """Everything a resume needs; "model" is the trained weights, "average" their average (or None)."""
        return {"model": self.core.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "average": self.average.state_dict() if self.average is not None else None,
                "epoch": epoch, "history": history, "best": best}

    def load_state(self, state: dict) -> None:
        self.core.load_state_dict(state["model"])
        if self.average is not None:
            if state.get("average") is None:
                raise ValueError(f"{self.spec.name}: the checkpoint has no weight average to resume (ema is on)")
            self.average.load_state_dict(state["average"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])


def _frame_train_batches(trainer: Trainer, row_batches: Iterable[dict], epoch: int, rank: int = 0):
    return data.frame_batches(row_batches, trainer.spec.task, trainer.train_tf, trainer.spec.batch_size,
                              trainer.factors, sampler.epoch_rng(trainer.seed, epoch, rank), drop_last=False,
                              source_weights=trainer.spec.source_weights, ignore=trainer.spec.ignored_labels,
                              size=trainer.spec.input_size)


def _epoch_row(epoch: int, stats: dict, val: dict, start: float, end: float, lr: float) -> dict:
    return {"epoch": epoch, **stats, **val, "lr": lr, "epoch_start": start, "epoch_end": end,
            "epoch_seconds": end - start}


def _better(row: dict, best: dict | None) -> bool:
    score = row.get(SCORE, float("nan"))
    return best is None or (not math.isnan(score) and score > best.get(SCORE, float("-inf")))


# ------------------------------------------------------------------------------------------ the epoch loop

# epoch -> (train batches, validation batches) of (inputs, targets) tensors
Batches = Callable[[int], tuple[Iterable, Iterable]]
OnEpoch = Callable[[int, dict, list, dict], None]  # (epoch, row, history, best) after each epoch


def epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1)[0])


def fit(trainer: Trainer, batches: Batches, *, start_epoch: int = 0, history: list | None = None,
        best: dict | None = None, sync: bool = False, tags: dict | None = None,
        on_epoch: OnEpoch | None = None) -> list[dict]:
    """The one epoch loop (Ray Train workers and local runs): train, validate, keep the best row by val
    macro-F1, then `on_epoch` (report, checkpoint). `sync`: every rank stops an epoch when one runs out of
    batches. `tags` are added to every row. Returns the history (rows with their confusion matrices)."""
    spec = trainer.spec
    history = list(history or [])
    for epoch in range(start_epoch, spec.epochs):
        start = time.time()
        # Augmentation and dropout draw from torch's global generator: seeded per epoch, an epoch draws the
        # same whether the run started at epoch 0 or resumed from a checkpoint in a new process.
        torch.manual_seed(epoch_seed(trainer.seed, epoch))
        lr = trainer.optimizer.param_groups[0]["lr"]
        train_batches, val_batches = batches(epoch)
        stats = trainer.train_epoch(train_batches, spec.max_steps_per_epoch, sync=sync)
        val, cm = trainer.evaluate(val_batches, spec.max_val_steps)
        row = {**_epoch_row(epoch, stats, val, start, time.time(), lr), "precision": trainer.precision,
               **(tags or {})}
        if _better(row, best):
            best = dict(row)
        history.append({**row, "confusion": cm.tolist()})
        if on_epoch is not None:
            on_epoch(epoch, row, history, best)
    return history


def temporal_batches(trainer: Trainer, train_rows: dict, val_rows: dict) -> Batches:
    """Clip/sequence samples of whole videos (rows of this worker's videos), redrawn every epoch."""
    spec = trainer.spec
    train_set, val_set = (data.TemporalSamples(rows, spec.task, spec.kind, spec.clip_length, spec.input_size)
                          for rows in (train_rows, val_rows))

    def batches(epoch: int):
        return (train_set.batches(trainer.train_tf, spec.batch_size, trainer.factors, epoch, trainer.seed),
                val_set.batches(trainer.eval_tf, spec.batch_size, shuffle=False))
    return batches


def memory_batches(trainer: Trainer, train_rows: dict, val_rows: dict, rank: int = 0) -> Batches:
    """Frame rows held in memory, reshuffled every epoch."""
    spec = trainer.spec

    def batches(epoch: int):
        chunks = data.iter_row_chunks(train_rows, spec.batch_size, sampler.epoch_rng(trainer.seed, epoch, 99))
        return (_frame_train_batches(trainer, chunks, epoch, rank),
                data.frame_batches(data.iter_row_chunks(val_rows, spec.batch_size), spec.task, trainer.eval_tf,
                                   spec.batch_size, ignore=spec.ignored_labels, size=spec.input_size))
    return batches


def streamed_batches(trainer: Trainer, train_shard, val_shard, rank: int) -> Batches:
    """Frame rows streamed from Ray Train's dataset shards every epoch (a shuffle buffer mixes them)."""
    spec = trainer.spec

    def batches(epoch: int):
        rows = train_shard.iter_batches(batch_size=spec.batch_size, batch_format="numpy",
                                        local_shuffle_buffer_size=max(spec.batch_size * 8, 1024),
                                        prefetch_batches=1)
        streamed = val_shard.iter_batches(batch_size=spec.batch_size, batch_format="numpy", prefetch_batches=1)
        return (_frame_train_batches(trainer, rows, epoch, rank),
                data.frame_batches(streamed, spec.task, trainer.eval_tf, spec.batch_size,
                                   ignore=spec.ignored_labels, size=spec.input_size))
    return batches


# ------------------------------------------------------------------------------------------ Ray Train


def _materialise(shard, columns: list[str], rank: int, world: int) -> dict:
    """All rows of a dataset shard belonging to this worker's videos (rank 0 of 1: every row), as column lists."""
    from fer_ray import schema

    out: dict[str, list] = {c: [] for c in columns}
    for batch in shard.iter_batches(batch_size=1024, batch_format="numpy"):
        mine = [i for i, v in enumerate(batch[schema.VIDEO_ID]) if data.video_of_worker(v, rank, world)]
        for c in columns:
            out[c].extend(batch[c][i] for i in mine)
    return data.in_row_order(out)


def _shard_batches(trainer: Trainer, rank: int, world: int) -> Batches:
    """The batches of this worker's dataset shards ("train", "val", as Ray Train hands them)."""
    import ray.train

    train_shard, val_shard = ray.train.get_dataset_shard("train"), ray.train.get_dataset_shard("val")
    spec, columns = trainer.spec, data.TRAIN_COLUMNS
    if spec.kind in ("clip", "sequence"):  # the datasets are not split: each worker takes its whole videos
        return temporal_batches(trainer, _materialise(train_shard, columns, rank, world),
                                _materialise(val_shard, columns, rank, world))
    if spec.cache_rows:  # frame shards are already split per worker: keep every row
        return memory_batches(trainer, _materialise(train_shard, columns, 0, 1),
                              _materialise(val_shard, columns, 0, 1), rank)
    return streamed_batches(trainer, train_shard, val_shard, rank)


def _resume(trainer: Trainer, device) -> tuple[int, list, dict | None]:
    """(first epoch, history, best) from Ray Train's latest checkpoint, or a fresh start."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0, [], None
    with checkpoint.as_directory() as directory:
        state = load_data(os.path.join(directory, STATE_FILE), f"{checkpoint.path}/{STATE_FILE}", device)
    trainer.load_state(state)
    return state["epoch"] + 1, state["history"], state["best"]


def _reporter(trainer: Trainer, rank: int) -> OnEpoch:
    """Every rank reports its epoch row (Train V2: a barrier); rank 0 with the checkpoint."""
    import ray.train

    def report(epoch: int, row: dict, history: list, best: dict | None) -> None:
        if rank != 0:
            ray.train.report(row)
            return
        with tempfile.TemporaryDirectory() as directory:
            # plain data only, so resuming loads it with weights_only=True
            torch.save(as_plain(trainer.state(epoch, history, best)), os.path.join(directory, STATE_FILE))
            ray.train.report(row, checkpoint=ray.train.Checkpoint.from_directory(directory),
                             checkpoint_dir_name=f"epoch-{epoch:04d}")
    return report


def train_func(config: dict) -> None:
    """Ray Train worker loop. config: spec (asdict ModelSpec), class_counts, seed."""
    import ray.train
    import ray.train.torch

    spec = spec_from_dict(config["spec"])
    torch.set_num_threads(max(1, int(round(spec.cpus_per_worker))))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    trainer = Trainer(spec, device, config.get("class_counts"), seed=int(config.get("seed", 0)) + rank,
                      wrap=ray.train.torch.prepare_model if world > 1 else None)
    start_epoch, history, best = _resume(trainer, device)
    if start_epoch >= spec.epochs:
        return
    fit(trainer, _shard_batches(trainer, rank, world), start_epoch=start_epoch, history=history, best=best,
        sync=world > 1, tags={"model": spec.name, "rank_count": world}, on_epoch=_reporter(trainer, rank))


# ------------------------------------------------------------------------------------------ local


def _as_columns(rows) -> dict:
    if hasattr(rows, "to_pydict"):  # pyarrow.Table
        rows = rows.to_pydict()
    return {k: (np.asarray(v) if k in ("label", "frame_index") else list(v)) for k, v in rows.items()}


def train_local(spec: ModelSpec | dict, train_rows, val_rows, *, seed: int = 0, device: str | None = None,
                class_counts: list | None = None,
                on_epoch: Callable[[dict, Trainer], None] | None = None) -> tuple[nn.Module, list[dict]]:
    """Train in this process without Ray; rows are FACES_SCHEMA columns (pyarrow Table or dict of lists).

    Returns (model in eval mode, per-epoch history). class_counts default to the train rows' task counts.
    """
    if isinstance(spec, dict):
        spec = spec_from_dict(spec)
    elif spec.kind is None:
        spec.validate()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    train_rows, val_rows = _as_columns(train_rows), _as_columns(val_rows)
    if class_counts is None:
        from fer_ray import labels

        _, task_y = data.usable_rows(train_rows, spec.task, spec.ignored_labels)
        class_counts = np.bincount(task_y, minlength=len(labels.TASK_CLASSES[spec.task])).tolist()
    trainer = Trainer(spec, device, class_counts, seed=seed + spec.seed_offset)
    make = temporal_batches if spec.kind in ("clip", "sequence") else memory_batches
    history = fit(trainer, make(trainer, train_rows, val_rows),
                  on_epoch=None if on_epoch is None else lambda epoch, row, history, best: on_epoch(row, trainer))
    # contiguous again, as a model built from the checkpoint is: the same kernels, the same outputs
    return trainer.deployed.to(memory_format=torch.contiguous_format).eval(), history
