"""LVIS repeat factors (CFC-SP oversampling) on a known label histogram."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fer_ray.train import sampler


def test_repeat_factors_known_histogram():
    # 1000 frames: f = 0.6, 0.3, 0.075, 0.015, 0.01, 0 (absent class)
    counts = [600, 300, 75, 15, 10, 0]
    r = sampler.repeat_factors(counts, threshold=0.15)
    expected = [1.0, 1.0, math.sqrt(0.15 / 0.075), math.sqrt(0.15 / 0.015), math.sqrt(0.15 / 0.01), 1.0]
    np.testing.assert_allclose(r, expected)
    assert r[2] == pytest.approx(1.414214, abs=1e-6) and r[3] == pytest.approx(3.162278, abs=1e-6)
    # exactly at the threshold: factor 1
    assert sampler.repeat_factors([15, 85], 0.15)[0] == pytest.approx(1.0)


def test_stochastic_rounding_mean_and_determinism():
    labels = np.array([0] * 600 + [1] * 300 + [2] * 75 + [3] * 15 + [4] * 10)
    r = sampler.repeat_factors(np.bincount(labels), 0.15)
    counts = [np.bincount(labels[sampler.epoch_indices(labels, r, epoch=e, seed=1)], minlength=5) for e in range(200)]
    mean = np.mean(counts, axis=0)
    np.testing.assert_allclose(mean, np.bincount(labels) * r, rtol=0.03)
    a = sampler.epoch_indices(labels, r, epoch=3, seed=7)
    b = sampler.epoch_indices(labels, r, epoch=3, seed=7)
    c = sampler.epoch_indices(labels, r, epoch=4, seed=7)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # common classes are never dropped: each frame at least once per epoch
    assert set(np.unique(a)) == set(range(len(labels)))
    per = sampler.repeat_counts(np.array([1.0, 2.0, 3.162278]), np.random.default_rng(0))
    assert per[0] == 1 and per[1] == 2 and per[2] in (3, 4)


def test_sequence_factor_is_max_over_its_frames():
    r = np.array([1.0, 2.0, 4.0])
    seq = np.array([[0, 0, -1], [0, 2, 1], [-1, -1, -1]])
    np.testing.assert_allclose(sampler.sample_factors(seq, r), [1.0, 4.0, 1.0])


def test_sampler_object():
    labels = np.array([0, 0, 0, 1])
    s = sampler.RepeatFactorSampler(labels, sampler.repeat_factors(np.bincount(labels), 0.5), seed=0)
    s.set_epoch(2)
    assert len(list(s)) == len(s) and sorted(set(s)) == [0, 1, 2, 3]
