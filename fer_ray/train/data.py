"""Face-shard rows -> training tensors, the subject/video split, and clip/sequence sampling. No Ray here.

Rows are column batches (dict of numpy arrays, as Ray Data's `iter_batches(batch_format="numpy")` yields, or
`pyarrow.Table.to_pydict`) with the FACES_SCHEMA columns in TRAIN_COLUMNS. A row is used only when it has a
face (non-empty `face` bytes) and its label, mapped to the model's task by `labels.task_labels`, is not -1;
so a coarse model sees every annotated frame, a negative model only Anger/Disgust/Fear/Sadness frames.

Frame models stream: `frame_batches` decodes, repeats rows by their repeat factor (sampler.py), augments and
re-batches to a fixed size. Clip ("clip", Mao: T=9, label of the centre frame) and sequence ("sequence", PRL:
T=64 non-overlapping chunks, per-frame labels, edge frames repeated as padding with label -1) models need the
frames of a video in order: `TemporalSamples` builds them from rows materialised in memory (each training
worker materialises its share of videos; face crops are small, ~5 KB each).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import torch

from fer_ray import labels, schema, shards, storage
from fer_ray.train import sampler

__all__ = [
    "TRAIN_COLUMNS", "decode_face", "source_of", "source_factors", "usable_rows", "frame_batches", "iter_row_chunks",
    "in_row_order", "label_summary", "split_videos", "class_counts", "TemporalSamples", "video_of_worker",
]

TRAIN_COLUMNS = [schema.VIDEO_ID, schema.FRAME_INDEX, schema.FACE, schema.LABEL, schema.SUBJECT]
SUMMARY_COLUMNS = [schema.VIDEO_ID, schema.SUBJECT, schema.LABEL, schema.REASON]


def decode_face(data: bytes, size: int | None = None) -> torch.Tensor:
    """Encoded JPEG/PNG bytes -> uint8 (3, H, W) RGB tensor, optionally resized to (size, size).

    The pixels are inference's: the one face decoder (fer_ray.codec)."""
    # imported here, not at the top: torchvision only where faces are decoded, not in Tune's or Train's controllers
    from torchvision.transforms.v2 import functional as TF

    from fer_ray import codec

    image = codec.decode_face(data)
    if size is not None and tuple(image.shape[-2:]) != (size, size):
        image = TF.resize(image, [size, size], antialias=True)
    return image


def _has_face(faces: Sequence) -> np.ndarray:
    return np.fromiter((f is not None and len(f) > 0 for f in faces), dtype=bool, count=len(faces))


def without(y: np.ndarray, ignore: Sequence[int] = ()) -> np.ndarray:
    """ABAW labels with the `ignore`d classes (ModelSpec.ignore_classes) made unannotated."""
    y = np.asarray(y, dtype=np.int64)
    return np.where(np.isin(y, list(ignore)), labels.UNANNOTATED, y) if len(ignore) else y


def usable_rows(batch: dict, task: str, ignore: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
    """(row indices with a face and a task label, their task labels); `ignore`: ABAW classes left out."""
    faces = batch[schema.FACE]
    task_y = labels.task_labels(without(batch[schema.LABEL], ignore), task)
    keep = np.flatnonzero(_has_face(faces) & (task_y >= 0))
    return keep, task_y[keep]


def iter_row_chunks(rows: dict, batch_size: int, rng: np.random.Generator | None = None) -> Iterator[dict]:
    """Column batches of a materialised row dict, in a random order when `rng` is given (local training)."""
    n = len(rows[schema.LABEL])
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, batch_size):
        index = order[start:start + batch_size]
        yield {k: _take(v, index) for k, v in rows.items()}


def in_row_order(rows: dict) -> dict:
    """Materialised rows sorted by (video id, frame index, face bytes). Ray Data hands a shard's rows in the
    order its read tasks finish, which changes from run to run, and a seeded shuffle of rows in an arbitrary
    order is not reproducible; sorted first, the same seed gives the same epochs."""
    video, frame, face = rows[schema.VIDEO_ID], rows[schema.FRAME_INDEX], rows[schema.FACE]
    order = sorted(range(len(video)), key=lambda i: (str(video[i]), int(frame[i]), bytes(face[i] or b"")))
    index = np.asarray(order, dtype=np.int64)
    return {k: _take(v, index) for k, v in rows.items()}


def _take(values, index: np.ndarray):
    if isinstance(values, np.ndarray):
        return values[index]
    return [values[i] for i in index]


def source_of(video_id: str) -> str:
    """The image set or video a row came from: `<set>/<path>` image rows -> `<set>`, a video -> its id."""
    return str(video_id).split("/", 1)[0]


def source_factors(video_ids: Sequence[str], weights: dict[str, float]) -> np.ndarray:
    """Each row's source weight (ModelSpec.source_weights; 1 for a source it does not name)."""
    return np.asarray([float(weights.get(source_of(v), 1.0)) for v in video_ids], dtype=np.float64)


def resample(keep: np.ndarray, task_y: np.ndarray, video_ids: Sequence[str], factors: np.ndarray | None,
             source_weights: dict[str, float] | None, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(rows, labels) with each row repeated by stochastic rounding of its class's factor times its source's
    weight (`video_ids`: each kept row's video, read only with source weights), in a random order."""
    per_row = np.ones(len(keep)) if factors is None else sampler.sample_factors(task_y, factors)
    if source_weights:
        per_row = per_row * source_factors(video_ids, source_weights)
    counts = sampler.repeat_counts(per_row, rng)
    keep, task_y = np.repeat(keep, counts), np.repeat(task_y, counts)
    order = rng.permutation(len(keep))  # spread the copies over the batch
    return keep[order], task_y[order]


def frame_batches(row_batches: Iterable[dict], task: str, transform, batch_size: int,
                  factors: np.ndarray | None = None, rng: np.random.Generator | None = None,
                  drop_last: bool = False, source_weights: dict[str, float] | None = None,
                  ignore: Sequence[int] = (), size: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(images float (B,3,H,W), labels (B,)) batches of exactly `batch_size` (the last may be short): the
    faces decoded (resized to `size` where they differ; None: every face must have one size), stacked, then
    `transform` applied to the whole uint8 batch (augment.train_transform / eval_transform).

    With `factors` (per task class repeat factors) and/or `source_weights` (per source, `source_of`) each
    row is repeated by stochastic rounding of the product of its class's factor and its source's weight.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    images: list[torch.Tensor] = []
    targets: list[int] = []
    for batch in row_batches:
        keep, task_y = usable_rows(batch, task, ignore)
        if (factors is not None or source_weights) and len(keep):
            videos = [batch[schema.VIDEO_ID][i] for i in keep] if source_weights else []
            keep, task_y = resample(keep, task_y, videos, factors, source_weights, rng)
        faces = batch[schema.FACE]
        for i, y in zip(keep.tolist(), task_y.tolist()):
            images.append(decode_face(faces[i], size))
            targets.append(y)
            if len(images) == batch_size:
                yield transform(torch.stack(images)), torch.as_tensor(targets, dtype=torch.long)
                images, targets = [], []
    if images and not drop_last:
        yield transform(torch.stack(images)), torch.as_tensor(targets, dtype=torch.long)


# ------------------------------------------------------------------------------------------ split


def label_summary(faces_uris: Sequence[str]) -> pa.Table:
    """video_id, subject, label, reason of every row of every complete video (no image bytes are read)."""
    parts = [p for uri in faces_uris for p in shards.complete_parts(uri, schema.FACES_TABLE)]
    if not parts:
        raise FileNotFoundError(f"no complete face shards under {', '.join(faces_uris)} (faces/_done/ is empty)")
    table = storage.read_parquet_many(parts, columns=SUMMARY_COLUMNS)
    return table


def _video_groups(summary: pa.Table, by: str) -> dict[str, str]:
    """video_id -> group key: its subject (first non-empty), falling back to the video id itself."""
    videos = summary.column(schema.VIDEO_ID).to_pylist()
    subjects = summary.column(schema.SUBJECT).to_pylist() if schema.SUBJECT in summary.column_names else [None] * len(videos)
    groups: dict[str, str] = {}
    for video, subject in zip(videos, subjects):
        if by == "subject" and subject and (video not in groups or groups[video] == video):
            groups[video] = f"subject:{subject}"
        groups.setdefault(video, video)
    return groups


def split_videos(summary: pa.Table, by: str = "subject", val_fraction: float = 0.2,
                 seed: int = 0) -> tuple[list[str], list[str]]:
    """(train video ids, val video ids); a subject's videos all land on one side (video id if no subject).

    Groups are ordered by a seeded hash, then taken into validation until it holds `val_fraction` of the rows;
    each side keeps at least one group when there are two or more.
    """
    if by not in ("subject", "video"):
        raise ValueError(f"unknown split {by!r}; valid: subject, video")
    groups = _video_groups(summary, by)
    rows_per_video: dict[str, int] = {}
    for video in summary.column(schema.VIDEO_ID).to_pylist():
        rows_per_video[video] = rows_per_video.get(video, 0) + 1
    rows_per_group: dict[str, int] = {}
    for video, group in groups.items():
        rows_per_group[group] = rows_per_group.get(group, 0) + rows_per_video[video]
    order = sorted(rows_per_group, key=lambda g: (zlib.crc32(f"{seed}:{g}".encode()), g))
    total = sum(rows_per_group.values())
    val_groups: set[str] = set()
    taken = 0
    for group in order:
        if taken >= val_fraction * total or len(val_groups) >= len(order) - 1:
            break
        val_groups.add(group)
        taken += rows_per_group[group]
    train = sorted(v for v, g in groups.items() if g not in val_groups)
    val = sorted(v for v, g in groups.items() if g in val_groups)
    return train, val


def class_counts(summary: pa.Table, task: str, video_ids: Iterable[str] | None = None,
                 ignore: Sequence[int] = ()) -> np.ndarray:
    """Frames per task class among rows with a face (reason null), optionally only some videos; the
    `ignore`d ABAW classes are not counted."""
    table = summary
    if video_ids is not None:
        import pyarrow.compute as pc

        table = table.filter(pc.is_in(table.column(schema.VIDEO_ID), value_set=pa.array(sorted(video_ids), pa.string())))
    y = np.asarray(table.column(schema.LABEL).to_numpy(zero_copy_only=False), dtype=np.int64)
    if schema.REASON in table.column_names:
        y = y[np.asarray(table.column(schema.REASON).is_null().to_numpy(zero_copy_only=False), dtype=bool)]
    task_y = labels.task_labels(without(y, ignore), task)
    return np.bincount(task_y[task_y >= 0], minlength=len(labels.TASK_CLASSES[task])).astype(np.int64)


# ------------------------------------------------------------------------------------------ temporal


def video_of_worker(video_id: str, rank: int, world_size: int) -> bool:
    """Deterministic video -> worker assignment for temporal models (each worker sees whole videos)."""
    return world_size <= 1 or zlib.crc32(str(video_id).encode()) % world_size == rank


class TemporalSamples:
    """Clips (kind "clip") or chunks (kind "sequence") over materialised rows, frames in frame_index order.

    Only frames with a face are used (the preprocess rows of a video sorted by frame_index, faceless rows
    dropped); clip windows and chunk padding repeat the edge frame of the video.
    clip:     one sample per frame with a task label: T frames centred on it; target = its label.
    sequence: non-overlapping T-frame chunks; targets = per-frame task labels (-1: unannotated/padding);
              chunks without any labelled frame are dropped.
    """

    def __init__(self, rows: dict, task: str, kind: str, length: int, decode_size: int | None = None,
                 cache_limit: int = 20000):
        if kind not in ("clip", "sequence"):
            raise ValueError(f"TemporalSamples is for clip/sequence models, got kind {kind!r}")
        self.kind, self.length, self.decode_size = kind, int(length), decode_size
        faces = rows[schema.FACE]
        has_face = _has_face(faces)
        video = np.asarray(rows[schema.VIDEO_ID], dtype=object)[has_face]
        frame = np.asarray(rows[schema.FRAME_INDEX], dtype=np.int64)[has_face]
        self.faces = [faces[i] for i in np.flatnonzero(has_face)]
        self.labels = labels.task_labels(np.asarray(rows[schema.LABEL], dtype=np.int64)[has_face], task)
        order = np.lexsort((frame, video.astype(str)))
        windows, targets = [], []
        half = self.length // 2
        start = 0
        while start < len(order):
            end = start
            while end < len(order) and video[order[end]] == video[order[start]]:
                end += 1
            rows_of_video = order[start:end]
            n = len(rows_of_video)
            if kind == "clip":
                for j in range(n):
                    y = self.labels[rows_of_video[j]]
                    if y < 0:
                        continue
                    pos = np.clip(np.arange(j - half, j - half + self.length), 0, n - 1)
                    windows.append(rows_of_video[pos])
                    targets.append(y)
            else:
                for c in range(0, n, self.length):
                    pos = np.arange(c, c + self.length)
                    y = np.where(pos < n, self.labels[rows_of_video[np.minimum(pos, n - 1)]], -1)
                    if (y >= 0).any():
                        windows.append(rows_of_video[np.minimum(pos, n - 1)])
                        targets.append(y)
            start = end
        self.windows = np.asarray(windows, dtype=np.int64).reshape(-1, self.length)
        self.targets = np.asarray(targets, dtype=np.int64).reshape((-1,) if kind == "clip" else (-1, self.length))
        self._cache: dict[int, torch.Tensor] = {}
        self._cache_limit = cache_limit

    def __len__(self) -> int:
        return len(self.windows)

    def _frame(self, i: int) -> torch.Tensor:
        image = self._cache.get(i)
        if image is None:
            image = decode_face(self.faces[i], self.decode_size)
            if len(self._cache) < self._cache_limit:
                self._cache[i] = image
        return image

    def batches(self, transform, batch_size: int, factors: np.ndarray | None = None, epoch: int = 0,
                seed: int = 0, shuffle: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(clips float (B,T,3,H,W), targets (B,) or (B,T)): `transform` on the whole uint8 batch of clips (a
        BatchAugment draws once per clip: the same augmentation for all frames of a clip)."""
        index = sampler.epoch_indices(self.targets, factors, epoch, seed, shuffle=shuffle)
        for start in range(0, len(index), batch_size):
            chosen = index[start:start + batch_size]
            clips = torch.stack([torch.stack([self._frame(i) for i in self.windows[k]]) for k in chosen])
            yield transform(clips), torch.as_tensor(self.targets[chosen], dtype=torch.long)
