"""Export round trips: ABAW txt parses back with labels.parse_expr; CSV and Parquet keep every row."""

import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from fer_ray import labels, schema, shards, storage
from fer_ray.infer import export, readers


def predictions_table(video_id: str, frame_labels, frames=None) -> pa.Table:
    """A predictions table in schema.PREDICTIONS_SCHEMA for one video (one-hot probs of the label)."""
    frame_labels = np.asarray(frame_labels, dtype=np.int64)
    frames = np.arange(len(frame_labels)) if frames is None else np.asarray(frames)
    probs = np.eye(labels.NUM_CLASSES, dtype=np.float32)[frame_labels]
    n = len(frame_labels)
    return pa.table({
        schema.VIDEO_ID: [video_id] * n,
        schema.FRAME_INDEX: frames.astype(np.int64),
        schema.TIMESTAMP: frames / 30.0,
        schema.LABEL: frame_labels,
        schema.LABEL_NAME: [labels.ABAW_CLASSES[k] for k in frame_labels],
        schema.PROBS: list(probs),
        schema.COARSE_PROBS: [[0.2] * 5] * n,
        schema.NEGATIVE_PROBS: [[0.25] * 4] * n,
        schema.FACE_FOUND: [True] * n,
        schema.FILLED: [False] * n,
        schema.SYSTEM: ["cfc_sp"] * n,
        schema.MODEL_VERSION: ["test"] * n,
        schema.TRACK_ID: [0] * n,
        schema.DECISION: [None] * n,
    }, schema=schema.PREDICTIONS_SCHEMA)


def write_run(run: str, videos: dict[str, pa.Table]) -> None:
    """Write predictions the way the pipeline does: per-video parts, then a done marker."""
    for video_id, table in videos.items():
        part = shards.write_part(run, schema.PREDICTIONS_TABLE, video_id, 0, table)
        shards.mark_done(run, schema.PREDICTIONS_TABLE, video_id, [part])


RUN = {
    "10-60-1280x720_right": predictions_table("10-60-1280x720_right", [0, 0, 4, 4, 4, 6, 1]),
    # frames 2 and 3 missing from the predictions: filled from frames 1 and 4
    "video 2/odd": predictions_table("video 2/odd", [5, 5, 7, 7], frames=[0, 1, 4, 5]),
}


@pytest.fixture
def run(tmp_path):
    write_run(str(tmp_path / "run"), RUN)
    # a partial part of a crashed run that no done marker lists: must not be read
    shards.write_part(str(tmp_path / "run"), schema.PREDICTIONS_TABLE, "crashed", 0, predictions_table("crashed", [1]))
    return str(tmp_path / "run")


def test_abaw_round_trip(run, tmp_path):
    out = str(tmp_path / "abaw")
    written = export.export_predictions(run, "abaw", out)
    assert len(written) == 2
    first = labels.parse_expr(storage.read_bytes(storage.join(out, "10-60-1280x720_right.txt")).decode())
    assert first.tolist() == [0, 0, 4, 4, 4, 6, 1]
    second = labels.parse_expr(storage.read_bytes(storage.join(out, storage.safe_key("video 2/odd") + ".txt")).decode())
    assert second.tolist() == [5, 5, 5, 7, 7, 7]


def test_csv_per_video(run, tmp_path):
    out = str(tmp_path / "csv")
    written = export.export_predictions(run, "csv", out)
    assert [storage.basename(u) for u in written] == ["10-60-1280x720_right.csv", storage.safe_key("video 2/odd") + ".csv"]
    frame = pd.read_csv(io.BytesIO(storage.read_bytes(written[0])))
    assert frame[schema.LABEL].tolist() == [0, 0, 4, 4, 4, 6, 1]
    prob_columns = [f"{schema.PROBS}_{name}" for name in labels.ABAW_CLASSES]
    np.testing.assert_allclose(frame[prob_columns].to_numpy().argmax(axis=1), frame[schema.LABEL])


def test_parquet_combined(run, tmp_path):
    out = str(tmp_path / "pq")
    [uri] = export.export_predictions(run, "parquet", out)
    table = storage.read_parquet(uri)
    assert table.num_rows == 11
    assert table.schema.equals(schema.PREDICTIONS_SCHEMA)
    assert table.column(schema.VIDEO_ID).to_pylist() == ["10-60-1280x720_right"] * 7 + ["video 2/odd"] * 4


def test_reads_plain_parquet_without_markers(tmp_path):
    run = str(tmp_path / "plain")
    storage.write_parquet(storage.join(run, "predictions", "a.parquet"), predictions_table("a", [3, 3]))
    assert readers.read_predictions(run).num_rows == 2
    with pytest.raises(FileNotFoundError):
        readers.read_predictions(str(tmp_path / "empty"))


def test_unknown_format(run, tmp_path):
    with pytest.raises(ValueError, match="csv"):
        export.export_predictions(run, "xlsx", str(tmp_path / "x"))


def test_export_job_cli(run, tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "jobs" / "export.py"
    spec = importlib.util.spec_from_file_location("job_export", path)
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    out = str(tmp_path / "cli")
    assert job.main(["--predictions", run, "--format", "abaw", "--output", out]) == 0
    text = storage.read_bytes(storage.join(out, "10-60-1280x720_right.txt")).decode()
    assert labels.parse_expr(text).tolist() == [0, 0, 4, 4, 4, 6, 1]
    with pytest.raises(SystemExit):
        job.main(["--predictions", run, "--format", "xlsx", "--output", out])
