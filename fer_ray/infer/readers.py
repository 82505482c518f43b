"""Reading a run's tables back: predictions and logits, and one video's labels for every frame.

`<run>/<table>/` (schema.PREDICTIONS_TABLE or schema.LOGITS_TABLE). When done markers exist
(`<table>/_done/*.json`, see fer_ray.shards) exactly the parts they list are read, so a crashed run's
partial files are skipped; otherwise every Parquet file under `<table>/` is read.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from fer_ray import schema, shards, storage
from fer_ray.infer import fill

__all__ = ["read_run_table", "read_predictions", "read_logits", "sorted_frames", "video_labels", "main_tracks",
           "scored_rows", "scored_table"]


def read_run_table(run: str, table: str, table_schema: pa.Schema) -> pa.Table:
    """All rows of `<run>/<table>/`: the parts done markers list, or every Parquet file when there are none."""
    if shards.done_markers(run, table):
        return shards.read_table(run, table, table_schema)
    base = storage.join(run, table)
    done_prefix = storage.join(base, shards.DONE_DIR) + "/"
    parts = [u for u in storage.list_files(base, ".parquet") if not u.startswith(done_prefix)]
    if not parts:
        raise FileNotFoundError(f"no Parquet files under {base}")
    return storage.read_parquet_many(parts, schema=table_schema)


def read_predictions(run: str) -> pa.Table:
    return read_run_table(run, schema.PREDICTIONS_TABLE, schema.PREDICTIONS_SCHEMA)


def read_logits(run: str) -> pa.Table:
    return read_run_table(run, schema.LOGITS_TABLE, schema.LOGITS_SCHEMA)


def sorted_frames(table: pa.Table) -> pd.DataFrame:
    """The table as pandas, sorted by video, face track and frame (readers hand rows back in any order)."""
    frame = table.to_pandas()
    keys = [schema.VIDEO_ID, schema.TRACK_ID, schema.FRAME_INDEX] if schema.TRACK_ID in frame else \
        [schema.VIDEO_ID, schema.FRAME_INDEX]
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)


def video_labels(rows: pd.DataFrame, num_frames: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One video's label for every frame 0..num_frames-1 (default: last frame + 1) and the filled mask.

    Frames the predictions do not cover are filled from the nearest covered frame; frames they cover keep
    their label (the pipeline already filled no-face frames and flagged them in schema.FILLED).
    """
    frames = rows[schema.FRAME_INDEX].to_numpy(dtype=np.int64)
    if num_frames is None:
        num_frames = int(frames.max()) + 1 if frames.size else 0
    values, covered = fill.expand(frames, rows[schema.LABEL].to_numpy(dtype=np.int64), num_frames)
    return fill.fill_gaps(values, covered)


def main_tracks(frame: pd.DataFrame) -> dict[str, int]:
    """video -> the face track its one label file is scored against: its only track or, in a video with
    several, the one with the most frames with a face (ties: the lower id). Until left/right subject names
    pair label files with tracks, a video's other tracks are annotated but not scored."""
    if schema.TRACK_ID not in frame or frame.empty:
        return {}
    tracks = frame[schema.TRACK_ID].fillna(0).astype(np.int64)
    found = frame[schema.FACE_FOUND].astype(bool) if schema.FACE_FOUND in frame else pd.Series(True, frame.index)
    counts = pd.DataFrame({"v": frame[schema.VIDEO_ID], "t": tracks, "f": found}).groupby(["v", "t"])["f"].sum()
    out = {}
    for (video, track), n in counts.sort_index().items():
        if video not in out or n > counts[(video, out[video])]:
            out[str(video)] = int(track)
    return out


def scored_rows(frame: pd.DataFrame, tracks: dict[str, int]) -> pd.DataFrame:
    """The rows of each video's scored track (`main_tracks`); a table without track ids as it is."""
    if schema.TRACK_ID not in frame or not tracks:
        return frame
    wanted = frame[schema.VIDEO_ID].map(tracks)
    keep = frame[schema.TRACK_ID].fillna(0).astype(np.int64) == wanted
    return frame[keep.fillna(False)].reset_index(drop=True)


def scored_table(table: pa.Table, tracks: dict[str, int]) -> pa.Table:
    """`scored_rows` for an Arrow table (logits: kept in Arrow, they are the large table)."""
    import pyarrow.compute as pc

    if schema.TRACK_ID not in table.column_names:
        return table
    column = pc.fill_null(table.column(schema.TRACK_ID), 0)
    if not pc.any(pc.not_equal(column, 0)).as_py():  # one face stream per video
        return table
    videos = table.column(schema.VIDEO_ID).to_numpy(zero_copy_only=False)
    wanted = pd.Series(videos).map(tracks).fillna(-2).to_numpy(np.int64)
    return table.filter(pa.array(column.to_numpy(zero_copy_only=False) == wanted))
