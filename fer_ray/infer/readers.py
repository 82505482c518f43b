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

__all__ = ["read_run_table", "read_predictions", "read_logits", "sorted_frames", "video_labels", "scored_tracks",
           "scored_rows", "scored_table", "named_subjects", "frame_tracks", "table_tracks"]


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


def frame_tracks(frame: pd.DataFrame) -> pd.Series:
    """Each row's face track (schema.TRACK_ID): 0 where the table has none (written before track ids existed
    or a null)."""
    if schema.TRACK_ID not in frame:
        return pd.Series(0, frame.index, dtype=np.int64)
    return frame[schema.TRACK_ID].fillna(0).astype(np.int64)


def table_tracks(table: pa.Table) -> np.ndarray:
    """`frame_tracks` for an Arrow table."""
    if schema.TRACK_ID not in table.column_names:
        return np.zeros(table.num_rows, dtype=np.int64)
    return table.column(schema.TRACK_ID).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)


def scored_tracks(frame: pd.DataFrame, subjects: dict[str, dict[str, int]] | None = None
                  ) -> dict[tuple[str, int], str]:
    """(video, track) -> the id it is scored under, against the label file of that id.

    A video whose predictions name subjects (annotate's done marker: {"left": 0, "right": 1}, from a
    `<video>_left.txt` / `_right.txt` pair or --subjects) scores each named track as `<video>_<subject>`.
    Any other video scores one track as `<video>`: its only one or, with several, the one with the most
    frames with a face (ties: the lower id); its other tracks are annotated but not scored."""
    if frame.empty:
        return {}
    tracks = frame_tracks(frame)
    found = frame[schema.FACE_FOUND].astype(bool) if schema.FACE_FOUND in frame else pd.Series(True, frame.index)
    counts = pd.DataFrame({"v": frame[schema.VIDEO_ID], "t": tracks, "f": found}).groupby(["v", "t"])["f"].sum()
    out: dict[tuple[str, int], str] = {}
    best: dict[str, tuple[int, int]] = {}
    for (video, track), n in counts.sort_index().items():
        video, track = str(video), int(track)
        named = (subjects or {}).get(video)
        if named:
            out.update({(video, int(t)): f"{video}_{name}" for name, t in named.items() if int(t) == track})
        elif video not in best or n > best[video][1]:
            best[video] = (track, int(n))
    out.update({(video, track): video for video, (track, _) in best.items()})
    return out


def scored_rows(frame: pd.DataFrame, units: dict[tuple[str, int], str]) -> pd.DataFrame:
    """The rows `scored_tracks` picked, their video id replaced by the id they are scored under."""
    if frame.empty:
        return frame
    keys = pd.Series(list(zip(frame[schema.VIDEO_ID].astype(str), frame_tracks(frame))), index=frame.index)
    unit = keys.map(units)
    out = frame[unit.notna()].copy()
    out[schema.VIDEO_ID] = unit[unit.notna()]
    return out.reset_index(drop=True)


def scored_table(table: pa.Table, units: dict[tuple[str, int], str]) -> pa.Table:
    """`scored_rows` for an Arrow table (logits: kept in Arrow, they are the large table)."""
    videos = table.column(schema.VIDEO_ID).to_numpy(zero_copy_only=False)
    unit = pd.Series(list(zip(videos.astype(str), table_tracks(table)))).map(units)
    keep = unit.notna().to_numpy()
    out = table.filter(pa.array(keep))
    column = out.schema.get_field_index(schema.VIDEO_ID)
    return out.set_column(column, schema.VIDEO_ID, pa.array(unit[keep].tolist(), pa.string()))


def named_subjects(run: str) -> dict[str, dict[str, int]]:
    """video -> {subject: track} from a run's predictions done markers (videos labelled per person)."""
    return {v: m["subjects"] for v, m in shards.done_markers(run, schema.PREDICTIONS_TABLE).items() if m.get("subjects")}
