"""evaluate_run: a finished run's predictions (and optionally its logits) against EXPR ground truth.

Ground truth (`labels`) is one of:
- a directory or s3:// prefix of Aff-Wild2 EXPR files, `<labels>/<video_id>.txt` (labels.read_expr);
- a CSV file (name ends in .csv) with columns schema.VIDEO_ID, schema.FRAME_INDEX, schema.LABEL, the label
  an ABAW index or class name; frames a video's CSV rows skip are unannotated (-1);
- an image set's labels.csv (path,label[,subject]): each photo, annotated as a one-frame video, scored
  against its label.
Only videos with both predictions and labels are scored; the others are listed in metrics.json.
Each video is scored over every frame of its label file; frames the predictions do not cover are filled
from the nearest covered frame, as a submission would be.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from fer_ray import labels, schema, storage
from fer_ray.evaluate import ablations, metrics, report
from fer_ray.infer import predict, readers

__all__ = ["EvaluateConfig", "load_truth", "per_video_table", "evaluate_run"]


@dataclass
class EvaluateConfig:
    """jobs/evaluate.py. fps is used only where predictions carry no timestamps."""

    predictions: str
    labels: str
    output: str
    logits: str | None = None
    fps: float = 30.0
    window: int = ablations.DEFAULT_WINDOW
    windows: list[int] = field(default_factory=lambda: list(ablations.DEFAULT_WINDOWS))
    max_timelines: int = 12

    def validate(self) -> None:
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if self.window < 0 or any(w < 0 for w in self.windows):
            raise ValueError("SP windows must be >= 0")


def _truth_from_csv(uri: str) -> dict[str, np.ndarray]:
    frame = pd.read_csv(io.BytesIO(storage.read_bytes(uri)), dtype={schema.VIDEO_ID: str})
    if {"path", "label"} <= set(frame.columns) and schema.VIDEO_ID not in frame.columns:
        return _truth_from_image_set(uri)
    missing = {schema.VIDEO_ID, schema.FRAME_INDEX, schema.LABEL} - set(frame.columns)
    if missing:
        raise labels.LabelFormatError(f"{uri}: missing column(s) {', '.join(sorted(missing))}")
    out = {}
    for video_id, rows in frame.groupby(schema.VIDEO_ID, sort=True):
        index = rows[schema.FRAME_INDEX].to_numpy(dtype=np.int64)
        values = np.full(int(index.max()) + 1, labels.UNANNOTATED, dtype=np.int64)
        values[index] = [labels.class_index(v) for v in rows[schema.LABEL]]
        out[str(video_id)] = values
    return out


def _truth_from_image_set(uri: str) -> dict[str, np.ndarray]:
    """photo id -> its one label, from an image set's labels.csv (path,label[,subject]): the ids the
    preprocess and annotate jobs give its photos (fer_ray.inputs.from_image_set)."""
    from fer_ray.inputs import MEMBERS, from_image_set

    found = from_image_set(uri, kind="image")
    return {m[schema.VIDEO_ID]: np.array([int(m[schema.LABEL])], dtype=np.int64)
            for item in found.items for m in item[MEMBERS]}


def load_truth(source: str, video_ids: list[str]) -> dict[str, np.ndarray]:
    """video_id -> ABAW label per frame for the videos that have labels (see module docstring)."""
    if source.lower().endswith(".csv"):
        table = _truth_from_csv(source)
        return {v: table[v] for v in video_ids if v in table}
    out = {}
    for video_id in video_ids:
        uri = storage.join(source, f"{storage.safe_key(video_id)}.txt")  # an id never walks out of source
        if storage.exists(uri):
            out[video_id] = labels.read_expr(uri)
    return out


def _fps(rows: pd.DataFrame, default: float) -> float:
    """Frames per second from the timestamps when they are usable, else the configured default."""
    if schema.TIMESTAMP not in rows or len(rows) < 2:
        return default
    ts = rows[schema.TIMESTAMP].to_numpy(dtype=np.float64)
    frames = rows[schema.FRAME_INDEX].to_numpy(dtype=np.float64)
    ok = np.isfinite(ts)
    step = np.diff(ts[ok]) / np.diff(frames[ok]) if ok.sum() >= 2 else np.zeros(0)
    step = step[np.isfinite(step) & (step > 0)]
    return float(1.0 / np.median(step)) if step.size else default


def per_video_table(predictions: pd.DataFrame, truth: dict[str, np.ndarray], default_fps: float):
    """(per-video DataFrame, video -> full-range predicted labels, video -> fps)."""
    rows, predicted, fps = [], {}, {}
    for video_id, video_rows in predictions.groupby(schema.VIDEO_ID, sort=True):
        if video_id not in truth:
            continue
        y_true = truth[video_id]
        y_pred, gap = readers.video_labels(video_rows, len(y_true))
        predicted[video_id], fps[video_id] = y_pred, _fps(video_rows, default_fps)
        filled = int(video_rows[schema.FILLED].sum()) if schema.FILLED in video_rows else 0
        f1, acc = metrics.macro_f1(y_true, y_pred), metrics.accuracy(y_true, y_pred)
        rows.append({
            schema.VIDEO_ID: video_id, "frames": len(y_true), "annotated": int((y_true >= 0).sum()),
            "filled_frames": filled + int(gap.sum()), "f1": f1,
            "f1_present": metrics.macro_f1_present(y_true, y_pred), "accuracy": acc,
            "abaw2_score": metrics.abaw2_score(f1, acc), "fps": fps[video_id],
            **metrics.temporal_metrics(y_true, y_pred, fps=fps[video_id]),
        })
    return pd.DataFrame(rows), predicted, fps


def _timelines(config, truth, predicted, logits_videos) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    system = ablations.full_system(logits_videos) if logits_videos else None
    for video_id in sorted(predicted)[: config.max_timelines]:
        series = {"truth": truth[video_id], "prediction": predicted[video_id]}
        if system is not None and video_id in logits_videos:
            for name, window in (("raw", 0), (f"SP w={config.window}", config.window)):
                series[name] = predict.predict_video(logits_videos[video_id], system, window,
                                                       len(truth[video_id]))["label"]
        out[video_id] = series
    return out


def _overall_table(overall: dict, per_video: pd.DataFrame) -> pd.DataFrame:
    keys = ("frames", "annotated", "f1", "f1_present", "accuracy", "abaw2_score", "coarse_f1", "negative_f1")
    row = {k: overall[k] for k in keys}
    for column in per_video.columns:
        if "flips" in column or "segment" in column:
            row[f"mean_{column}"] = float(per_video[column].mean())
    return pd.DataFrame([row])


def headline(truth: dict[str, np.ndarray], predicted: dict[str, np.ndarray], names: list[str],
             overall: dict) -> dict:
    """The figures a report opens with: macro-F1 with its segment-bootstrap interval beside the
    majority-class and chance figures of the same frames, and how much was scored."""
    y_true = np.concatenate([truth[v] for v in names])
    offsets = np.cumsum([0] + [len(truth[v]) for v in names[:-1]])
    groups = np.concatenate([metrics.segment_ids(truth[v], start=int(o)) for v, o in zip(names, offsets)])
    interval = metrics.bootstrap_f1(y_true, np.concatenate([predicted[v] for v in names]), groups)
    return {"f1": overall["f1"], "accuracy": overall["accuracy"], "ci_low": interval["ci_low"],
            "ci_high": interval["ci_high"], "segments": interval["groups"], **metrics.reference_scores(y_true),
            "annotated": overall["annotated"], "videos": len(names)}


def track_table(predictions: pd.DataFrame, units: dict[tuple[str, int], str]) -> pd.DataFrame:
    """One row per (video, face track): the frames with that face and the id it is scored under ("" when
    it is annotated but not scored)."""
    frame = predictions.assign(**{schema.TRACK_ID: readers.frame_tracks(predictions)})
    counts = frame.groupby([schema.VIDEO_ID, schema.TRACK_ID])[schema.FACE_FOUND].sum().astype(int)
    return pd.DataFrame([{schema.VIDEO_ID: v, schema.TRACK_ID: int(t), "face_frames": int(n),
                          "scored_as": units.get((str(v), int(t)), "")} for (v, t), n in counts.items()])


def run_calibration(predictions: str) -> dict | None:
    """The annotate run's calibration (its summary.json: the window and prior correction chosen on validation
    videos, and their figures), for the report; None when there is none or the run did not use it."""
    try:
        chosen = storage.read_json(storage.join(predictions, "summary.json")).get("calibration")
    except (FileNotFoundError, ValueError, OSError, AttributeError):
        return None
    return chosen if chosen and chosen.get("used") else None


def evaluate_run(config: EvaluateConfig) -> dict:
    """Score predictions, compute ablations when logits are given, write the report; returns the summary."""
    predictions = readers.sorted_frames(readers.read_predictions(config.predictions))
    # what each label file scores: a video's main face track, or each person of a video labelled per person
    units = readers.scored_tracks(predictions, readers.named_subjects(config.predictions))
    tracks_table = track_table(predictions, units)
    predictions = readers.scored_rows(predictions, units).sort_values(
        [schema.VIDEO_ID, schema.FRAME_INDEX], kind="stable").reset_index(drop=True)
    video_ids = sorted(predictions[schema.VIDEO_ID].unique().tolist())
    truth = load_truth(config.labels, video_ids)
    if not truth:
        raise FileNotFoundError(f"none of the {len(video_ids)} predicted videos has labels under {config.labels}")
    per_video, predicted, fps = per_video_table(predictions, truth, config.fps)
    names = sorted(predicted)
    overall = metrics.frame_metrics(np.concatenate([truth[v] for v in names]),
                                    np.concatenate([predicted[v] for v in names]))
    tables = {"overall": _overall_table(overall, per_video), "per_class": pd.DataFrame(
        [{"class": name, **stats} for name, stats in overall["per_class"].items()]), "per_video": per_video}
    several = tracks_table[tracks_table[schema.VIDEO_ID].duplicated(keep=False)]
    if len(several):  # the videos with several face tracks (the rest have one each)
        tables["tracks"] = several.reset_index(drop=True)
    logits_videos = {}
    if config.logits:
        logits = readers.scored_table(readers.read_logits(config.logits), units)
        logits_videos = ablations.group_logits(logits)
        tables.update(ablations.all_tables(logits_videos, truth, config.window, config.windows))
    summary = {
        "description": f"{len(names)} videos, {overall['annotated']} annotated frames; predictions "
                       f"{config.predictions}, labels {config.labels}",
        "config": asdict(config), "videos": names, "overall": overall,
        "headline": headline(truth, predicted, names, overall) | {"tracks": len(tracks_table)}
        | {"calibration": run_calibration(config.predictions)},
        "videos_without_labels": [v for v in video_ids if v not in truth],
        "per_video": per_video.to_dict(orient="records"),
        "ablations": {k: t.to_dict(orient="records") for k, t in tables.items() if k.startswith("table")},
    }
    timelines = _timelines(config, truth, predicted, logits_videos)
    fps_all = float(np.median(list(fps.values())))
    summary["report"] = report.write_report(config.output, summary, tables, timelines, fps_all)
    return report.json_ready(summary)
