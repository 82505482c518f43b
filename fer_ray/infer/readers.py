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

__all__ = ["read_run_table", "read_predictions", "read_logits", "sorted_frames", "video_labels"]


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
    """The table as pandas, sorted by video and frame (readers hand rows back in any order)."""
    frame = table.to_pandas()
    return frame.sort_values([schema.VIDEO_ID, schema.FRAME_INDEX], kind="stable").reset_index(drop=True)


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
