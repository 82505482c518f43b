"""Frame-level metrics for ABAW EXPR, in numpy (tested against scikit-learn).

Conventions:
- Frames whose ground truth is -1 (labels.UNANNOTATED) are excluded everywhere.
- F1 of a class = 2TP / (2TP + FP + FN), 0 when that is 0/0: exactly sklearn's
  f1_score(labels=range(K), average=None, zero_division=0). So a class absent from the ground truth
  scores 0 (and pulls the macro average down) whether or not it is predicted.
- `macro_f1` averages all K classes (the ABAW3 challenge metric); `macro_f1_present` averages only the
  classes present in the ground truth (a fairer number for small subsets).
- A prediction of -1 ("none of these K classes", used by the negative task when the system predicted a
  non-negative class) is a false negative for the true class and a false positive for no class.
- ABAW2 score (Mao et al.) = 0.67 * macro-F1 + 0.33 * accuracy.
- CFC-SP Table 3: coarse F1 over all annotated frames, both sides mapped by labels.COARSE_OF_ABAW;
  negative F1 over the frames whose ground truth is a negative class, mapped by labels.NEGATIVE_OF_ABAW.

Temporal quality (per video, frames in frame order): a flip is a change of label between consecutive
annotated frames (a run of -1 frames in between is skipped, not counted as a change); flips per minute
divide by the video's duration; segments are maximal runs of one label among annotated frames.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fer_ray import labels

__all__ = [
    "confusion_matrix", "per_class", "macro_f1", "macro_f1_present", "accuracy", "abaw2_score",
    "coarse_f1", "negative_f1", "frame_metrics", "duration_seconds", "flips_per_minute",
    "segment_lengths", "temporal_metrics", "segment_ids", "paired_bootstrap", "ABAW2_F1_WEIGHT",
    "ABAW2_ACC_WEIGHT",
]

ABAW2_F1_WEIGHT = 0.67
ABAW2_ACC_WEIGHT = 0.33


def _pairs(y_true, y_pred, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Annotated (true, pred) pairs; rejects out-of-range values instead of silently dropping them."""
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{y_true.size} ground-truth frames but {y_pred.size} predictions")
    keep = y_true != labels.UNANNOTATED
    y_true, y_pred = y_true[keep], y_pred[keep]
    if np.any((y_true < 0) | (y_true >= num_classes)):
        raise ValueError(f"ground truth outside -1..{num_classes - 1}")
    if np.any((y_pred < -1) | (y_pred >= num_classes)):
        raise ValueError(f"prediction outside -1..{num_classes - 1}")
    return y_true, y_pred


def confusion_matrix(y_true, y_pred, num_classes: int = labels.NUM_CLASSES) -> np.ndarray:
    """(K, K) counts, rows = ground truth, columns = prediction; -1 ground truth and -1 predictions excluded."""
    y_true, y_pred = _pairs(y_true, y_pred, num_classes)
    keep = y_pred >= 0
    flat = y_true[keep] * num_classes + y_pred[keep]
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _counts(y_true, y_pred, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per class TP, FP, FN, support; -1 predictions count only as FN (see module docstring)."""
    y_true, y_pred = _pairs(y_true, y_pred, num_classes)
    cm = confusion_matrix(y_true, y_pred, num_classes)
    support = np.bincount(y_true, minlength=num_classes)
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = support - tp
    return tp, fp, fn, support


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def per_class(y_true, y_pred, num_classes: int = labels.NUM_CLASSES) -> dict[str, np.ndarray]:
    """precision, recall, f1 and support per class (zero_division=0)."""
    tp, fp, fn, support = _counts(y_true, y_pred, num_classes)
    return {
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "support": support,
    }


def macro_f1(y_true, y_pred, num_classes: int = labels.NUM_CLASSES) -> float:
    return float(per_class(y_true, y_pred, num_classes)["f1"].mean())


def macro_f1_present(y_true, y_pred, num_classes: int = labels.NUM_CLASSES) -> float:
    """Macro F1 over the classes present in the ground truth only (nan if there are no annotated frames)."""
    stats = per_class(y_true, y_pred, num_classes)
    present = stats["support"] > 0
    return float(stats["f1"][present].mean()) if present.any() else float("nan")


def accuracy(y_true, y_pred, num_classes: int = labels.NUM_CLASSES) -> float:
    y_true, y_pred = _pairs(y_true, y_pred, num_classes)
    return float(np.mean(y_true == y_pred)) if y_true.size else float("nan")


def abaw2_score(f1: float, acc: float) -> float:
    return ABAW2_F1_WEIGHT * f1 + ABAW2_ACC_WEIGHT * acc


def coarse_f1(y_true, y_pred) -> float:
    """Coarse 5-class macro F1 of ABAW labels, both sides mapped by COARSE_OF_ABAW."""
    return macro_f1(labels.task_labels(y_true, "coarse"), labels.task_labels(y_pred, "coarse"),
                    len(labels.COARSE_CLASSES))


def negative_f1(y_true, y_pred) -> float:
    """Negative 4-class macro F1 over frames whose ground truth is a negative class (ABAW labels in)."""
    true_neg = labels.task_labels(y_true, "negative")
    pred_neg = labels.task_labels(y_pred, "negative")  # non-negative predictions become -1: a miss
    keep = true_neg >= 0
    return macro_f1(true_neg[keep], pred_neg[keep], len(labels.NEGATIVE_CLASSES))


def frame_metrics(y_true, y_pred) -> dict:
    """Every frame-level number for ABAW labels, as plain Python values (JSON-ready)."""
    stats = per_class(y_true, y_pred)
    f1 = float(stats["f1"].mean())
    acc = accuracy(y_true, y_pred)
    return {
        "frames": int(np.asarray(y_true).size),
        "annotated": int(stats["support"].sum()),
        "f1": f1,
        "f1_present": macro_f1_present(y_true, y_pred),
        "accuracy": acc,
        "abaw2_score": abaw2_score(f1, acc),
        "coarse_f1": coarse_f1(y_true, y_pred),
        "negative_f1": negative_f1(y_true, y_pred),
        "per_class": {
            name: {key: (int(stats[key][k]) if key == "support" else float(stats[key][k]))
                   for key in ("precision", "recall", "f1", "support")}
            for k, name in enumerate(labels.ABAW_CLASSES)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred).tolist(),
    }


# ---- temporal quality ----

def duration_seconds(num_frames: int, fps: float | None = None, timestamps: Sequence[float] | None = None) -> float:
    """Video duration: num_frames / fps, or from timestamps as span + one median frame interval."""
    if timestamps is not None and len(timestamps) >= 2:
        ts = np.sort(np.asarray(timestamps, dtype=np.float64))
        return float(ts[-1] - ts[0] + np.median(np.diff(ts)))
    if fps is None or fps <= 0:
        raise ValueError("need fps > 0 or at least two timestamps to measure time")
    return num_frames / float(fps)


def _annotated(sequence) -> np.ndarray:
    sequence = np.asarray(sequence, dtype=np.int64).ravel()
    return sequence[sequence != labels.UNANNOTATED]


def _run_lengths(sequence) -> np.ndarray:
    values = _annotated(sequence)
    if values.size == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    return np.diff(np.r_[starts, values.size])


def flips_per_minute(sequence, fps: float | None = None, timestamps: Sequence[float] | None = None) -> float:
    values = _annotated(sequence)
    flips = int(np.count_nonzero(values[1:] != values[:-1]))
    minutes = duration_seconds(len(np.asarray(sequence).ravel()), fps, timestamps) / 60.0
    return flips / minutes if minutes > 0 else float("nan")


def segment_lengths(sequence) -> np.ndarray:
    """Lengths (frames) of the maximal runs of one label among annotated frames."""
    return _run_lengths(sequence)


def temporal_metrics(y_true, y_pred, fps: float | None = None, timestamps: Sequence[float] | None = None) -> dict:
    """Flips per minute and mean segment length (frames, seconds) of prediction and ground truth."""
    n = len(np.asarray(y_pred).ravel())
    seconds_per_frame = duration_seconds(n, fps, timestamps) / n if n else float("nan")
    out = {}
    for name, seq in (("pred", y_pred), ("true", y_true)):
        runs = segment_lengths(seq)
        mean_frames = float(runs.mean()) if runs.size else float("nan")
        out[f"{name}_flips_per_min"] = flips_per_minute(seq, fps, timestamps) if n else float("nan")
        out[f"{name}_mean_segment_frames"] = mean_frames
        out[f"{name}_mean_segment_s"] = mean_frames * seconds_per_frame
    return out


# ---- how sure a difference is ----

def segment_ids(sequence, start: int = 0) -> np.ndarray:
    """An id per frame for the maximal run of one ground-truth label it lies in (ids from `start`)."""
    values = np.asarray(sequence, dtype=np.int64).ravel()
    if values.size == 0:
        return np.zeros(0, dtype=np.int64)
    return start + np.cumsum(np.r_[0, values[1:] != values[:-1]])


def _group_confusions(y_true, y_pred, groups, num_classes: int) -> np.ndarray:
    """(G, K*K) confusion counts per group, annotated frames only."""
    groups = np.asarray(groups, dtype=np.int64).ravel()
    if groups.size != np.asarray(y_true).size:
        raise ValueError(f"{groups.size} group ids for {np.asarray(y_true).size} frames")
    groups = groups[np.asarray(y_true).ravel() != labels.UNANNOTATED]
    y_true, y_pred = _pairs(y_true, y_pred, num_classes)
    if np.any(y_pred < 0):
        raise ValueError("paired_bootstrap needs a class for every annotated frame (no -1 predictions)")
    _, dense = np.unique(groups, return_inverse=True)
    size = num_classes * num_classes
    flat = dense * size + y_true * num_classes + y_pred
    return np.bincount(flat, minlength=(dense.max(initial=-1) + 1) * size).reshape(-1, size)


def _macro_f1_of_confusions(cm: np.ndarray, num_classes: int) -> np.ndarray:
    cm = cm.reshape(-1, num_classes, num_classes).astype(np.float64)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    den = cm.sum(axis=1) + cm.sum(axis=2)  # (TP + FN) + (TP + FP)
    return np.divide(2 * tp, den, out=np.zeros_like(tp), where=den > 0).mean(axis=1)


def paired_bootstrap(y_true, pred_a, pred_b, groups, n_boot: int = 2000, seed: int = 0,
                     num_classes: int = labels.NUM_CLASSES) -> dict[str, float]:
    """Macro-F1 of b minus a, with a 95 % interval from resampling whole groups with replacement.

    Frames of one group (a ground-truth segment: one photo held for seconds, or one expression episode)
    are not independent, so groups, not frames, are resampled; both systems see the same resamples.
    Returns diff (on all frames), ci_low, ci_high and p_b_better (the share of resamples where b wins)."""
    cm_a = _group_confusions(y_true, pred_a, groups, num_classes)
    cm_b = _group_confusions(y_true, pred_b, groups, num_classes)
    n_groups = cm_a.shape[0]
    weights = _resample_weights(n_groups, n_boot, seed)
    diffs = (_macro_f1_of_confusions(weights @ cm_b, num_classes)
             - _macro_f1_of_confusions(weights @ cm_a, num_classes))
    full = (_macro_f1_of_confusions(cm_b.sum(axis=0), num_classes)
            - _macro_f1_of_confusions(cm_a.sum(axis=0), num_classes))[0]
    low, high = np.percentile(diffs, [2.5, 97.5])
    return {"diff": float(full), "ci_low": float(low), "ci_high": float(high),
            "p_b_better": float(np.mean(diffs > 0)), "groups": int(n_groups), "n_boot": int(n_boot)}


def _resample_weights(n_groups: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_groups) how often each group is drawn in each resample (with replacement)."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n_groups, size=(n_boot, n_groups))
    weights = np.zeros((n_boot, n_groups))
    np.add.at(weights, (np.arange(n_boot)[:, None], picks), 1.0)
    return weights


def bootstrap_f1(y_true, y_pred, groups, n_boot: int = 2000, seed: int = 0,
                 num_classes: int = labels.NUM_CLASSES) -> dict[str, float]:
    """Macro-F1 with a 95 % interval from resampling whole groups (segments), as paired_bootstrap does."""
    cm = _group_confusions(y_true, y_pred, groups, num_classes)
    resampled = _macro_f1_of_confusions(_resample_weights(cm.shape[0], n_boot, seed) @ cm, num_classes)
    low, high = np.percentile(resampled, [2.5, 97.5])
    return {"f1": float(_macro_f1_of_confusions(cm.sum(axis=0), num_classes)[0]), "ci_low": float(low),
            "ci_high": float(high), "groups": int(cm.shape[0]), "n_boot": int(n_boot)}


def reference_scores(y_true, num_classes: int = labels.NUM_CLASSES) -> dict:
    """What two predictors that never look at a face score on the same annotated frames: the majority
    class on every frame, and a uniformly random class (expected values). A model's figures mean
    something only next to these."""
    truth = _annotated(y_true)
    counts = np.bincount(truth, minlength=num_classes).astype(np.float64)
    share = counts / counts.sum() if counts.sum() else counts
    majority = int(np.argmax(counts))
    guess = 1.0 / num_classes
    # uniform guessing: precision of class c is its share, recall is 1/K
    chance_f1 = np.divide(2 * share * guess, share + guess, out=np.zeros_like(share), where=share > 0)
    return {
        "majority_class": labels.ABAW_CLASSES[majority] if num_classes == labels.NUM_CLASSES else majority,
        "majority_f1": macro_f1(truth, np.full_like(truth, majority), num_classes),
        "majority_accuracy": float(share[majority]),
        "chance_f1": float(chance_f1.mean()),
        "chance_accuracy": guess,
    }
