"""Old import path of fer_ray.infer.readers (reading a run's tables) and fer_ray.infer.export (CSV, Parquet,
ABAW txt). jobs/export.py still imports from here; new code imports those two modules."""

from fer_ray import schema
from fer_ray.infer.export import (
    FORMATS,
    ExportConfig,
    export_predictions,
    write_abaw,
    write_csv,
    write_parquet,
)
from fer_ray.infer.readers import read_logits, read_predictions, read_run_table, sorted_frames, video_labels

__all__ = [
    "PREDICTIONS_TABLE", "LOGITS_TABLE", "FORMATS", "ExportConfig", "read_run_table", "read_predictions",
    "read_logits", "sorted_frames", "video_labels", "write_csv", "write_parquet", "write_abaw",
    "export_predictions",
]

PREDICTIONS_TABLE, LOGITS_TABLE = schema.PREDICTIONS_TABLE, schema.LOGITS_TABLE
