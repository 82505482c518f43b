"""Gap filling for frames without a face: the ABAW submission needs a prediction for every frame.

Rule, per video over the full frame range 0..n-1:
- a leading gap (before the first face) copies the first frame with a face;
- a trailing gap copies the last frame with a face;
- an inner gap is split at its midpoint: each frame copies the nearer face frame, and the exact middle
  frame of an odd-length gap (equally near to both) copies the PREVIOUS one. So a gap of length L takes
  ceil(L/2) frames from the frame before it and floor(L/2) from the frame after it.
- if no frame of the video has a face, every frame gets Neutral (ABAW index 0; a one-hot Neutral row for
  probability arrays): Neutral is the most frequent Aff-Wild2 class and the one that claims no
  expression. Every frame is flagged `filled`, so users can tell these frames from real predictions.
"""

from __future__ import annotations

import numpy as np

from fer_ray import labels

__all__ = ["NEUTRAL", "nearest_face_frame", "fill_gaps", "expand"]

NEUTRAL = labels.class_index("Neutral")


def nearest_face_frame(face_found: np.ndarray) -> np.ndarray:
    """For each frame, the index of the frame with a face it copies (itself when it has one); -1 if none."""
    face_found = np.asarray(face_found, dtype=bool)
    n = face_found.shape[0]
    if not face_found.any():
        return np.full(n, -1, dtype=np.int64)
    rows = np.arange(n)
    # Last face frame at or before i (-1 before the first), first face frame at or after i (n after the last).
    prev = np.maximum.accumulate(np.where(face_found, rows, -1))
    nxt = np.minimum.accumulate(np.where(face_found, rows, n)[::-1])[::-1]
    take_prev = (nxt == n) | ((prev >= 0) & (rows - prev <= nxt - rows))  # ties go to the previous frame
    return np.where(take_prev, prev, nxt).astype(np.int64)


def _neutral_like(values: np.ndarray) -> np.ndarray:
    if values.ndim == 1:
        return np.full_like(values, NEUTRAL)
    out = np.zeros_like(values)
    out[:, NEUTRAL] = 1
    return out


def fill_gaps(values: np.ndarray, face_found: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(filled values, filled mask) for per-frame labels (n,) or probabilities (n, k) over all n frames.

    Values at frames without a face are ignored and replaced; `filled` is True exactly there.
    """
    values = np.asarray(values)
    face_found = np.asarray(face_found, dtype=bool)
    if values.shape[0] != face_found.shape[0]:
        raise ValueError(f"{values.shape[0]} values for {face_found.shape[0]} frames")
    filled = ~face_found
    if not face_found.any():
        return _neutral_like(values), filled
    return values[nearest_face_frame(face_found)], filled


def expand(frame_indices: np.ndarray, values: np.ndarray, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Scatter per-face-frame values into the full range 0..num_frames-1: (values, face_found).

    Frames outside the range are dropped; frames absent from frame_indices get zeros and face_found=False,
    ready for `fill_gaps`.
    """
    frame_indices = np.asarray(frame_indices, dtype=np.int64)
    values = np.asarray(values)
    keep = (frame_indices >= 0) & (frame_indices < num_frames)
    full = np.zeros((num_frames,) + values.shape[1:], dtype=values.dtype)
    full[frame_indices[keep]] = values[keep]
    face_found = np.zeros(num_frames, dtype=bool)
    face_found[frame_indices[keep]] = True
    return full, face_found
