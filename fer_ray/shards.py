"""Per-video shards with done markers: how every job makes its writes atomic, its redos safe and its reruns
resumable.

A table (faces, predictions, logits) lives under `<output>/<table>/`:
  <table>/<video_key>/part-<k>.parquet          a video's first attempt
  <table>/<video_key>/part-<attempt>-<k>.parquet a redo (new input content, settings or model version)
  <table>/_done/<video_key>.json                written last; lists the parts. A video is complete only then.
Readers take exactly the parts a done marker lists, so a crashed run's partial parts are never read.

Redo safety: a redo never writes over the parts the current done marker lists. Its parts carry an attempt
id derived from the new fingerprint (`attempt_of`), so a retried task of the same redo overwrites its own
parts instead of duplicating them; the done marker is switched to the new parts in one atomic write (the
old complete version stays readable until then, only the new one after), and only then are the parts it
no longer lists deleted. A crash before that cleanup leaves unreferenced files only, which the next run's
`sweep` deletes. So an interrupted redo never leaves a video that looks complete with missing or mixed
parts.

Failures are one JSON object per work item under `<output>/failures/<video_key>.json` with an `attempts`
count (how many runs in a row failed on the same input) and the input's `fingerprint`; a later successful
run of that item deletes it.
"""

from __future__ import annotations

import hashlib
import posixpath

import pyarrow as pa

from fer_ray import schema, storage

DONE_DIR = schema.DONE_DIR
FAILURES = schema.FAILURES_DIR


def attempt_of(fingerprint: str) -> str:
    """A short deterministic attempt id for a fingerprint (settings + input, or model version + faces)."""
    return hashlib.sha1(str(fingerprint).encode("utf-8")).hexdigest()[:8]


def next_attempt(previous: dict | None, fingerprint: str) -> str:
    """The attempt id a (re)do writes its parts under: "" (plain names) for a video without a done marker,
    else the new fingerprint's id, or its alternate when the current marker already lists that id's parts
    (a redo to the same fingerprint): never a name the current marker lists."""
    if previous is None:
        return ""
    attempt = attempt_of(fingerprint)
    if any(posixpath.basename(p).startswith(f"part-{attempt}-") for p in previous.get("parts", [])):
        attempt = attempt_of(f"{fingerprint}+")
    return attempt


def part_uri(output: str, table: str, video_id: str, part: int, attempt: str = "") -> str:
    name = f"part-{attempt}-{part:05d}.parquet" if attempt else f"part-{part:05d}.parquet"
    return storage.join(output, table, storage.safe_key(video_id), name)


def done_uri(output: str, table: str, video_id: str) -> str:
    return storage.join(output, table, DONE_DIR, storage.safe_key(video_id) + ".json")


def failure_uri(output: str, video_id: str) -> str:
    return storage.join(output, FAILURES, storage.safe_key(video_id) + ".json")


def write_part(output: str, table: str, video_id: str, part: int, rows: pa.Table, attempt: str = "") -> str:
    uri = part_uri(output, table, video_id, part, attempt)
    storage.write_parquet(uri, rows)
    return uri


def read_marker(output: str, table: str, video_id: str) -> dict | None:
    """A video's done marker, or None when it is absent or unreadable (the video is then redone)."""
    try:
        return storage.read_json(done_uri(output, table, video_id))
    except (FileNotFoundError, ValueError, OSError):
        return None


def has_tracks(marker: dict | None) -> bool:
    """A faces done marker written in every-face mode lists the video's tracks: only then do its parts hold
    track ids other than 0 (one-face parts, and parts from before track ids existed, are track 0)."""
    return bool(marker) and "tracks" in marker


def mark_done(output: str, table: str, video_id: str, parts: list[str], **info) -> None:
    """Declare a video complete: records its part names (relative to the table) and any summary info.

    The marker write is the switch from the previous attempt to this one; the previous attempt's parts are
    deleted after it, and a stale failure record with them."""
    prefix = storage.join(output, table) + "/"
    relative = [p[len(prefix):] if p.startswith(prefix) else p for p in parts]
    storage.write_json(done_uri(output, table, video_id), {schema.VIDEO_ID: video_id, "parts": relative, **info})
    failure = failure_uri(output, video_id)
    if storage.exists(failure):
        storage.delete(failure)
    _delete_unlisted(output, table, storage.join(output, table, storage.safe_key(video_id)), relative)


def sweep(output: str, table: str) -> int:
    """Delete every part no done marker lists (what a crash between a marker switch and its cleanup, or in
    the middle of an attempt, left behind); returns how many. Run it before a job writes, never during."""
    base = storage.join(output, table)
    listed = [p for info in done_markers(output, table).values() for p in info["parts"]]
    return _delete_unlisted(output, table, base, listed)


def _delete_unlisted(output: str, table: str, under: str, listed: list[str]) -> int:
    """Delete the `<key>/part-*.parquet` files under `under` (the table or one video's folder) that `listed`
    (part names relative to the table) does not hold; returns how many."""
    table_path = storage.filesystem(storage.join(output, table))[1].rstrip("/") + "/"
    keep = set(listed)
    count = 0
    for uri in storage.list_files(under, ".parquet"):
        relative = storage.filesystem(uri)[1][len(table_path):]
        key, _, name = relative.partition("/")
        if key == DONE_DIR or "/" in name or not name.startswith("part-") or relative in keep:
            continue
        storage.delete(uri)
        count += 1
    return count


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


def read_failure(output: str, video_id: str) -> dict | None:
    try:
        return storage.read_json(failure_uri(output, video_id))
    except (FileNotFoundError, ValueError, OSError):
        return None


def write_failure(output: str, video_id: str, uri: str, stage: str, error: str, fingerprint: str = "") -> int:
    """Record a failed work item; returns its attempt count: one more than the previous record's when that
    one failed on the same input (same fingerprint), else 1."""
    previous = read_failure(output, video_id) or {}
    same = previous.get(schema.FINGERPRINT, "") == (fingerprint or "")
    attempts = int(previous.get(schema.ATTEMPTS) or 1) + 1 if previous and same else 1
    storage.write_json(failure_uri(output, video_id), {
        schema.VIDEO_ID: video_id, schema.URI: uri, schema.STAGE: stage, schema.ERROR: error,
        schema.ATTEMPTS: attempts, schema.FINGERPRINT: fingerprint or "",
    })
    return attempts


def read_failures(output: str) -> pa.Table:
    rows = [storage.read_json(u) for u in storage.list_files(storage.join(output, FAILURES), ".json", recursive=False)]
    if not rows:
        return schema.FAILURE_SCHEMA.empty_table()
    # records written before attempts were counted hold one attempt each
    rows = [{**r, schema.ATTEMPTS: int(r.get(schema.ATTEMPTS) or 1), schema.FINGERPRINT: r.get(schema.FINGERPRINT) or ""}
            for r in rows]
    return pa.Table.from_pylist(rows, schema=schema.FAILURE_SCHEMA)
