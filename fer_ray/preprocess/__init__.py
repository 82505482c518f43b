"""Preprocessing stages: videos and labelled image sets -> aligned face crops, one row per decoded frame.

For each work item (fer_ray.inputs) the stages write `faces/<key>/part-<k>.parquet` (schema.FACES_SCHEMA,
one part per decoded chunk for videos, one part per image batch) and then `faces/_done/<key>.json`. Every
decoded frame is a row: frames without a face have empty face bytes, null bbox/landmarks/det_score and
reason "no_face". Any error (unreadable video, bad label file, label count != frame count) becomes a failure
record and a "failed" summary row; no stage raises. They run without Ray too (tests, benchmarks, the
notebook API):

    stage = PreprocessStage(FacesConfig(max_frames=8), output="/tmp/out")
    row = stage.run_item(item)   # a work item from fer_ray.inputs.discover

- config.py: `FacesConfig` (frame selection, crops, actors) and `DetectorConfig`
- items.py: work items from batches, summary rows, the labelled video
- faces.py: `FaceRows`, detect + align + encode -> face rows (one per actor, shared by the stages)
- stages.py: `PreprocessStage` (fused), `DecodeStage` -> `DetectStage` (split), each declaring its step
- collector.py: `ChunkCollector`, the split path's done markers, written by the driver

The preprocess job (config, run, summary) is fer_ray.jobs.preprocess.
"""

from fer_ray.preprocess.collector import ChunkCollector
from fer_ray.preprocess.config import DetectorConfig, FacesConfig
from fer_ray.preprocess.items import (
    FACES,
    STATUS_DONE,
    STATUS_FAILED,
    STATUS_SKIPPED,
    SUMMARY_COLUMNS,
    LabelMismatchError,
)
from fer_ray.preprocess.stages import (
    CHUNK,
    END,
    FAILED_ROW,
    SKIPPED_ROW,
    DecodeStage,
    DetectStage,
    PreprocessStage,
    skip_finished,
)

__all__ = [
    "CHUNK", "END", "FACES", "FAILED_ROW", "SKIPPED_ROW", "STATUS_DONE", "STATUS_FAILED", "STATUS_SKIPPED",
    "SUMMARY_COLUMNS", "ChunkCollector", "DecodeStage", "DetectStage", "DetectorConfig", "FacesConfig",
    "LabelMismatchError", "PreprocessStage", "skip_finished",
]
