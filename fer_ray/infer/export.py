"""Exporting a run's predictions as CSV, Parquet or ABAW txt (jobs/export.py).

Formats (`export_predictions`), all written through fer_ray.storage (local path or s3://):
- csv:     `<output>/<video_key>.csv`, one per video, frames in order; the 8 ABAW probabilities become
           columns `probs_<ClassName>`; coarse/negative probabilities stay in the Parquet export only.
- parquet: `<output>/predictions.parquet`, one combined file sorted by video and frame.
- abaw:    `<output>/<video_key>.txt` in the Aff-Wild2 EXPR format (labels.write_expr), one label for every
           frame 0..last; frames missing from the predictions are filled from the nearest frame (fill.py).
`<video_key>` is storage.safe_key(video_id), which is the video id itself for ABAW names.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from fer_ray import labels, schema, storage
from fer_ray.infer.postprocess import submission_names
from fer_ray.infer.readers import frame_tracks, named_subjects, read_predictions, sorted_frames, video_labels

__all__ = ["FORMATS", "ExportConfig", "write_csv", "write_parquet", "write_abaw", "export_predictions"]

FORMATS = ("csv", "abaw", "parquet")


@dataclass
class ExportConfig:
    """jobs/export.py: where the predictions are, which format, where the files go."""

    predictions: str
    output: str
    format: Literal["csv", "abaw", "parquet"] = "abaw"

    def validate(self) -> None:
        if not self.predictions or not self.output:
            raise ValueError("export needs both predictions and output URIs")


def _csv_frame(rows: pd.DataFrame) -> pd.DataFrame:
    keep = [c for c in (schema.VIDEO_ID, schema.FRAME_INDEX, schema.TIMESTAMP, schema.LABEL, schema.LABEL_NAME,
                        schema.FACE_FOUND, schema.FILLED, schema.SYSTEM, schema.MODEL_VERSION, schema.TRACK_ID,
                        schema.DECISION)
            if c in rows]
    out = rows[keep].reset_index(drop=True)
    probs = np.stack(rows[schema.PROBS].to_numpy()) if len(rows) else np.zeros((0, labels.NUM_CLASSES))
    for k, name in enumerate(labels.ABAW_CLASSES):
        out[f"{schema.PROBS}_{name}"] = probs[:, k]
    return out


def write_csv(frame: pd.DataFrame, output: str) -> list[str]:
    written = []
    for video_id, rows in frame.groupby(schema.VIDEO_ID, sort=True):
        buffer = io.StringIO()
        _csv_frame(rows).to_csv(buffer, index=False)
        uri = storage.join(output, storage.safe_key(video_id) + ".csv")
        storage.write_text(uri, buffer.getvalue())
        written.append(uri)
    return written


def write_parquet(table: pa.Table, output: str) -> list[str]:
    keys = [schema.VIDEO_ID, schema.TRACK_ID, schema.FRAME_INDEX] if schema.TRACK_ID in table.column_names \
        else [schema.VIDEO_ID, schema.FRAME_INDEX]
    order = pc.sort_indices(table, [(key, "ascending") for key in keys])
    uri = storage.join(output, "predictions.parquet")
    storage.write_parquet(uri, table.take(order))
    return [uri]


def write_abaw(frame: pd.DataFrame, output: str, num_frames: dict[str, int] | None = None,
               subjects: dict[str, dict[str, int]] | None = None) -> list[str]:
    """One EXPR txt per video, or per face track of a video with several, named as the annotate job names
    them (`<key>_left.txt` for a named subject, else `<key>_track<id>.txt`); num_frames (video -> frame
    count) pads past the last predicted frame."""
    written = []
    tracks = frame_tracks(frame)
    for video_id, rows in frame.groupby(schema.VIDEO_ID, sort=True):
        names = {int(t): name for name, t in (subjects or {}).get(video_id, {}).items()}
        files = submission_names(video_id, sorted(set(tracks[rows.index].tolist())), names)
        for track, track_rows in rows.groupby(tracks[rows.index], sort=True):
            values, _ = video_labels(track_rows, (num_frames or {}).get(video_id))
            uri = storage.join(output, files[int(track)])
            labels.write_expr(uri, values)
            written.append(uri)
    return written


def export_predictions(predictions: str, fmt: str, output: str) -> list[str]:
    """Export a run's predictions in one format; returns the URIs written."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    table = read_predictions(predictions)
    if fmt == "parquet":
        return write_parquet(table, output)
    frame = sorted_frames(table)
    return write_csv(frame, output) if fmt == "csv" else write_abaw(frame, output,
                                                                    subjects=named_subjects(predictions))
