"""CFC-SP ablation tables computed from stored per-model logits, without re-running any model.

Input: a logits table (pandas or Arrow) with columns schema.VIDEO_ID, schema.FRAME_INDEX, schema.MODEL,
schema.SCORES, model names "<task>/<backbone>" (see fer_ray.infer.cascade.model_name), and ground truth
per video (ABAW label per frame, index = frame index, -1 unannotated).

Each system's per-video prediction is inference's own (fer_ray.infer.predict: `System`, `predict_video`:
ensemble, Smooth Predicting, cascade routing, gap fill), so the tables score the code the annotate job runs.
Metrics are frame-level over all videos that have both logits and ground truth.

Tables (pandas DataFrames):
- table1: baseline / + coarse-to-fine / + SP / both (CFC-SP Table 1)
- table2: every non-empty subset of the coarse backbones x every non-empty subset of the negative ones
- table3: each backbone alone on its own task, coarse 5-class and negative 4-class F1, no SP
- table4: SP window sweep of the full system
`held_out_windows` picks an SP window per video without using that video's labels (leave-one-video-out);
table1(window=HELD_OUT) scores each system's SP rows at the windows it picks for that system.
`held_out_settings` picks a window and a video prior together the same way (what calibrate chooses).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from fer_ray import labels, schema
from fer_ray.evaluate import metrics
from fer_ray.infer import cascade, fill
from fer_ray.infer.predict import System, VideoScores, predict_video

__all__ = [
    "DEFAULT_WINDOW", "DEFAULT_WINDOWS", "System", "VideoScores", "group_logits", "models_by_task",
    "full_system", "predict_video", "predict", "evaluate", "table1", "table2", "table3", "table4",
    "all_tables", "held_out_windows", "held_out_settings", "Setting", "HELD_OUT",
]

DEFAULT_WINDOW = 256  # best window in CFC-SP Table 4 (about 8 s at 30 fps)
DEFAULT_WINDOWS = (0, 32, 64, 128, 256, 512)


def _to_arrow(table) -> pa.Table:
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    return table.select([schema.VIDEO_ID, schema.FRAME_INDEX, schema.MODEL, schema.SCORES])


def _score_rows(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Flat score values and each row's start offset into them (one pass, no per-row Python objects)."""
    scores = table.column(schema.SCORES).combine_chunks()
    lengths = pc.list_value_length(scores).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(scores).to_numpy(zero_copy_only=False).astype(np.float64)
    starts = np.r_[0, np.cumsum(lengths)[:-1]].astype(np.int64)
    return flat, starts


def group_logits(table) -> dict[str, VideoScores]:
    """video_id -> VideoScores. Each model's scores must have its task's width; duplicates: last row wins."""
    table = _to_arrow(table)
    videos = table.column(schema.VIDEO_ID).to_numpy(zero_copy_only=False)
    frames = table.column(schema.FRAME_INDEX).to_numpy(zero_copy_only=False).astype(np.int64)
    models = table.column(schema.MODEL).to_numpy(zero_copy_only=False)
    flat, starts = _score_rows(table)
    width = {m: cascade.num_scores(cascade.split_model_name(m)[0]) for m in pd.unique(models)}
    _check_widths(table, width)
    keys = pd.DataFrame({"v": videos, "m": models})
    out: dict[str, VideoScores] = {}
    for video, rows in keys.groupby("v", sort=True).indices.items():
        video_frames = np.unique(frames[rows])
        probs = {}
        for model, model_rows in keys.iloc[rows].groupby("m", sort=True).indices.items():
            picked = rows[model_rows]
            values = flat[starts[picked][:, None] + np.arange(width[model])]
            dense = np.full((video_frames.size, width[model]), np.nan)
            dense[np.searchsorted(video_frames, frames[picked])] = cascade.softmax(values)
            probs[model] = dense
        out[str(video)] = VideoScores(video_frames, probs)
    return out


def _check_widths(table: pa.Table, width: Mapping[str, int]) -> None:
    lengths = pc.list_value_length(table.column(schema.SCORES)).to_numpy(zero_copy_only=False)
    models = table.column(schema.MODEL).to_numpy(zero_copy_only=False)
    for model, expected in width.items():
        found = np.unique(lengths[models == model])
        if found.size and (found.size > 1 or found[0] != expected):
            raise ValueError(f"model {model!r} has score lengths {found.tolist()}, expected {expected}")


def models_by_task(videos: Mapping[str, VideoScores]) -> dict[str, list[str]]:
    """task -> sorted model names seen in any video."""
    names = sorted({m for v in videos.values() for m in v.probs})
    out: dict[str, list[str]] = {task: [] for task in labels.TASK_CLASSES}
    for name in names:
        out[cascade.split_model_name(name)[0]].append(name)
    return out


def full_system(videos: Mapping[str, VideoScores]) -> System:
    """The cascade of every coarse and negative model if there are both, else the ensemble of expr models."""
    tasks = models_by_task(videos)
    if tasks["coarse"] and tasks["negative"]:
        return System(coarse=tuple(tasks["coarse"]), negative=tuple(tasks["negative"]))
    if tasks["expr"]:
        return System(expr=tuple(tasks["expr"]))
    raise ValueError("logits hold no expr models and no coarse+negative pair")


@dataclass(frozen=True)
class Setting:
    """One video's post-processing chosen on the other videos: its SP window and video prior."""

    window: int
    video_prior: float = 0.0


# one SP window, or one per video (held_out_windows), or a window and video prior per video (held_out_settings)
Window = int | Mapping[str, int] | Mapping[str, Setting]
HELD_OUT = "held-out"  # table1: each system's SP window chosen per video by held_out_windows


def _setting_of(window: Window, video_id: str, system: System) -> tuple[System, int]:
    value = window[video_id] if isinstance(window, Mapping) else window
    if isinstance(value, Setting):
        return replace(system, video_prior=value.video_prior), int(value.window)
    return system, int(value)


def predict(videos: Mapping[str, VideoScores], truth: Mapping[str, np.ndarray], system: System,
            window: Window) -> dict[str, np.ndarray]:
    """video_id -> full-range labels for every video with both logits and ground truth."""
    return {v: predict_video(videos[v], *_setting_of(window, v, system), len(truth[v]))["label"]
            for v in sorted(set(videos) & set(truth))}


def _concat(truth: Mapping[str, np.ndarray], predicted: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    if not predicted:
        raise ValueError("no video has both logits and ground truth")
    names = sorted(predicted)
    return (np.concatenate([np.asarray(truth[v], dtype=np.int64) for v in names]),
            np.concatenate([predicted[v] for v in names]))


def _scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    f1 = metrics.macro_f1(y_true, y_pred)
    acc = metrics.accuracy(y_true, y_pred)
    return {"f1": f1, "accuracy": acc, "abaw2_score": metrics.abaw2_score(f1, acc)}


def evaluate(videos: Mapping[str, VideoScores], truth: Mapping[str, np.ndarray], system: System,
             window: Window) -> dict[str, float]:
    """Frame-level f1 (8-class macro), accuracy and ABAW2 score of one system at one SP window (or one per video)."""
    return _scores(*_concat(truth, predict(videos, truth, system, window)))


def held_out_windows(videos, truth, system: System | None = None,
                     windows: Sequence[int] = DEFAULT_WINDOWS) -> dict[str, int]:
    """video_id -> the SP window with the best macro-F1 on all the *other* videos (ties: the smaller window).

    Leave-one-video-out: a video's own labels never choose its window, so scores at these windows are a fair
    estimate of what SP gives on new videos when the window has to be picked from labelled ones.
    A single video gets the smallest window (there is nothing else to choose from)."""
    system = system or full_system(videos)
    chosen = held_out_settings(videos, truth, system, windows, (system.video_prior,))
    return {video: setting.window for video, setting in chosen.items()}


def held_out_settings(videos, truth, system: System, windows: Sequence[int] = DEFAULT_WINDOWS,
                      video_priors: Sequence[float] = (0.0,)) -> dict[str, Setting]:
    """video_id -> the (window, video prior) with the best macro-F1 on all the *other* videos, as
    held_out_windows picks a window (ties: the weaker video prior, then the smaller window)."""
    names = sorted(set(videos) & set(truth))
    grid = [Setting(w, p) for p in sorted({float(p) for p in video_priors}) for w in sorted({int(w) for w in windows})]
    predicted = [predict(videos, truth, system, {v: setting for v in names}) for setting in grid]
    chosen = {}
    for video in names:
        others = {v: truth[v] for v in names if v != video}
        if not others:
            chosen[video] = grid[0]
            continue
        f1 = [metrics.macro_f1(*_concat(others, {v: labels_of[v] for v in others})) for labels_of in predicted]
        chosen[video] = grid[int(np.argmax(f1))]  # argmax takes the first (weakest, smallest) of tied settings
    return chosen


def table1(videos, truth, window: Window | str = DEFAULT_WINDOW, baseline: Sequence[str] | None = None,
           windows: Sequence[int] = DEFAULT_WINDOWS) -> pd.DataFrame:
    """Baseline (expr models) vs + C-F (the cascade) vs + SP vs both; rows a family lacks are left out.

    `window`: one SP window, a per-video mapping, or HELD_OUT: per system and video, the best of `windows`
    on the other videos (the SP rows' window column then says "per video" / "held-out")."""
    tasks = models_by_task(videos)
    base = tuple(baseline) if baseline else tuple(tasks["expr"])
    rows = []
    for cf, system in ((False, System(expr=base) if base else None),
                       (True, full_system(videos) if tasks["coarse"] and tasks["negative"] else None)):
        if system is None:
            continue
        sp_window = held_out_windows(videos, truth, system, windows) if window == HELD_OUT else window
        for sp in (False, True):
            name = "baseline" + (" + C-F" if cf else "") + (" + SP" if sp else "")
            shown = (window if isinstance(window, str) else "per video" if isinstance(window, Mapping)
                     else int(window)) if sp else 0
            rows.append({"method": name, "coarse_to_fine": cf, "smooth": sp, "window": shown,
                         "system": system.name, **evaluate(videos, truth, system, sp_window if sp else 0)})
    return pd.DataFrame(rows)


def _subsets(names: Sequence[str]) -> Iterable[tuple[str, ...]]:
    for size in range(1, len(names) + 1):
        yield from itertools.combinations(names, size)


def table2(videos, truth, window: int = DEFAULT_WINDOW) -> pd.DataFrame:
    """Every non-empty coarse subset x every non-empty negative subset; one bool column per model."""
    tasks = models_by_task(videos)
    rows = []
    for coarse in _subsets(tasks["coarse"]):
        for negative in _subsets(tasks["negative"]):
            system = System(coarse=coarse, negative=negative)
            used = {m: m in system.models for m in tasks["coarse"] + tasks["negative"]}
            rows.append({**used, "system": system.name, "window": window,
                         **evaluate(videos, truth, system, window)})
    return pd.DataFrame(rows)


def _single_model_f1(videos, truth, model: str) -> float:
    """One model's own-task macro F1 (argmax, no SP, gaps filled in the task's label space)."""
    task, _ = cascade.split_model_name(model)
    y_true, y_pred = [], []
    for v in sorted(set(videos) & set(truth)):
        video = videos[v]
        if model not in video.probs:
            continue
        rows = ~np.isnan(video.probs[model]).any(axis=1)
        pred, found = fill.expand(video.frames[rows], video.probs[model][rows].argmax(axis=1), len(truth[v]))
        y_true.append(labels.task_labels(truth[v], task))
        y_pred.append(fill.fill_gaps(pred, found)[0])
    if not y_true:
        return float("nan")
    # task_labels maps ground truth outside the task to -1, which the metric excludes: the negative F1
    # is over frames whose ground truth is a negative class, as in CFC-SP Table 3.
    return metrics.macro_f1(np.concatenate(y_true), np.concatenate(y_pred), cascade.num_scores(task))


def table3(videos, truth) -> pd.DataFrame:
    """Per backbone: coarse 5-class F1 of "coarse/<b>" and negative 4-class F1 of "negative/<b>" (NaN if absent)."""
    tasks = models_by_task(videos)
    backbones = sorted({cascade.split_model_name(m)[1] for m in tasks["coarse"] + tasks["negative"]})
    rows = []
    for backbone in backbones:
        row = {"backbone": backbone}
        for task in ("coarse", "negative"):
            name = cascade.model_name(task, backbone)
            row[f"{task}_f1"] = _single_model_f1(videos, truth, name) if name in tasks[task] else float("nan")
        rows.append(row)
    return pd.DataFrame(rows, columns=["backbone", "coarse_f1", "negative_f1"])


def table4(videos, truth, windows: Sequence[int] = DEFAULT_WINDOWS, system: System | None = None) -> pd.DataFrame:
    """SP window sweep of one system (default: the full system)."""
    system = system or full_system(videos)
    return pd.DataFrame([{"window": int(w), "system": system.name, **evaluate(videos, truth, system, int(w))}
                         for w in windows])


def all_tables(logits, truth: Mapping[str, np.ndarray], window: int = DEFAULT_WINDOW,
               windows: Sequence[int] = DEFAULT_WINDOWS) -> dict[str, pd.DataFrame]:
    """Every table the logits allow, keyed table1..table4 (a table with no possible row is left out).

    logits: a logits table, or its `group_logits` result when the caller already has one.
    """
    videos = logits if isinstance(logits, Mapping) else group_logits(logits)
    tasks = models_by_task(videos)
    out = {"table1": table1(videos, truth, window)}
    if tasks["coarse"] and tasks["negative"]:
        out["table2"] = table2(videos, truth, window)
    if tasks["coarse"] or tasks["negative"]:
        out["table3"] = table3(videos, truth)
    out["table4"] = table4(videos, truth, windows)
    return out
