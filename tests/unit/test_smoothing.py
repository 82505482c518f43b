"""Smooth Predicting: the O(n) cumsum version equals the direct definition, and scales linearly."""

import time

import numpy as np
import pytest

from fer_ray.infer.smoothing import smooth, smooth_reference, window_bounds


@pytest.mark.parametrize("window", [1, 2, 3, 4, 5, 7, 8, 16, 31, 32, 63, 64, 256, 257])
@pytest.mark.parametrize("n", [1, 2, 5, 40, 300])
def test_matches_reference(window, n):
    rng = np.random.default_rng(window * 1000 + n)
    scores = rng.normal(size=(n, 8)).astype(np.float32)
    fast = smooth(scores, window)
    assert fast.dtype == np.float32 and fast.shape == scores.shape
    np.testing.assert_allclose(fast, smooth_reference(scores, window), rtol=1e-5, atol=1e-5)


def test_hand_computed_small_case():
    scores = np.array([[0.0], [3.0], [6.0], [9.0]])
    # w=2 -> half=1: means over [0,1], [0,2], [1,3], [2,3] = 1.5, 3, 6, 7.5
    np.testing.assert_allclose(smooth(scores, 2), [[1.5], [6.0], [12.0], [16.5]])
    # w=3 is the same window as w=2 (half = w // 2)
    np.testing.assert_allclose(smooth(scores, 3), smooth(scores, 2))


def test_window_longer_than_video_is_whole_video_mean():
    scores = np.arange(10, dtype=np.float64).reshape(5, 2)
    out = smooth(scores, 1000)
    np.testing.assert_allclose(out, scores + scores.mean(axis=0))


def test_window_zero_returns_input_unchanged():
    scores = np.random.default_rng(0).normal(size=(20, 5))
    assert smooth(scores, 0) is scores
    assert smooth_reference(scores, 0) is scores


def test_window_one_doubles():
    scores = np.random.default_rng(1).normal(size=(6, 3))
    np.testing.assert_allclose(smooth(scores, 1), 2 * scores)


def test_one_dimensional_and_empty():
    seq = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(smooth(seq, 2), smooth_reference(seq, 2))
    assert smooth(np.zeros((0, 4)), 8).shape == (0, 4)


def test_bounds_truncate_at_ends():
    lo, hi = window_bounds(5, 4)
    assert lo.tolist() == [0, 0, 0, 1, 2] and hi.tolist() == [3, 4, 5, 5, 5]


@pytest.mark.parametrize("bad", [-1, 2.5])
def test_rejects_bad_window(bad):
    with pytest.raises(ValueError):
        smooth(np.zeros((3, 2)), bad)


def test_float64_accumulation_keeps_precision():
    # Large offset + small signal: float32 cumsum over 200k rows would lose the signal entirely.
    n = 200_000
    scores = (1000.0 + np.sin(np.arange(n) / 50.0)).astype(np.float32)[:, None]
    out = smooth(scores, 64)
    np.testing.assert_allclose(out[50_000:50_010], smooth_reference(scores[49_900:50_110], 64)[100:110],
                               rtol=1e-6)


def _best_times(n, windows, repeats=5):
    """Best of `repeats` runs per window, the windows interleaved so machine load hits them alike."""
    scores = np.random.default_rng(n).random((n, 8), dtype=np.float32)
    best = dict.fromkeys(windows, float("inf"))
    for _ in range(repeats):
        for window in windows:
            start = time.perf_counter()
            smooth(scores, window)
            best[window] = min(best[window], time.perf_counter() - start)
    return best


def test_cost_does_not_grow_with_the_window():
    # An O(n*w) version is ~16x slower at w=4096 than at w=256; the cumsum costs the same. Only a ratio of
    # interleaved runs on the same data is checked (absolute and n-scaling speed: benchmarks/annotate.py).
    best = _best_times(100_000, (256, 4096))
    assert best[4096] / best[256] < 3.0, best
