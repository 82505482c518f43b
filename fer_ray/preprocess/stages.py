"""The face stages, each a callable class that loads its detector once per actor and never raises:
a failure becomes a failure record (`failures/<key>.json`) and a "failed" summary row.

- `PreprocessStage` (fused): one work item per call; decodes, detects, aligns and writes it, then its done
  marker. Image work items always take this path.
- With `decode_workers > 0` a video goes through two actor pools instead: `DecodeStage` (CPU) turns it into
  chunk rows, `DetectStage` (the detector's device) detects, aligns and writes one part per chunk, and
  `ChunkCollector` (the driver) writes the done marker once every chunk of the video is in. Decoding then
  overlaps detection and GPU nodes never decode. Each chunk gets a fresh tracker, so the full-detection
  schedule restarts at every chunk (keep chunk_size a multiple of track_every to keep the fused path's
  schedule); between chunks the one-face rule cannot prefer the face followed so far.

Each stage declares its step (`step(config, output, items)`: resources, batch size, actor count), which
fer_ray.raydata runs. Reruns are safe: part names are deterministic and the done marker is written last;
an item whose marker has the same fingerprint is skipped, a redo writes under a new attempt id
(fer_ray.shards).
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from contextlib import ExitStack

import numpy as np
import pyarrow as pa

from fer_ray import schema, shards, storage
from fer_ray.inputs import MEMBERS, item_fingerprint
from fer_ray.plan import Resources, Step
from fer_ray.preprocess.config import FacesConfig
from fer_ray.preprocess.faces import FaceRows, tracked_text
from fer_ray.preprocess.items import (
    FACES,
    INPUT_ERRORS,
    STAGE_NAME,
    STATUS_DONE,
    STATUS_SKIPPED,
    SUMMARY_COLUMNS,
    LabelledVideo,
    PhaseClock,
    batch_items,
    error_text,
    load_image,
    plain,
    summary_row,
)
from fer_ray.video import Chunk

log = logging.getLogger(__name__)


def validated(config: FacesConfig | dict) -> FacesConfig:
    """The stage's config, built from a dict when one is passed, and validated (as face settings only: a
    job config that extends them may leave its own fields empty here)."""
    from fer_ray import config as config_module

    if isinstance(config, dict):
        config = config_module.from_dict(FacesConfig, config)
    FacesConfig.validate(config)
    return config


def _detector_actor(config: FacesConfig) -> FacesConfig:
    import torch

    config = validated(config)
    torch.set_num_threads(max(1, int(config.worker_cpus)))
    return config


def _detector_resources(config: FacesConfig, items: int, batch_format: str) -> Resources:
    return Resources(num_cpus=config.worker_cpus, num_gpus=config.worker_gpus, batch_format=batch_format,
                     concurrency=max(1, min(config.num_workers, items)), eager=True)


def done_fingerprint(source: str, settings: str) -> str:
    """What an item's faces done marker records: its input's fingerprint (item_fingerprint) and the face
    settings' (FacesConfig.fingerprint)."""
    return f"{source}-{settings}"


def is_finished(previous: dict | None, fingerprint: str) -> bool:
    """Whether an item's done marker (`previous`, None when absent) says it is done with this fingerprint."""
    return previous is not None and previous.get("fingerprint") == fingerprint


def skipped_values(previous: dict) -> dict:
    """A skipped item's summary values, from its done marker."""
    return {"status": STATUS_SKIPPED, "frames": int(previous.get("frames", 0)),
            "faces": int(previous.get("faces", 0)), "tracks": tracks_text(previous)}


def skip_finished(items: list[dict], config: FacesConfig, output: str) -> tuple[list[dict], list[dict]]:
    """(items still to run, summary rows of the rest): an item whose done marker already has its fingerprint
    is skipped here, on the driver, as the stages would skip it, so a rerun over finished work starts no
    actor. Markers are read by a few threads (one request each on S3). An item whose check fails goes on to
    the stages, which record the failure with its reason."""
    from concurrent.futures import ThreadPoolExecutor

    settings = validated(config).fingerprint()

    def skipped(item: dict) -> dict | None:
        try:
            previous = shards.read_marker(output, FACES, str(item.get(schema.VIDEO_ID) or ""))
            if not is_finished(previous, done_fingerprint(item_fingerprint(item), settings)):
                return None
        except Exception:  # noqa: BLE001 - the stage redoes the check and records what went wrong
            return None
        return summary_row(item) | skipped_values(previous)

    with ThreadPoolExecutor(max_workers=min(16, max(1, len(items)))) as pool:
        rows = list(pool.map(skipped, items))
    return [i for i, r in zip(items, rows) if r is None], [r for r in rows if r is not None]


# --------------------------------------------------------------------------- fused


class PreprocessStage:
    """Work items in (one per batch), summary rows (SUMMARY_COLUMNS) out."""

    def __init__(self, config: FacesConfig | dict, output: str):
        self.config = _detector_actor(config)
        self.output = output
        self.rows = FaceRows(self.config)
        self.settings = self.config.fingerprint()

    @classmethod
    def step(cls, config: FacesConfig, output: str, items: int) -> Step:
        # One item per call, so a long video never shares an actor call with others and a retried task
        # redoes one item.
        return Step(cls, {"config": config, "output": output}, _detector_resources(config, items, "pandas"),
                    name="face detector actors")

    def __call__(self, batch) -> dict[str, list]:
        import torch

        out: dict[str, list] = {name: [] for name in SUMMARY_COLUMNS}
        with torch.inference_mode():
            for item in batch_items(batch):
                row = self.run_item(item)
                for name in SUMMARY_COLUMNS:
                    out[name].append(row[name])
        return out

    def run_item(self, item: dict) -> dict:
        """Process one work item; returns its summary row. Never raises."""
        start = time.perf_counter()
        row, clock = summary_row(item), PhaseClock()
        source = ""
        try:
            source = item_fingerprint(item)
            row.update(self._write(item, done_fingerprint(source, self.settings), start, clock))
        except Exception as exc:  # noqa: BLE001 - every error becomes a failure record, never a crash
            row["error"] = _record_failure(self.output, item, source, exc)
        finally:
            row.update(clock.columns(), seconds=round(time.perf_counter() - start, 3))
        return row

    def _write(self, item: dict, fingerprint: str, start: float, clock: PhaseClock) -> dict:
        """The item's parts and done marker, unless its marker already has this fingerprint; the summary
        row's new values."""
        video_id, kind = str(item.get(schema.VIDEO_ID) or ""), item.get(schema.KIND) or "video"
        previous = shards.read_marker(self.output, FACES, video_id)
        if is_finished(previous, fingerprint):
            return skipped_values(previous)
        attempt = shards.next_attempt(previous, fingerprint)
        if kind == "video":
            parts, info = video_parts(self.rows, item, self.output, attempt, clock)
        else:
            parts, info = image_parts(self.rows, item, self.output, previous, attempt, clock)
        info.update(fingerprint=fingerprint, kind=kind, seconds=round(time.perf_counter() - start, 3),
                    **subjects_info(item))
        shards.mark_done(self.output, FACES, video_id, parts, **info)
        return {"status": STATUS_DONE, "frames": info["frames"], "faces": info["faces"], "error": info.get("error"),
                "tracks": tracks_text(info)}


def subjects_info(item: dict) -> dict:
    """The done marker's `subjects` (a video labelled per person, e.g. ["left", "right"]), if the item has any."""
    subjects = str(item.get(schema.SUBJECTS) or "")
    return {"subjects": subjects.split(",")} if subjects else {}


def tracks_text(info: dict) -> str:
    """A done marker's kept tracks as the summary row's JSON text ("" in one-face mode)."""
    return json.dumps(info["tracks"], sort_keys=True) if "tracks" in info else ""


def _record_failure(output: str, item: dict, source: str, exc: Exception) -> str:
    """Log the error and write the item's failure record; returns the summary row's error text."""
    video_id = str(item.get(schema.VIDEO_ID) or "")
    message = error_text(exc)
    if isinstance(exc, INPUT_ERRORS):
        log.warning("%s: failed: %s", video_id, message)
    else:
        log.error("%s: unexpected error\n%s", video_id, traceback.format_exc())
    try:
        shards.write_failure(output, video_id, str(item.get(schema.URI) or ""), STAGE_NAME, message,
                             fingerprint=source)
    except Exception as write_exc:  # noqa: BLE001 - the summary row still reports it
        return f"{message} (and the failure record could not be written: {write_exc})"
    return message


def video_parts(rows: FaceRows, item: dict, output: str, attempt: str = "",
                clock: PhaseClock | None = None) -> tuple[list[str], dict]:
    """One part per decoded chunk of a video, one tracker across the chunks; (parts, done-marker info)."""
    cfg, clock = rows.config, clock or PhaseClock()
    video_id, uri = item[schema.VIDEO_ID], item[schema.URI]
    parts: list[str] = []
    frames = faces = 0
    with ExitStack() as stack:
        with clock.phase("decode"):  # opening: the download (S3), the header checks, the label file
            video, labels_of = stack.enter_context(LabelledVideo(item, cfg.max_pixels))
        tracker = rows.tracker()
        chunks = clock.timed("decode", video.chunks(cfg.chunk_size, cfg.stride, cfg.max_frames))
        for number, chunk in enumerate(chunks):
            with clock.phase("detect"):
                found = tracker.process(chunk.frames)
            with clock.phase("align"):
                table = rows.chunk_table(video_id, chunk, found, labels_of(chunk.indices), item.get(schema.SUBJECT),
                                         video.num_frames)
            with clock.phase("write"):
                parts.append(shards.write_part(output, FACES, video_id, number, table, attempt))
            frames += len(chunk)
            faces += table.column(schema.REASON).null_count  # null exactly where a face was found
        num_frames = video.num_frames
    info = {"frames": frames, "faces": faces, "num_frames": num_frames, "uri": uri}
    if cfg.all_faces:
        with clock.phase("write"):
            info.update(drop_short_tracks(parts, tracker))
    return parts, info


def drop_short_tracks(parts: list[str], tracker) -> dict:
    """Every-face mode, once the video is tracked: the parts rewritten without the rows of tracks shorter
    than min_track_length (fer_ray.preprocess.faces.keep_tracks); the done-marker info on tracks."""
    from fer_ray.preprocess.faces import keep_tracks

    lengths, kept = tracker.lengths(), set(tracker.finish())
    dropped = set(lengths) - kept
    info = {"tracks": {str(t): lengths[t] for t in sorted(kept)}, "short_tracks_dropped": len(dropped)}
    if dropped:  # else the parts and the face count counted while writing them stand
        info["faces"] = rewrite_parts(dict(enumerate(parts)), lambda _, table: keep_tracks(table, kept))
    return info


def rewrite_parts(parts: dict[int, str], change) -> int:
    """Each part (chunk number -> URI) replaced by `change(chunk, table)` where that differs (one whole file,
    atomically, under the same name: the video's done marker is written after); the faces left in them."""
    faces = 0
    for chunk, uri in parts.items():
        table = storage.read_parquet(uri)
        changed = change(chunk, table)
        if not changed.equals(table):
            storage.write_parquet(uri, changed)
        faces += changed.column(schema.REASON).null_count  # null exactly where a face was found
    return faces


def image_parts(rows: FaceRows, item: dict, output: str, previous: dict | None, attempt: str = "",
                clock: PhaseClock | None = None) -> tuple[list[str], dict]:
    """One part for a batch of still images; unreadable images become their own failure records. (Detection
    and alignment of images are one call: the clock counts both as "detect".)"""
    chunk_size, clock = rows.config.chunk_size, clock or PhaseClock()
    members = item[MEMBERS] or [{schema.VIDEO_ID: item[schema.VIDEO_ID], schema.URI: item[schema.URI],
                                 schema.LABEL: item.get(schema.LABEL, -1),
                                 schema.SUBJECT: item.get(schema.SUBJECT)}]
    failed: list[str] = []
    tables: list[pa.Table] = []
    for start in range(0, len(members), chunk_size):  # at most chunk_size decoded images in memory
        with clock.phase("decode"):
            loaded, images = _load_images(members[start:start + chunk_size], output, failed)
        with clock.phase("detect"):
            if item[schema.KIND] == "face_crop":
                tables.append(rows.face_crops(loaded, images))
            else:
                tables += rows.images(loaded, images)
    # images that failed in an earlier run of this batch and read fine now: drop their stale records
    for stale in set((previous or {}).get("failed_images", [])) - set(failed):
        storage.delete(shards.failure_uri(output, stale))
    table = pa.concat_tables(tables) if tables else schema.FACES_SCHEMA.empty_table()
    with clock.phase("write"):
        parts = [shards.write_part(output, FACES, item[schema.VIDEO_ID], 0, table, attempt)]
    faces = table.column(schema.REASON).null_count  # reason is null exactly where a face was found
    info = {"frames": table.num_rows, "faces": faces, "images": len(members), "failed_images": failed,
            "members": sorted(set(table.column(schema.VIDEO_ID).to_pylist()))}  # annotate's photos
    if failed:
        info["error"] = f"{len(failed)} of {len(members)} images unreadable (see failures/)"
    return parts, info


def _load_images(members: list[dict], output: str, failed: list[str]) -> tuple[list[dict], list[np.ndarray]]:
    """(members read, their images); each unreadable one gets a failure record and joins `failed`."""
    loaded, images = [], []
    for m in members:
        try:
            images.append(load_image(m[schema.URI]))
            loaded.append(m)
        except (ValueError, FileNotFoundError, OSError) as exc:
            failed.append(m[schema.VIDEO_ID])
            shards.write_failure(output, m[schema.VIDEO_ID], m[schema.URI], STAGE_NAME, str(exc))
    return loaded, images


# --------------------------------------------------------------------------- split decode -> detect

CHUNK, END, FAILED_ROW, SKIPPED_ROW = "chunk", "end", "failed", "skipped"


def _chunk_row(item: dict, fingerprint: str, status: str, **values) -> dict[str, list]:
    """One-row batch of the DecodeStage -> DetectStage -> collector stream (flat columns: one Arrow schema)."""
    row = {schema.VIDEO_ID: str(item[schema.VIDEO_ID]), schema.URI: str(item.get(schema.URI) or ""),
           schema.SUBJECT: str(item.get(schema.SUBJECT) or ""), "fingerprint": fingerprint, "status": status,
           "error": "", "chunk": -1, "count": 0, "faces": 0, "num_frames": 0, "seconds": 0.0, "shape": "",
           "frames": b"", "indices": b"", "timestamps": b"", "labels": b"", "part": "", "attempt": "", "tracked": "",
           schema.SUBJECTS: str(item.get(schema.SUBJECTS) or "")}
    row.update(values)
    return {k: [v] for k, v in row.items()}


class DecodeStage:
    """CPU actor: video work items in, a stream of one-row batches out: one per decoded chunk (frames as raw
    bytes), then an "end" row with the chunk count, or a "failed" row, or one "skipped" row for a video
    whose done marker matches. Never raises."""

    def __init__(self, config: FacesConfig | dict, output: str):
        self.config = validated(config)
        self.output = output
        self.settings = self.config.fingerprint()

    @classmethod
    def step(cls, config: FacesConfig, output: str, items: int) -> Step:
        return Step(cls, {"config": config, "output": output},
                    Resources(num_cpus=config.decode_cpus, batch_format="pandas",
                              concurrency=max(1, min(config.decode_workers, items)), eager=True),
                    name="video decode actors")

    def __call__(self, batch):
        for item in batch_items(batch):
            yield from self.chunks(item)

    def chunks(self, item: dict):
        cfg = self.config
        fingerprint = done_fingerprint(item_fingerprint(item), self.settings)
        previous = shards.read_marker(self.output, FACES, str(item[schema.VIDEO_ID]))
        if is_finished(previous, fingerprint):
            yield _chunk_row(item, fingerprint, SKIPPED_ROW, count=int(previous.get("frames", 0)),
                             faces=int(previous.get("faces", 0)))
            return
        attempt = shards.next_attempt(previous, fingerprint)  # every chunk of this (re)do writes under it
        start, number = time.perf_counter(), 0
        try:
            with LabelledVideo(item, cfg.max_pixels) as (video, labels_of):
                for number, chunk in enumerate(video.chunks(cfg.chunk_size, cfg.stride, cfg.max_frames)):
                    frames = np.ascontiguousarray(chunk.frames)
                    yield _chunk_row(
                        item, fingerprint, CHUNK, chunk=number, count=len(chunk), num_frames=video.num_frames,
                        attempt=attempt,
                        seconds=time.perf_counter() - start, shape=",".join(map(str, frames.shape)),
                        frames=frames.tobytes(), indices=chunk.indices.astype(np.int64).tobytes(),
                        timestamps=chunk.timestamps.astype(np.float64).tobytes(),
                        labels=labels_of(chunk.indices).astype(np.int64).tobytes())
                    start, number = time.perf_counter(), number + 1
            yield _chunk_row(item, fingerprint, END, count=number, seconds=time.perf_counter() - start)
        except Exception as exc:  # noqa: BLE001 - the video fails as data; the job goes on
            log.warning("%s: decode failed: %s", item[schema.VIDEO_ID], error_text(exc))
            yield _chunk_row(item, fingerprint, FAILED_ROW, error=error_text(exc))


class DetectStage:
    """Detector actor of the split path: chunk rows in (one per batch), the chunk's faces written as its part;
    passes end/failed/skipped rows through. A chunk that fails becomes a failed row. Never raises."""

    def __init__(self, config: FacesConfig | dict, output: str):
        self.config = _detector_actor(config)
        self.output = output
        self.rows = FaceRows(self.config)

    @classmethod
    def step(cls, config: FacesConfig, output: str, items: int) -> Step:
        return Step(cls, {"config": config, "output": output}, _detector_resources(config, items, "numpy"),
                    name="face detector actors")

    def __call__(self, batch) -> dict[str, list]:
        import torch

        columns = {k: list(v) for k, v in batch.items()}
        rows = [{k: plain(v[i]) if not isinstance(v[i], bytes) else v[i] for k, v in columns.items()}
                for i in range(len(columns[schema.VIDEO_ID]))]
        out: dict[str, list] = {}
        with torch.inference_mode():
            for row in rows:
                if row["status"] == CHUNK:
                    row = self.detect_chunk(row)
                for k, v in row.items():
                    out.setdefault(k, []).append(v)
        return out

    def detect_chunk(self, row: dict) -> dict:
        start = time.perf_counter()
        video_id = row[schema.VIDEO_ID]
        try:
            shape = tuple(int(x) for x in row["shape"].split(","))
            frames = np.frombuffer(row["frames"], dtype=np.uint8).reshape(shape)
            indices = np.frombuffer(row["indices"], dtype=np.int64)
            chunk = Chunk(indices, np.frombuffer(row["timestamps"], np.float64), frames)
            # every-face mode: chunk-local track ids; the collector links them video-wide (link_chunks)
            tracker = self.rows.tracker(start=int(row["chunk"]) * self.config.chunk_size)
            found = tracker.process(frames)
            table = self.rows.chunk_table(video_id, chunk, found, np.frombuffer(row["labels"], np.int64),
                                          row[schema.SUBJECT] or None, row["num_frames"])
            part = shards.write_part(self.output, FACES, video_id, int(row["chunk"]), table,
                                     str(row.get("attempt") or ""))
            values = {"part": part, "faces": table.column(schema.REASON).null_count,
                      "tracked": tracked_text(tracker, found) if self.config.all_faces else ""}
        except Exception as exc:  # noqa: BLE001 - this video fails as data
            log.error("%s chunk %s: detect failed\n%s", video_id, row["chunk"], traceback.format_exc())
            values = {"status": FAILED_ROW, "error": error_text(exc)}
        return {**row, **values, "frames": b"", "seconds": row["seconds"] + time.perf_counter() - start}
