"""Class-balanced repeat-factor sampling (LVIS, Gupta et al. CVPR 2019), as CFC-SP oversamples ABAW.

    f_c = fraction of training frames whose label is c
    r_c = max(1, sqrt(t / f_c))                  t = 0.15 (CFC-SP)
    r_i = max over the classes in sample i        (a frame has one class; a sequence takes its max)

Each epoch a sample is seen floor(r_i) times plus once more with probability frac(r_i) (stochastic rounding),
drawn from a generator seeded by (seed, epoch[, worker]) so an epoch's draw is reproducible. Rare classes are
repeated, common ones are never dropped. Works on a whole index (`epoch_indices`, local training) and on
streamed batches (`repeat_counts`, Ray Data shards: counts per row, the rows repeated in the batch).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["class_frequencies", "repeat_factors", "sample_factors", "repeat_counts", "epoch_indices",
           "epoch_rng", "RepeatFactorSampler", "DEFAULT_THRESHOLD"]

DEFAULT_THRESHOLD = 0.15


def class_frequencies(counts: Sequence[float]) -> np.ndarray:
    """Per-class frame counts -> fractions f_c (all zero when there are no frames)."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    return counts / total if total > 0 else np.zeros_like(counts)


def repeat_factors(counts: Sequence[float], threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """r_c = max(1, sqrt(t / f_c)) from per-class counts; a class with no frames gets 1 (it is never drawn)."""
    freq = class_frequencies(counts)
    with np.errstate(divide="ignore"):
        factors = np.sqrt(np.where(freq > 0, threshold / np.where(freq > 0, freq, 1.0), 1.0))
    return np.maximum(1.0, factors)


def sample_factors(labels: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """r_i per sample: labels (N,) or (N, T) with -1 for unannotated; a sample's factor is the max over its classes."""
    labels = np.asarray(labels, dtype=np.int64)
    table = np.concatenate([np.asarray(factors, dtype=np.float64), [1.0]])  # index -1 -> 1
    per = table[np.where(labels >= 0, labels, -1)]
    return per if per.ndim == 1 else per.max(axis=tuple(range(1, per.ndim)))


def epoch_rng(seed: int, epoch: int, worker: int = 0) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(epoch), int(worker)])


def repeat_counts(factors_per_sample: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Stochastic rounding: floor(r) + Bernoulli(frac(r)) copies of each sample."""
    r = np.asarray(factors_per_sample, dtype=np.float64)
    base = np.floor(r)
    return (base + (rng.random(r.shape) < (r - base))).astype(np.int64)


def epoch_indices(labels: np.ndarray, factors: np.ndarray | None, epoch: int, seed: int = 0,
                  shuffle: bool = True, worker: int = 0) -> np.ndarray:
    """Indices of one epoch: every sample repeated by its repeat factor (None: once each), shuffled."""
    rng = epoch_rng(seed, epoch, worker)
    n = len(labels)
    if factors is None:
        index = np.arange(n)
    else:
        index = np.repeat(np.arange(n), repeat_counts(sample_factors(labels, factors), rng))
    if shuffle:
        index = rng.permutation(index)
    return index


class RepeatFactorSampler:
    """A torch-style sampler (iterable of indices, `set_epoch`) over a fixed label array."""

    def __init__(self, labels: np.ndarray, factors: np.ndarray | None, seed: int = 0, shuffle: bool = True):
        self.labels = np.asarray(labels)
        self.factors = factors
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter(epoch_indices(self.labels, self.factors, self.epoch, self.seed, self.shuffle).tolist())

    def __len__(self) -> int:
        return len(epoch_indices(self.labels, self.factors, self.epoch, self.seed, shuffle=False))
