"""Per-video normalisation statistics: test-time BatchNorm adaptation (AdaBN, Li et al., 2016).

A BatchNorm layer normalises with the mean and variance it saw over its training faces. A new person, camera
or light shifts what every layer sees, so the trained statistics no longer centre the features and one
expression tends to win most frames of a video. Annotating a whole video at once, we can measure its own
statistics: run a sample of its faces through each model with the BatchNorm layers collecting them, then
score its frames with statistics that are `strength` its own and the rest the trained ones. No label is read
and no weight changes; the trained statistics come back after each video.

What it assumes: a video shows several expressions, so its own statistics are those of a person, not of an
expression. A clip of one expression only is pulled towards the others: at strength 1 the dev videos'
one-expression stretches, scored as clips of their own, lost most of their accuracy, at 0.5 little, while
on the whole videos 0.5 gave nearly all of 1's gain (benchmarks/README.md, "Per-video normalisation").

Used by the logits stage (fer_ray.infer.logits) when annotate runs with --adapt-bn S, per normalisation
group (`groups`): a video, or each face track of it with --all-faces; photos with a subject (an image set's
labels.csv `subject` column, a manifest's) are normalised per person, all that person's photos in the set
together, as a video is: a person's photo collection, like a video, shows one face in several expressions.
A group of fewer than MIN_FACES faces (a lone photo, a face seen for a moment) keeps the trained statistics:
a handful of faces is not a distribution. Models without BatchNorm layers (Swin's LayerNorm) are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from fer_ray import schema

if TYPE_CHECKING:
    import torch

__all__ = ["MIN_FACES", "SAMPLE", "CHUNK", "batchnorms", "chunk_rows", "groups", "with_groups", "video_statistics"]

MIN_FACES = 16  # fewer faces than this (a photo, a face seen for half a second) keep the trained statistics
# The statistics come from a seeded random sample of at most this many of a group's faces: a few hundred faces
# estimate a layer's mean and variance as well as a whole video's thousands, and the measuring pass then
# costs ~20 % of the scoring passes on a 2,500-frame video instead of as much again.
SAMPLE = 512
CHUNK = 256  # faces per statistics forward pass: each chunk a random sample of the group (see chunk_rows)


def groups(batch: dict, tracks: bool = True) -> np.ndarray:
    """Each face row's normalisation group, a string: a photo (a one-frame item) with a subject is grouped
    with that subject's other photos of its set (the set: its video id up to the first "/", as image sets
    name their photos); any other row with its video and, when `tracks`, its face track in that video.

    Annotate shuffles whole videos / subjects together (tracks=False, `with_groups`); the logits stage then
    splits what it gets by track. Rows without a subject or frame count (a batch of one video) are videos."""
    n = len(batch[schema.FACE]) if schema.FACE in batch else len(batch[schema.VIDEO_ID])
    videos = batch.get(schema.VIDEO_ID, [""] * n)
    subjects = batch.get(schema.SUBJECT, [None] * n)
    frames = batch.get(schema.NUM_FRAMES, [0] * n)
    track_ids = batch.get(schema.TRACK_ID, [0] * n) if tracks else [None] * n
    keys = []
    for video, subject, count, track in zip(videos, subjects, frames, track_ids):
        if subject and count == 1:  # a null frame count (NaN / None) is not 1: a video
            keys.append(f"photos:{str(video).split('/', 1)[0]}/{subject}")
        else:
            keys.append(f"video:{video}" if track is None else f"video:{video}#{int(track)}")
    return np.asarray(keys, dtype=object)


def with_groups(batch: dict) -> dict:
    """The batch with its rows' normalisation groups (NORM_GROUP), for annotate's group-by."""
    return {**batch, schema.NORM_GROUP: groups(batch, tracks=False)}


def batchnorms(model: torch.nn.Module) -> list[torch.nn.Module]:
    import torch

    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def chunk_rows(count: int, size: int | None = None, seed: int = 0, sample: int | None = None) -> list[np.ndarray]:
    """Row indices 0..count-1 (or a random `sample` of them) in chunks of at most `size` (default CHUNK) of
    near-equal sizes (never a chunk of one face, which a train-mode BatchNorm refuses), in a seeded random order.

    A train-mode forward normalises each layer with its chunk's own statistics before the next layer sees
    them; in frame order a chunk would hold one or two expressions, so each chunk is drawn from the whole
    group instead. Seeded: the same video gets the same statistics on every run."""
    size = size or CHUNK
    order = np.random.default_rng(seed).permutation(count)[:sample]
    return np.array_split(order, max(1, -(-order.size // size))) if order.size else []


@contextmanager
def video_statistics(models: Sequence[torch.nn.Module], chunks: Iterable[Any],
                     forward: Callable[[Any], object], strength: float = 1.0) -> Iterator[None]:
    """Inside the block the models' BatchNorm layers normalise with the statistics of these inputs (mixed
    with the trained ones: `strength` of the inputs', 1 - `strength` of the trained).

    `forward(chunk)` runs every model on one chunk of the group's faces as scoring will (e.g. also mirrored
    with the flip test). The layers average the chunks' statistics (momentum None); the models' own
    statistics are restored on exit, also after an error, so the next video starts from the trained models."""
    layers = [m for model in models for m in batchnorms(model)]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone(), m.momentum)
             for m in layers]
    try:
        for m in layers:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the chunks, not an exponential one
            m.train()
        if layers:
            for x in chunks:
                forward(x)
        for m, (mean, var, _, _) in zip(layers, saved):
            m.eval()
            m.running_mean.mul_(strength).add_(mean, alpha=1.0 - strength)
            m.running_var.mul_(strength).add_(var, alpha=1.0 - strength)
        yield
    finally:
        for m, (mean, var, count, momentum) in zip(layers, saved):
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(count)
            m.momentum = momentum
            m.eval()
