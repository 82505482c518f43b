"""Smooth Predicting (SP), eq. (1) of CFC-SP (Xue et al., ABAW3 2022).

For one video's frame sequence f_0..f_{n-1} (rows = frames sorted by frame index, columns = class scores):

    f'_i = f_i + mean(f_j for j in [i - half, i + half] ∩ [0, n - 1]),   half = w // 2

Window convention (the paper writes sum_{j=i-w/2}^{i+w/2} f_j / w and leaves odd w and the video ends open):
- half = w // 2, so an even w and the next odd w are the same window (w=256 and w=257 both average
  2*128 + 1 = 257 frames centred on i, f_i included).
- At the video ends the window is truncated and the mean is over the frames that exist, so the
  "universal" term keeps the same scale everywhere (the paper's fixed divisor w would shrink it near the ends).
- w = 0 disables SP and returns the input unchanged. w = 1 has half = 0: f'_i = 2 f_i (argmax unchanged).
- A window longer than the video averages the whole video.

`smooth` is O(n) per video via a cumulative sum accumulated in float64; `smooth_reference` is the direct
O(n*w) loop, kept for tests and benchmarks.
"""

from __future__ import annotations

import numpy as np

__all__ = ["smooth", "smooth_reference", "window_bounds"]


def _as_2d(scores: np.ndarray) -> tuple[np.ndarray, bool]:
    scores = np.asarray(scores)
    if scores.ndim == 1:
        return scores[:, None], True
    if scores.ndim != 2:
        raise ValueError(f"scores must be (frames,) or (frames, classes), got shape {scores.shape}")
    return scores, False


def _check_window(window: int) -> int:
    if int(window) != window or window < 0:
        raise ValueError(f"window must be a non-negative integer, got {window!r}")
    return int(window) // 2


def window_bounds(n: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Half-open [lo, hi) row range averaged for each of n frames."""
    half = _check_window(window)
    rows = np.arange(n)
    return np.maximum(rows - half, 0), np.minimum(rows + half + 1, n)


def smooth(scores: np.ndarray, window: int) -> np.ndarray:
    """Eq. (1) over one video in O(n): scores plus the truncated-window mean. Float dtype is kept."""
    _check_window(window)
    if window == 0:
        return scores
    values, flat = _as_2d(scores)
    n = values.shape[0]
    if n == 0:
        return scores
    # Prefix sums with a leading zero row: sum(values[lo:hi]) = csum[hi] - csum[lo].
    csum = np.zeros((n + 1, values.shape[1]), dtype=np.float64)
    np.cumsum(values, axis=0, dtype=np.float64, out=csum[1:])
    lo, hi = window_bounds(n, window)
    mean = (csum[hi] - csum[lo]) / (hi - lo)[:, None]
    out = values.astype(np.float64) + mean
    out_dtype = values.dtype if np.issubdtype(values.dtype, np.floating) else np.float64
    out = out.astype(out_dtype, copy=False)
    return out[:, 0] if flat else out


def smooth_reference(scores: np.ndarray, window: int) -> np.ndarray:
    """The same as `smooth`, by the definition: one explicit window mean per frame (O(n*w))."""
    _check_window(window)
    if window == 0:
        return scores
    values, flat = _as_2d(scores)
    n = values.shape[0]
    lo, hi = window_bounds(n, window)
    out = np.empty(values.shape, dtype=np.float64)
    for i in range(n):
        out[i] = values[i] + values[lo[i]:hi[i]].astype(np.float64).mean(axis=0)
    out_dtype = values.dtype if np.issubdtype(values.dtype, np.floating) else np.float64
    out = out.astype(out_dtype, copy=False)
    return out[:, 0] if flat else out
