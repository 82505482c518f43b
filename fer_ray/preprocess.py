"""Preprocessing: videos and labelled image sets -> aligned face crops, one row per decoded frame.

`PreprocessConfig` is the job's typed config; `PreprocessStage` is the Ray Data callable class
(`__call__(batch) -> batch`, one work item per batch) that pipelines.run_preprocess runs in an actor pool.
It is plain Python and runs without Ray too (tests, benchmarks):

    stage = PreprocessStage(PreprocessConfig(output="/tmp/out"))
    summary = stage({"video_id": ["clip"], "uri": ["clip.mp4"], ...})   # work items from fer_ray.inputs

For each work item the stage writes `faces/<key>/part-<k>.parquet` (schema.FACES_SCHEMA, one part per
decoded chunk for videos, one part per image batch) and then `faces/_done/<key>.json`. Every decoded
frame is a row: frames without a face have empty face bytes, null bbox/landmarks/det_score and reason
"no_face". Any error (unreadable video, bad label file, label count != frame count) becomes a failure
record (`failures/<key>.json`) and a "failed" summary row; the stage never raises.

Reruns are safe and resumable: part names are deterministic and the done marker is written last, so a
retried or crashed item is simply redone; an item whose done marker carries the same fingerprint (same
input files, same size and modification time, same frame-selection and face settings) is skipped. A redo
(changed fingerprint) writes its parts under a new attempt id and switches the marker last
(fer_ray.shards), so a crash mid-redo leaves the previous complete version readable, never a mixture.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import traceback
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa

from fer_ray import labels, schema, shards, storage
from fer_ray.inputs import MEMBERS, item_fingerprint
from fer_ray.video import MAX_PIXELS, VideoError, open_video

__all__ = [
    "ChunkCollector",
    "DecodeStage",
    "DetectStage",
    "DetectorConfig",
    "FACES",
    "PreprocessConfig",
    "PreprocessStage",
    "STATUS_DONE",
    "STATUS_FAILED",
    "STATUS_SKIPPED",
    "SUMMARY_COLUMNS",
]

log = logging.getLogger(__name__)

FACES = schema.FACES_TABLE  # table name under the output
STAGE_NAME = "preprocess"
STATUS_DONE, STATUS_SKIPPED, STATUS_FAILED = "done", "skipped", "failed"
SUMMARY_COLUMNS = ("video_id", "kind", "status", "frames", "faces", "seconds", "error")


@dataclass
class DetectorConfig:
    """fer_ray.faces.FaceDetector options."""

    device: str = "cpu"
    min_face_size: int = 40
    detect_size: int | None = 320
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    min_score: float = 0.9

    def validate(self) -> None:
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"detector.device must be 'cpu' or 'cuda[:n]', got {self.device!r}")
        if self.min_face_size < 8:
            raise ValueError(f"detector.min_face_size must be >= 8, got {self.min_face_size}")
        if self.detect_size is not None and self.detect_size < 32:
            raise ValueError(f"detector.detect_size must be >= 32 or null, got {self.detect_size}")
        if len(self.thresholds) != 3 or not all(0.0 < t < 1.0 for t in self.thresholds):
            raise ValueError(f"detector.thresholds must be 3 values in (0, 1), got {self.thresholds}")
        if not 0.0 <= self.min_score < 1.0:
            raise ValueError(f"detector.min_score must be in [0, 1), got {self.min_score}")


@dataclass
class PreprocessConfig:
    """Everything jobs/preprocess.py needs; saved as `<output>/preprocess.yaml`."""

    input: str = ""  # manifest (.csv/.parquet), labels.csv, folder or s3:// prefix, or one video
    output: str = ""  # folder or s3:// prefix; faces/, failures/, summary.json go under it
    stride: int = 1  # decode every stride-th frame
    max_frames: int | None = None  # at most this many decoded frames per video (after stride)
    face_size: int = 112  # aligned crop side, pixels
    track_every: int = 1  # full detection every k decoded frames, O-net tracking in between
    limit: int | None = None  # at most this many images per labelled image set (seeded sample)
    seed: int = 0
    chunk_size: int = 32  # frames decoded, detected and written at a time (one part each)
    image_batch_size: int = 256  # images per work item / shard
    jpeg_quality: int = 95
    max_pixels: int = MAX_PIXELS  # videos with larger frames fail instead of exhausting memory
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    num_workers: int = 2  # actor pool max size
    worker_cpus: float = 1.0  # CPUs reserved per actor (fractions allowed); torch threads = max(1, int())
    worker_gpus: float = 0.0
    # 0: each detect actor decodes its own videos. N > 0: N CPU actors decode videos into chunks that feed
    # the detect actors (GPU nodes then only detect and align; see DecodeStage).
    decode_workers: int = 0
    decode_cpus: float = 0.5  # CPUs reserved per decode actor
    strict: bool = False  # job exits 1 when anything failed
    allowed_roots: list[str] = field(default_factory=list)  # besides the input's own folder (--allow-root)

    def validate(self) -> None:
        if not self.output:
            raise ValueError("output is required (a folder or s3:// prefix)")
        for name in ("stride", "face_size", "track_every", "chunk_size", "image_batch_size", "num_workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_frames", "limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or null, got {value}")
        if not 16 <= self.face_size <= 1024:
            raise ValueError(f"face_size must be in 16..1024, got {self.face_size}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if self.decode_workers < 0 or self.decode_cpus <= 0:
            raise ValueError("decode_workers must be >= 0 and decode_cpus > 0")
        if self.worker_cpus <= 0 or self.worker_gpus < 0:
            raise ValueError("worker_cpus must be > 0 and worker_gpus >= 0")
        if self.detector.device.startswith("cuda") and self.worker_gpus <= 0:
            raise ValueError("detector.device is CUDA but worker_gpus is 0: set worker_gpus (e.g. 0.5)")
        self.detector.validate()

    def fingerprint(self) -> str:
        """Hash of the settings that change a shard's rows (not where or how fast it runs)."""
        keys = ("stride", "max_frames", "face_size", "track_every", "jpeg_quality")
        data = {k: getattr(self, k) for k in keys} | {"detector": asdict(self.detector)}
        return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


class LabelMismatchError(ValueError):
    """A label file whose frame count differs from the video's."""


# --------------------------------------------------------------------------- helpers


def _items(batch) -> list[dict]:
    """Work items of a Ray Data batch (dict of columns or a pandas DataFrame) as plain dicts."""
    if hasattr(batch, "to_dict") and hasattr(batch, "columns"):  # pandas
        rows = batch.to_dict("records")
    else:
        columns = {k: list(v) for k, v in batch.items()}
        count = len(next(iter(columns.values()))) if columns else 0
        rows = [{k: v[i] for k, v in columns.items()} for i in range(count)]
    out = []
    for row in rows:
        item = {k: _plain(v) for k, v in row.items()}
        members = item.get(MEMBERS)
        if isinstance(members, str):
            members = json.loads(members)
        item[MEMBERS] = [dict(m) for m in (members or [])]
        out.append(item)
    return out


def _plain(value):
    """numpy scalars / NaN (from pandas) to plain Python; None stays None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    return value


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, (VideoError, labels.LabelFormatError, LabelMismatchError, FileNotFoundError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _faces_table(rows: dict[str, list]) -> pa.Table:
    return pa.Table.from_pydict(rows, schema=schema.FACES_SCHEMA)


def _empty_columns() -> dict[str, list]:
    return {name: [] for name in schema.FACES_SCHEMA.names}


def _load_image(uri: str) -> np.ndarray:
    """RGB uint8 (H,W,3) of a still image; grey images come back with 3 equal channels."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(storage.read_bytes(uri))) as image:
            return np.asarray(image.convert("RGB"))
    except UnidentifiedImageError:
        raise ValueError(f"{uri}: not an image") from None
    except OSError as exc:
        raise ValueError(f"{uri}: unreadable image ({exc})") from None


def _validated(config: PreprocessConfig | dict) -> PreprocessConfig:
    """The stage's config, built from a dict when Ray passes one, and validated."""
    from fer_ray import config as config_module

    if isinstance(config, dict):
        config = config_module.from_dict(PreprocessConfig, config)
    config.validate()
    return config


class _LabelledVideo:
    """`with _LabelledVideo(item, max_pixels) as (video, labels_of):` the open video of a work item and a
    function from frame indices to their labels (the EXPR file's, or the item's one label); a label file
    whose length is not the video's frame count raises LabelMismatchError."""

    def __init__(self, item: dict, max_pixels: int):
        self.item, self.max_pixels = item, max_pixels
        self.video = None

    def __enter__(self):
        item = self.item
        label_uri = item.get(schema.LABEL_URI)
        frame_labels = labels.read_expr(label_uri) if label_uri else None
        item_label = labels.UNANNOTATED if item.get(schema.LABEL) is None else int(item[schema.LABEL])
        self.video = video = open_video(item[schema.URI], max_pixels=self.max_pixels)
        if frame_labels is not None and len(frame_labels) != video.num_frames:
            video.close()
            raise LabelMismatchError(
                f"{label_uri}: {len(frame_labels)} labels for {video.num_frames} frames of {item[schema.URI]}; "
                "label count must equal the frame count")

        def labels_of(indices: np.ndarray) -> np.ndarray:
            if frame_labels is not None:
                return frame_labels[indices]
            return np.full(len(indices), item_label, dtype=np.int64)

        return video, labels_of

    def __exit__(self, *exc) -> None:
        if self.video is not None:
            self.video.close()


# --------------------------------------------------------------------------- the stage


class PreprocessStage:
    """Ray Data callable class: work items in, summary rows out. The detector is loaded once per actor."""

    def __init__(self, config: PreprocessConfig | dict):
        import torch

        from fer_ray.faces import FaceDetector

        self.config = config = _validated(config)
        torch.set_num_threads(max(1, int(config.worker_cpus)))
        det = config.detector
        self.detector = FaceDetector(device=det.device, min_face_size=det.min_face_size,
                                     detect_size=det.detect_size, thresholds=det.thresholds,
                                     min_score=det.min_score)
        self.settings = config.fingerprint()

    # -- Ray Data entry point ------------------------------------------------------------------
    def __call__(self, batch) -> dict[str, list]:
        import torch

        out: dict[str, list] = {name: [] for name in SUMMARY_COLUMNS}
        with torch.inference_mode():
            for item in _items(batch):
                row = self.run_item(item)
                for name in SUMMARY_COLUMNS:
                    out[name].append(row[name])
        return out

    def run_item(self, item: dict) -> dict:
        """Process one work item; returns its summary row. Never raises."""
        video_id = str(item.get(schema.VIDEO_ID) or "")
        kind = item.get(schema.KIND) or "video"
        start = time.perf_counter()
        row = {"video_id": video_id, "kind": kind, "status": STATUS_FAILED, "frames": 0, "faces": 0,
               "seconds": 0.0, "error": None}
        output = self.config.output
        source = ""
        try:
            source = item_fingerprint(item)
            fingerprint = f"{source}-{self.settings}"
            previous = self._done_marker(video_id)
            if previous is not None and previous.get("fingerprint") == fingerprint:
                row.update(status=STATUS_SKIPPED, frames=int(previous.get("frames", 0)),
                           faces=int(previous.get("faces", 0)))
                return row
            attempt = shards.next_attempt(previous, fingerprint)
            if kind == "video":
                parts, info = self._video(item, attempt)
            else:
                parts, info = self._images(item, previous, attempt)
            info.update(fingerprint=fingerprint, kind=kind, seconds=round(time.perf_counter() - start, 3))
            shards.mark_done(output, FACES, video_id, parts, **info)
            row.update(status=STATUS_DONE, frames=info["frames"], faces=info["faces"],
                       error=info.get("error"))
        except Exception as exc:  # noqa: BLE001 - every error becomes a failure record, never a crash
            message = _error_text(exc)
            if not isinstance(exc, (VideoError, labels.LabelFormatError, LabelMismatchError, FileNotFoundError)):
                log.error("%s: unexpected error\n%s", video_id, traceback.format_exc())
            else:
                log.warning("%s: failed: %s", video_id, message)
            row["error"] = message
            try:
                shards.write_failure(output, video_id, str(item.get(schema.URI) or ""), STAGE_NAME, message,
                                     fingerprint=source)
            except Exception as write_exc:  # noqa: BLE001 - the summary row still reports it
                row["error"] = f"{message} (and the failure record could not be written: {write_exc})"
        finally:
            row["seconds"] = round(time.perf_counter() - start, 3)
        return row

    def _done_marker(self, video_id: str) -> dict | None:
        return shards.read_marker(self.config.output, FACES, video_id)

    # -- videos --------------------------------------------------------------------------------
    def _video(self, item: dict, attempt: str = "") -> tuple[list[str], dict]:
        from fer_ray.faces import FaceTracker

        cfg = self.config
        video_id, uri = item[schema.VIDEO_ID], item[schema.URI]
        parts: list[str] = []
        frames = faces = 0
        with _LabelledVideo(item, cfg.max_pixels) as (video, chunk_labels_of):
            tracker = FaceTracker(self.detector, every=cfg.track_every)
            for number, chunk in enumerate(video.chunks(cfg.chunk_size, cfg.stride, cfg.max_frames)):
                detections = tracker.process(chunk.frames)
                chunk_labels = chunk_labels_of(chunk.indices)
                rows = self._rows([video_id] * len(chunk), chunk.indices, chunk.timestamps, chunk.frames,
                                  detections, chunk_labels, [item.get(schema.SUBJECT)] * len(chunk),
                                  video.num_frames)
                parts.append(shards.write_part(cfg.output, FACES, video_id, number, rows, attempt))
                frames += len(chunk)
                faces += sum(d is not None for d in detections)
            num_frames = video.num_frames
        return parts, {"frames": frames, "faces": faces, "num_frames": num_frames, "uri": uri}

    def _rows(self, video_ids, indices, timestamps, frames, detections, frame_labels, subjects,
              num_frames) -> pa.Table:
        """FACES_SCHEMA rows for equally sized frames and their detections (None: no face)."""
        import torch

        from fer_ray.faces import align_batch, encode_face

        n = len(video_ids)
        have = [i for i, d in enumerate(detections) if d is not None]
        encoded = [b""] * n
        if have:
            device = self.detector.device
            landmarks = torch.from_numpy(np.stack([detections[i].landmarks for i in have]).astype(np.float32))
            crops = align_batch(torch.from_numpy(frames[have]).to(device), landmarks.to(device),
                                self.config.face_size).cpu().numpy()
            for crop, i in zip(crops, have):
                encoded[i] = encode_face(crop, quality=self.config.jpeg_quality)
        return _faces_table({
            schema.VIDEO_ID: list(video_ids),
            schema.FRAME_INDEX: [int(i) for i in indices],
            schema.TIMESTAMP: [float(t) for t in timestamps],
            schema.FACE: encoded,
            schema.BBOX: [None if d is None else d.bbox.astype(np.float32).tolist() for d in detections],
            schema.LANDMARKS: [None if d is None else d.landmarks.astype(np.float32).reshape(-1).tolist()
                               for d in detections],
            schema.DET_SCORE: [None if d is None else float(d.score) for d in detections],
            schema.LABEL: [int(v) for v in frame_labels],
            schema.REASON: [None if d is not None else schema.REASON_NO_FACE for d in detections],
            schema.SUBJECT: [s or None for s in subjects],
            schema.NUM_FRAMES: [int(num_frames)] * n,
        })

    # -- image batches -------------------------------------------------------------------------
    def _images(self, item: dict, previous: dict | None, attempt: str = "") -> tuple[list[str], dict]:
        """One part for a batch of still images; unreadable images become their own failure records."""
        from fer_ray.faces import choose_face, encode_face, resize_crop

        cfg = self.config
        members = item[MEMBERS] or [{schema.VIDEO_ID: item[schema.VIDEO_ID], schema.URI: item[schema.URI],
                                     schema.LABEL: item.get(schema.LABEL, -1),
                                     schema.SUBJECT: item.get(schema.SUBJECT)}]
        failed: list[str] = []
        tables: list[pa.Table] = []
        for start in range(0, len(members), cfg.chunk_size):  # at most chunk_size decoded images in memory
            loaded: list[tuple[dict, np.ndarray]] = []
            for m in members[start:start + cfg.chunk_size]:
                try:
                    loaded.append((m, _load_image(m[schema.URI])))
                except (ValueError, FileNotFoundError, OSError) as exc:
                    failed.append(m[schema.VIDEO_ID])
                    shards.write_failure(cfg.output, m[schema.VIDEO_ID], m[schema.URI], STAGE_NAME, str(exc))
            if item[schema.KIND] == "face_crop":
                columns = _empty_columns()
                for m, image in loaded:
                    h, w = image.shape[:2]
                    face = encode_face(resize_crop(image, cfg.face_size), quality=cfg.jpeg_quality)
                    self._append_image(columns, m, face, [0.0, 0.0, float(w), float(h)], None, None, None)
                tables.append(_faces_table(columns))
                continue
            by_shape: dict[tuple, list[tuple[dict, np.ndarray]]] = {}
            for m, image in loaded:  # the detector takes equally sized frames
                by_shape.setdefault(image.shape, []).append((m, image))
            for group in by_shape.values():
                frames = np.stack([image for _, image in group])
                found = [choose_face(faces, None) for faces in self.detector.detect(frames)]
                tables.append(self._rows([m[schema.VIDEO_ID] for m, _ in group], [0] * len(group),
                                         [0.0] * len(group), frames, found, [m[schema.LABEL] for m, _ in group],
                                         [m[schema.SUBJECT] for m, _ in group], 1))
        # images that failed in an earlier run of this batch and read fine now: drop their stale records
        for stale in set((previous or {}).get("failed_images", [])) - set(failed):
            storage.delete(shards.failure_uri(cfg.output, stale))
        table = pa.concat_tables(tables) if tables else schema.FACES_SCHEMA.empty_table()
        parts = [shards.write_part(cfg.output, FACES, item[schema.VIDEO_ID], 0, table, attempt)]
        faces = table.column(schema.REASON).null_count  # reason is null exactly where a face was found
        info = {"frames": table.num_rows, "faces": faces, "images": len(members), "failed_images": failed}
        if failed:
            info["error"] = f"{len(failed)} of {len(members)} images unreadable (see failures/)"
        return parts, info

    @staticmethod
    def _append_image(columns, m, face, bbox, landmarks, score, reason) -> None:
        columns[schema.VIDEO_ID].append(m[schema.VIDEO_ID])
        columns[schema.FRAME_INDEX].append(0)
        columns[schema.TIMESTAMP].append(0.0)
        columns[schema.FACE].append(face)
        columns[schema.BBOX].append(bbox)
        columns[schema.LANDMARKS].append(landmarks)
        columns[schema.DET_SCORE].append(score)
        columns[schema.LABEL].append(int(m[schema.LABEL]))
        columns[schema.REASON].append(reason)
        columns[schema.SUBJECT].append(m.get(schema.SUBJECT) or None)
        columns[schema.NUM_FRAMES].append(1)


# --------------------------------------------------------------------------- split decode -> detect
# With `decode_workers > 0` a video goes through two actor pools: DecodeStage (CPU) turns it into chunk rows,
# DetectStage (the detector's device) detects, aligns and writes one part per chunk, and ChunkCollector (the
# driver) writes the done marker once every chunk of the video is in. Decoding then overlaps detection and
# GPU nodes never decode. Each chunk gets a fresh tracker, so the full-detection schedule restarts at every
# chunk (keep chunk_size a multiple of track_every to keep the fused path's schedule); between chunks the
# one-face rule cannot prefer the face followed so far. Image work items always take the fused path.

CHUNK, END, FAILED_ROW, SKIPPED_ROW = "chunk", "end", "failed", "skipped"


def _chunk_row(item: dict, fingerprint: str, status: str, **values) -> dict[str, list]:
    """One-row batch of the DecodeStage -> DetectStage -> collector stream (flat columns: one Arrow schema)."""
    row = {schema.VIDEO_ID: str(item[schema.VIDEO_ID]), schema.URI: str(item.get(schema.URI) or ""),
           schema.SUBJECT: str(item.get(schema.SUBJECT) or ""), "fingerprint": fingerprint, "status": status,
           "error": "", "chunk": -1, "count": 0, "faces": 0, "num_frames": 0, "seconds": 0.0, "shape": "",
           "frames": b"", "indices": b"", "timestamps": b"", "labels": b"", "part": "", "attempt": ""}
    row.update(values)
    return {k: [v] for k, v in row.items()}


class DecodeStage:
    """CPU actor: video work items in, a stream of one-row batches out: one per decoded chunk (frames as raw
    bytes), then an "end" row with the chunk count, or a "failed" row, or one "skipped" row for a video
    whose done marker matches. Never raises."""

    def __init__(self, config: PreprocessConfig | dict):
        self.config = _validated(config)
        self.settings = self.config.fingerprint()

    def __call__(self, batch):
        for item in _items(batch):
            yield from self.chunks(item)

    def chunks(self, item: dict):
        cfg = self.config
        fingerprint = f"{item_fingerprint(item)}-{self.settings}"
        previous = shards.read_marker(cfg.output, FACES, str(item[schema.VIDEO_ID]))
        if previous is not None and previous.get("fingerprint") == fingerprint:
            yield _chunk_row(item, fingerprint, SKIPPED_ROW, count=int(previous.get("frames", 0)),
                             faces=int(previous.get("faces", 0)))
            return
        attempt = shards.next_attempt(previous, fingerprint)  # every chunk of this (re)do writes under it
        start, number = time.perf_counter(), 0
        try:
            with _LabelledVideo(item, cfg.max_pixels) as (video, labels_of):
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
            log.warning("%s: decode failed: %s", item[schema.VIDEO_ID], _error_text(exc))
            yield _chunk_row(item, fingerprint, FAILED_ROW, error=_error_text(exc))


class DetectStage(PreprocessStage):
    """Detector actor of the split path: chunk rows in (one per batch), the chunk's faces written as its part;
    passes end/failed/skipped rows through. A chunk that fails becomes a failed row. Never raises."""

    def __call__(self, batch) -> dict[str, list]:
        import torch

        columns = {k: list(v) for k, v in batch.items()}
        rows = [{k: _plain(v[i]) if not isinstance(v[i], bytes) else v[i] for k, v in columns.items()}
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
        from fer_ray.faces import FaceTracker

        start = time.perf_counter()
        video_id = row[schema.VIDEO_ID]
        try:
            shape = tuple(int(x) for x in row["shape"].split(","))
            frames = np.frombuffer(row["frames"], dtype=np.uint8).reshape(shape)
            indices = np.frombuffer(row["indices"], dtype=np.int64)
            detections = FaceTracker(self.detector, every=self.config.track_every).process(frames)
            table = self._rows([video_id] * len(indices), indices, np.frombuffer(row["timestamps"], np.float64),
                               frames, detections, np.frombuffer(row["labels"], np.int64),
                               [row[schema.SUBJECT] or None] * len(indices), row["num_frames"])
            part = shards.write_part(self.config.output, FACES, video_id, int(row["chunk"]), table,
                                     str(row.get("attempt") or ""))
            faces = sum(d is not None for d in detections)
            values = {"part": part, "faces": faces}
        except Exception as exc:  # noqa: BLE001 - this video fails as data
            log.error("%s chunk %s: detect failed\n%s", video_id, row["chunk"], traceback.format_exc())
            values = {"status": FAILED_ROW, "error": _error_text(exc)}
        return {**row, **values, "frames": b"", "seconds": row["seconds"] + time.perf_counter() - start}


class ChunkCollector:
    """Driver side of the split path: takes DetectStage rows in any order and, per video, writes the done
    marker once its "end" row and every chunk are in (or the failure record on a failed row); `add` returns
    the video's summary row (SUMMARY_COLUMNS) when it is settled, else None."""

    def __init__(self, output: str):
        self.output = output
        self.videos: dict[str, dict] = {}
        self.settled: set[str] = set()

    def add(self, row: dict) -> dict | None:
        video_id = str(row[schema.VIDEO_ID])
        if video_id in self.settled:
            return None
        state = self.videos.setdefault(video_id, {"parts": {}, "faces": 0, "frames": 0, "seconds": 0.0,
                                                  "expected": None, "num_frames": 0, "row": row})
        state["seconds"] += float(row["seconds"])
        status = row["status"]
        if status == SKIPPED_ROW:
            return self._settle(video_id, STATUS_SKIPPED, int(row["count"]), int(row["faces"]))
        if status == FAILED_ROW:
            shards.write_failure(self.output, video_id, str(row[schema.URI]), STAGE_NAME, str(row["error"]),
                                 fingerprint=_source(row))
            return self._settle(video_id, STATUS_FAILED, 0, 0, str(row["error"]))
        if status == END:
            state["expected"] = int(row["count"])
        else:
            state["parts"][int(row["chunk"])] = str(row["part"])
            state["faces"] += int(row["faces"])
            state["frames"] += int(row["count"])
            state["num_frames"] = int(row["num_frames"])
        if state["expected"] is not None and len(state["parts"]) == state["expected"]:
            parts = [state["parts"][k] for k in sorted(state["parts"])]
            shards.mark_done(self.output, FACES, video_id, parts, frames=state["frames"], faces=state["faces"],
                             num_frames=state["num_frames"], uri=str(row[schema.URI]),
                             fingerprint=str(row["fingerprint"]), kind="video",
                             seconds=round(state["seconds"], 3))
            return self._settle(video_id, STATUS_DONE, state["frames"], state["faces"])
        return None

    def _settle(self, video_id: str, status: str, frames: int, faces: int, error: str | None = None) -> dict:
        state = self.videos.pop(video_id)
        self.settled.add(video_id)
        return {"video_id": video_id, "kind": "video", "status": status, "frames": frames, "faces": faces,
                "seconds": round(state["seconds"], 3), "error": error}

    def unsettled(self) -> list[dict]:
        """Summary rows (failed) of videos whose stream ended incomplete: a lost chunk or end row."""
        rows = []
        for video_id in list(self.videos):
            message = "incomplete: not every decoded chunk came back from the detect stage"
            row = self.videos[video_id]["row"]
            shards.write_failure(self.output, video_id, str(row[schema.URI]), STAGE_NAME, message,
                                 fingerprint=_source(row))
            rows.append(self._settle(video_id, STATUS_FAILED, 0, 0, message))
        return rows


def _source(row: dict) -> str:
    """The input part (fer_ray.inputs.item_fingerprint) of a chunk row's "<input>-<settings>" fingerprint."""
    return str(row.get("fingerprint") or "").split("-", 1)[0]
