"""Ensembles and the CFC-SP coarse-to-fine cascade, on per-frame score arrays (rows = frames).

- Coarse net (CFC-SP): the sum of per-backbone softmax probabilities over the 5 coarse classes
  (labels.COARSE_CLASSES), optionally weighted.
- Cascade routing: a frame whose coarse argmax is Negative (labels.COARSE_NEGATIVE) takes the negative
  net's argmax mapped through labels.ABAW_OF_NEGATIVE; any other coarse class maps through
  labels.ABAW_OF_COARSE.
- Every system outputs an 8-class ABAW probability vector: coarse non-negative mass goes to its ABAW
  class, the Negative mass is split by the negative net's probabilities. The routed label is the
  cascade's decision and need not equal argmax of that vector (Negative may win the coarse vote while
  its split parts are each smaller than, say, Neutral).
- Mao et al. (ABAW2): a weighted sum of per-model softmax probabilities, weights per model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fer_ray import labels

__all__ = [
    "softmax", "ensemble_probs", "weighted_ensemble", "route", "abaw_probs", "normalize_rows",
    "MODEL_NAME_SEP", "model_name", "split_model_name", "num_scores", "log_prior", "correct_prior",
    "correct_video_prior",
]

_ABAW_OF_COARSE = np.asarray(labels.ABAW_OF_COARSE, dtype=np.int64)
_ABAW_OF_NEGATIVE = np.asarray(labels.ABAW_OF_NEGATIVE, dtype=np.int64)


def softmax(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax in float64 (the max is subtracted so large logits do not overflow)."""
    scores = np.asarray(scores, dtype=np.float64)
    shifted = scores - scores.max(axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=axis, keepdims=True)


def log_softmax(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    """log of :func:`softmax`, without its underflow to log(0) for very unlikely classes."""
    scores = np.asarray(scores, dtype=np.float64)
    shifted = scores - scores.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def ensemble_probs(probs: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """Sum of per-model softmax probabilities (CFC-SP coarse net), each model weighted if weights are given.

    `probs` are probability rows (softmax already applied, as VideoScores holds them): a second softmax
    here would flatten a confident 0.95 to about 0.27 over 8 classes and weaken every ensemble and window.
    The result is not renormalized: the coarse net's argmax is all the cascade needs, and
    `abaw_probs` normalizes rows when it builds the 8-class vector.
    """
    if len(probs) == 0:
        raise ValueError("ensemble of zero models")
    if weights is None:
        weights = [1.0] * len(probs)
    if len(weights) != len(probs):
        raise ValueError(f"{len(weights)} weights for {len(probs)} models")
    total = np.zeros(np.shape(probs[0]), dtype=np.float64)
    for model_probs, weight in zip(probs, weights):
        if np.shape(model_probs) != total.shape:
            raise ValueError(f"probability shapes differ: {np.shape(model_probs)} vs {total.shape}")
        total += float(weight) * np.asarray(model_probs, dtype=np.float64)
    return total


def weighted_ensemble(probs: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Mao et al. weighted-sum ensemble: sum_m weights[m] * probs[m] / sum(weights).

    Dividing by the weight total keeps rows summing to 1, so the output is itself a probability vector.
    Every model needs a weight; a weight for an absent model is an error, not silently ignored.
    """
    missing = sorted(set(probs) - set(weights))
    extra = sorted(set(weights) - set(probs))
    if missing or extra:
        raise ValueError(f"weights and models differ: no weight for {missing}, no probabilities for {extra}")
    names = sorted(probs)
    total = float(sum(weights[name] for name in names))
    if total <= 0:
        raise ValueError("ensemble weights must sum to a positive number")
    return ensemble_probs([probs[n] for n in names], [weights[n] for n in names]) / total


def log_prior(prior: Sequence[float]) -> np.ndarray:
    """log of a model's training class shares, 0 for classes it never saw (their scores stay as they are).

    Logits minus this are the logits of a model trained on balanced classes (logit adjustment)."""
    prior = np.asarray(prior, dtype=np.float64)
    return np.log(np.where(prior > 0, prior, 1.0))


def correct_prior(probs: np.ndarray, prior: Sequence[float]) -> np.ndarray:
    """Probabilities with the training prior divided out: softmax(logits - log_prior(prior)), from probs."""
    return normalize_rows(np.asarray(probs, dtype=np.float64) * np.exp(-log_prior(prior)))


def correct_video_prior(probs: np.ndarray, strength: float) -> np.ndarray:
    """Probabilities with the video's own mean prediction divided out, raised to `strength` in [0, 1)
    (0: unchanged).

    Why: one person's resting face reads as one expression to a model (a mouth that turns down looks sad
    on every frame), so that class wins too often across the whole video. Dividing by the video's mean
    prediction takes out what all its frames share and leaves what changes from frame to frame; a strength
    below 1 keeps part of the mean, since a video of mostly Neutral frames should still lean Neutral, and
    a video whose frames all say the same keeps that answer (p / p**s = p**(1 - s): same argmax); 1 would
    flatten it to uniform. Rows are frames of one video (or one face track) with scores; one frame (a
    photo) says nothing about the person and stays as it is. The strength is calibrated on labelled videos."""
    if not 0.0 <= strength < 1.0:
        raise ValueError(f"video prior strength must lie in [0, 1), got {strength}")
    probs = np.asarray(probs, dtype=np.float64)
    if strength == 0 or probs.shape[0] < 2:
        return probs
    mean = np.maximum(probs.mean(axis=0), 1e-12)  # a class no frame gives any weight stays at zero
    return normalize_rows(probs / mean ** float(strength))


def normalize_rows(values: np.ndarray) -> np.ndarray:
    """Rows scaled to sum 1 (an all-zero row becomes uniform). Values must be non-negative."""
    values = np.asarray(values, dtype=np.float64)
    if np.any(values < 0):
        raise ValueError("probability rows must be non-negative (smooth probabilities, not logits)")
    sums = values.sum(axis=-1, keepdims=True)
    uniform = np.full_like(values, 1.0 / values.shape[-1])
    return np.divide(values, sums, out=uniform, where=sums > 0)


def route(coarse: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """ABAW label per frame from coarse (n, 5) and negative (n, 4) scores of any monotone kind."""
    coarse = np.asarray(coarse)
    negative = np.asarray(negative)
    if coarse.shape[0] != negative.shape[0]:
        raise ValueError(f"coarse has {coarse.shape[0]} frames, negative {negative.shape[0]}")
    coarse_label = coarse.argmax(axis=1)
    is_negative = coarse_label == labels.COARSE_NEGATIVE
    safe_coarse = np.where(is_negative, 0, coarse_label)  # Negative has no ABAW class of its own
    return np.where(is_negative, _ABAW_OF_NEGATIVE[negative.argmax(axis=1)], _ABAW_OF_COARSE[safe_coarse])


def abaw_probs(coarse: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """(n, 8) ABAW probabilities from coarse (n, 5) and negative (n, 4) non-negative scores.

    Both inputs are normalized per row first (the coarse ensemble is a sum of softmaxes, and SP adds
    a window mean), then P(abaw of coarse c) = p_c and P(abaw of negative k) = p_Negative * q_k.
    """
    coarse = normalize_rows(coarse)
    negative = normalize_rows(negative)
    if coarse.shape[1] != len(labels.COARSE_CLASSES) or negative.shape[1] != len(labels.NEGATIVE_CLASSES):
        raise ValueError(f"expected (n, {len(labels.COARSE_CLASSES)}) and (n, {len(labels.NEGATIVE_CLASSES)}), "
                         f"got {coarse.shape} and {negative.shape}")
    out = np.zeros((coarse.shape[0], labels.NUM_CLASSES), dtype=np.float64)
    for c, abaw in enumerate(labels.ABAW_OF_COARSE):
        if c != labels.COARSE_NEGATIVE:
            out[:, abaw] = coarse[:, c]
    out[:, _ABAW_OF_NEGATIVE] = coarse[:, [labels.COARSE_NEGATIVE]] * negative
    return out


def decision_text(label: int, probs, coarse_probs=None, negative_probs=None) -> str:
    """What decided a frame's label, as a person reads it.

    A cascade frame routed to the negative net says both steps: "Negative 0.30 -> Disgust 0.83" (the
    coarse net's Negative share, then the negative net's share for the class): its joint probability
    (0.30 x 0.83) would look lower than a non-negative class's bar although that step won. A frame
    the coarse net labels itself, or any single model's frame, says "Happiness 0.91".
    """
    known = 0 <= label < labels.NUM_CLASSES
    name = labels.ABAW_CLASSES[label] if known else str(label)
    coarse = np.asarray(coarse_probs if coarse_probs is not None else [], dtype=np.float64)
    negative = np.asarray(negative_probs if negative_probs is not None else [], dtype=np.float64)
    cascade = coarse.size == len(labels.COARSE_CLASSES) and negative.size == len(labels.NEGATIVE_CLASSES)
    if not (cascade and known):
        probs = np.asarray(probs, dtype=np.float64)
        return f"{name} {probs[label]:.2f}" if known and label < probs.size else name
    coarse = normalize_rows(coarse)
    step = labels.NEGATIVE_OF_ABAW[label]
    if step >= 0:
        return f"Negative {coarse[labels.COARSE_NEGATIVE]:.2f} -> {name} {normalize_rows(negative)[step]:.2f}"
    return f"{name} {coarse[labels.COARSE_OF_ABAW[label]]:.2f}"


# ---- model names in logits tables ----
# A model is named "<task>/<backbone>", task one of labels.TASK_CLASSES ("expr": 8 ABAW scores,
# "coarse": 5 coarse scores, "negative": 4 negative scores), e.g. "coarse/iresnet", "coarse/swin",
# "coarse/hrnet", "negative/repvgg", "expr/baseline". The task prefix is what tells a system how to use
# the scores, so the same backbone may appear under two tasks ("coarse/swin" and "negative/swin").

MODEL_NAME_SEP = "/"


def model_name(task: str, backbone: str) -> str:
    if task not in labels.TASK_CLASSES:
        raise ValueError(f"unknown task {task!r}; valid: {', '.join(labels.TASK_CLASSES)}")
    if not backbone or MODEL_NAME_SEP in backbone:
        raise ValueError(f"backbone name must be non-empty and contain no {MODEL_NAME_SEP!r}: {backbone!r}")
    return f"{task}{MODEL_NAME_SEP}{backbone}"


def split_model_name(name: str) -> tuple[str, str]:
    """(task, backbone) of a model name; fails with the convention when the name does not follow it."""
    task, sep, backbone = str(name).partition(MODEL_NAME_SEP)
    if not sep or task not in labels.TASK_CLASSES or not backbone:
        raise ValueError(f"model name {name!r} is not '<task>{MODEL_NAME_SEP}<backbone>' with task in "
                         f"{', '.join(labels.TASK_CLASSES)}")
    return task, backbone


def num_scores(task: str) -> int:
    return len(labels.TASK_CLASSES[task])
