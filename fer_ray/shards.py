"""Per-video shards with done markers: how every job makes its writes atomic and its reruns resumable.

A table (faces, predictions, logits) lives under `<output>/<table>/`:
  <table>/<video_key>/part-<k>.parquet   deterministic names, so a rerun overwrites instead of duplicating
  <table>/_done/<video_key>.json         written last; lists the parts. A video is complete only then.
Readers take exactly the parts a done marker lists, so a crashed run's partial parts are never read.
Failures are one JSON object per work item under `<output>/failures/<video_key>.json`; a later successful
run of that item deletes it.
"""

from __future__ import annotations

import pyarrow as pa

from fer_ray import schema, storage

DONE_DIR = "_done"
FAILURES = "failures"


def part_uri(output: str, table: str, video_id: str, part: int) -> str:
    return storage.join(output, table, storage.safe_key(video_id), f"part-{part:05d}.parquet")


def done_uri(output: str, table: str, video_id: str) -> str:
    return storage.join(output, table, DONE_DIR, storage.safe_key(video_id) + ".json")


def failure_uri(output: str, video_id: str) -> str:
    return storage.join(output, FAILURES, storage.safe_key(video_id) + ".json")


def write_part(output: str, table: str, video_id: str, part: int, rows: pa.Table) -> str:
    uri = part_uri(output, table, video_id, part)
    storage.write_parquet(uri, rows)
    return uri


def mark_done(output: str, table: str, video_id: str, parts: list[str], **info) -> None:
    """Declare a video complete: records its part names (relative to the table) and any summary info."""
    prefix = storage.join(output, table) + "/"
    relative = [p[len(prefix):] if p.startswith(prefix) else p for p in parts]
    storage.write_json(done_uri(output, table, video_id), {schema.VIDEO_ID: video_id, "parts": relative, **info})
    failure = failure_uri(output, video_id)
    if storage.exists(failure):
        storage.delete(failure)


def done_markers(output: str, table: str) -> dict[str, dict]:
    """video_id -> done-marker contents for every complete video of a table."""
    markers = {}
    for uri in storage.list_files(storage.join(output, table, DONE_DIR), ".json", recursive=False):
        info = storage.read_json(uri)
        markers[info[schema.VIDEO_ID]] = info
    return markers


def is_done(output: str, table: str, video_id: str) -> bool:
    return storage.exists(done_uri(output, table, video_id))


def complete_parts(output: str, table: str, video_ids: list[str] | None = None) -> list[str]:
    """URIs of every part of every complete video (optionally only some videos), sorted."""
    markers = done_markers(output, table)
    wanted = markers if video_ids is None else {v: markers[v] for v in video_ids if v in markers}
    base = storage.join(output, table)
    return sorted(storage.join(base, part) for info in wanted.values() for part in info["parts"])


def read_table(output: str, table: str, table_schema: pa.Schema, columns: list[str] | None = None) -> pa.Table:
    """All complete rows of a table in one Arrow table (for small outputs, tests and reports)."""
    return storage.read_parquet_many(complete_parts(output, table), columns=columns, schema=table_schema)


def write_failure(output: str, video_id: str, uri: str, stage: str, error: str) -> None:
    storage.write_json(failure_uri(output, video_id), {
        schema.VIDEO_ID: video_id, schema.URI: uri, schema.STAGE: stage, schema.ERROR: error,
    })


def read_failures(output: str) -> pa.Table:
    rows = [storage.read_json(u) for u in storage.list_files(storage.join(output, FAILURES), ".json", recursive=False)]
    if not rows:
        return schema.FAILURE_SCHEMA.empty_table()
    return pa.Table.from_pylist(rows, schema=schema.FAILURE_SCHEMA)
