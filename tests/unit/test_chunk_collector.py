"""ChunkCollector: the driver side of the split decode -> detect path, fed rows in any order."""

from __future__ import annotations

import pyarrow as pa

from fer_ray import schema, shards, storage
from fer_ray.preprocess import CHUNK, END, FACES, FAILED_ROW, SKIPPED_ROW, ChunkCollector


def row(video_id: str, status: str, chunk: int = -1, count: int = 0, faces: int = 0, part: str = "",
        error: str = "") -> dict:
    return {schema.VIDEO_ID: video_id, schema.URI: f"/videos/{video_id}.mp4", "fingerprint": "fp",
            "status": status, "chunk": chunk, "count": count, "faces": faces, "part": part, "error": error,
            "num_frames": 100, "seconds": 0.5}


def written_part(output: str, video_id: str, chunk: int) -> str:
    return shards.write_part(output, FACES, video_id, chunk, pa.table({schema.VIDEO_ID: [video_id]}))


def test_done_marker_only_when_end_row_and_every_chunk_are_in(tmp_path):
    output = str(tmp_path)
    collector = ChunkCollector(output)
    parts = [written_part(output, "a", k) for k in range(3)]
    # out of order: chunk 2, the end row, chunk 0, then chunk 1 settles the video
    assert collector.add(row("a", CHUNK, 2, count=10, faces=9, part=parts[2])) is None
    assert collector.add(row("a", END, count=3)) is None
    assert collector.add(row("a", CHUNK, 0, count=32, faces=32, part=parts[0])) is None
    assert not shards.is_done(output, FACES, "a")
    summary = collector.add(row("a", CHUNK, 1, count=32, faces=30, part=parts[1]))
    assert summary["status"] == "done" and (summary["frames"], summary["faces"]) == (74, 71)
    marker = shards.done_markers(output, FACES)["a"]
    assert marker["parts"] == [p.split("/faces/", 1)[1] for p in parts]  # in chunk order, relative
    assert (marker["frames"], marker["faces"], marker["fingerprint"]) == (74, 71, "fp")
    assert collector.add(row("a", CHUNK, 1, count=32, part=parts[1])) is None  # a late duplicate is ignored


def test_failed_and_skipped_rows_settle_at_once(tmp_path):
    output = str(tmp_path)
    collector = ChunkCollector(output)
    assert collector.add(row("b", CHUNK, 0, count=32, part=written_part(output, "b", 0))) is None
    failed = collector.add(row("b", FAILED_ROW, error="tw.mp4: truncated or corrupt video"))
    assert failed["status"] == "failed" and "truncated" in failed["error"]
    assert not shards.is_done(output, FACES, "b")
    assert shards.read_failures(output).to_pylist()[0][schema.ERROR] == "tw.mp4: truncated or corrupt video"
    assert collector.add(row("b", END, count=2)) is None  # rows after the failure change nothing
    skipped = collector.add(row("c", SKIPPED_ROW, count=40, faces=38))
    assert (skipped["status"], skipped["frames"], skipped["faces"]) == ("skipped", 40, 38)


def test_a_stream_that_ends_incomplete_fails_the_video(tmp_path):
    output = str(tmp_path)
    collector = ChunkCollector(output)
    collector.add(row("d", END, count=2))
    collector.add(row("d", CHUNK, 0, count=32, part=written_part(output, "d", 0)))
    [summary] = collector.unsettled()
    assert summary["status"] == "failed" and "incomplete" in summary["error"]
    assert not shards.is_done(output, FACES, "d") and storage.exists(shards.failure_uri(output, "d"))
