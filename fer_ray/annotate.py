"""The bulk annotation job's config and its Ray-free bookkeeping: what to run, what is already done, summary.

The Ray Data chain itself is `fer_ray.pipelines.run_annotate`.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from fer_ray import config as cfg
from fer_ray import schema, shards, storage
from fer_ray.infer import systems
from fer_ray.infer.postprocess import PREDICTIONS

log = logging.getLogger(__name__)
FACES = schema.FACES_TABLE


@dataclass
class AnnotateConfig:
    """`jobs/annotate.py` options. `input` is videos (manifest, dir, s3 prefix) or a preprocess output."""

    input: str
    models: str
    output: str
    system: str = "cfc_sp"
    window: int = 256
    model_names: list[str] | None = None  # exact models.json run names; default: the system's models
    weights: dict[str, float] = field(default_factory=dict)  # run name -> ensemble weight (Mao)
    keep_logits: bool = False  # also write per-model logits (the ablation tables read them)
    prior_correction: bool = False  # divide out each frame model's training class prior (models.json)
    since: str | None = None  # only videos modified after this ISO time, or "last" (previous run's start)
    max_attempts: int = 3  # a video that failed this many runs in a row on the same input is given up
    device: str = "auto"
    batch_size: int = 128
    num_workers: int = 1  # logits actors
    worker_cpus: float = 0.5  # per logits actor; fractional so decode/shuffle stages keep room on small nodes
    threads: int = 1  # torch threads per logits actor
    shuffle_partitions: int = 16  # group-by-video partitions (logits rows only, never images)
    worker_gpus: float = 0.0  # per logits actor: > 0 on GPU clusters (the actor then runs on CUDA, bf16)
    detect_gpus: float = 0.0  # per face-detector actor: > 0 runs MTCNN + alignment on a GPU
    stride: int = 1
    max_frames: int | None = None
    face_size: int = 112
    track_every: int = 1
    decode_workers: int = 0  # > 0: CPU actors decode videos for the detector actors (PreprocessConfig)
    strict: bool = False
    allowed_roots: list[str] = field(default_factory=list)  # besides the input's own folder (--allow-root)

    def validate(self) -> None:
        if self.system not in systems.SYSTEMS:
            raise cfg.ConfigError(f"system {self.system!r} unknown; valid: {', '.join(systems.SYSTEMS)}")
        if self.window < 0:
            raise cfg.ConfigError(f"window must be >= 0 (0 disables Smooth Predicting), got {self.window}")
        if self.batch_size < 1 or self.num_workers < 1 or self.stride < 1:
            raise cfg.ConfigError("batch_size, num_workers and stride must be >= 1")
        if self.worker_gpus < 0 or self.detect_gpus < 0:
            raise cfg.ConfigError("worker_gpus and detect_gpus must be >= 0")
        if self.max_attempts < 1:
            raise cfg.ConfigError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.decode_workers < 0:
            raise cfg.ConfigError(f"decode_workers must be >= 0, got {self.decode_workers}")
        if self.since not in (None, "last"):
            parse_since(self.since)


def parse_since(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise cfg.ConfigError(f"since must be an ISO time (2026-11-01T00:00:00) or 'last', got {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def is_faces_output(uri: str) -> bool:
    """True when `uri` is a preprocessing output (it has face shards with done markers)."""
    return storage.is_dir(storage.join(uri, FACES, shards.DONE_DIR))


def pending_videos(faces_uri: str, output: str, version: str,
                   faces_markers: dict[str, dict] | None = None) -> tuple[list[str], list[str]]:
    """(videos to annotate, videos already annotated with this model version from their current faces).

    A video whose faces were redone since it was annotated (its input changed) is annotated again: the
    predictions marker records the faces marker's fingerprint as its `source`."""
    if faces_markers is None:
        faces_markers = shards.done_markers(faces_uri, FACES)
    # image-set batches (training data) share the faces table but are not videos to annotate
    faces = {v: m for v, m in faces_markers.items() if m.get("kind", "video") == "video"}
    done = shards.done_markers(output, PREDICTIONS)
    finished = sorted(v for v in faces if done.get(v, {}).get("model_version") == version
                      and done[v].get("source", "") == faces[v].get("fingerprint", ""))
    todo = sorted(v for v in faces if v not in set(finished) and faces[v].get("frames", 1) > 0)
    return todo, finished


def given_up(output: str, fingerprints: dict[str, str], max_attempts: int) -> list[str]:
    """Videos whose failure record says they failed `max_attempts` runs in a row on the input they have
    now (video id -> fingerprint): retrying them again would only fail again."""
    out = []
    for record in shards.read_failures(output).to_pylist():
        video_id = record[schema.VIDEO_ID]
        if video_id in fingerprints and record[schema.ATTEMPTS] >= max_attempts \
                and record[schema.FINGERPRINT] == fingerprints[video_id]:
            out.append(video_id)
    return sorted(out)


def write_summary(config: AnnotateConfig, rows: list[dict], skipped: list[str], version: str,
                  seconds: float, started_at: str, gave_up: list[str] = ()) -> dict:
    """summary.json: per-video counts and label histogram, throughput, failures (with their attempt counts)
    and the videos given up after max_attempts failed runs."""
    markers = shards.done_markers(config.output, PREDICTIONS)
    videos = {v: {k: m.get(k) for k in ("frames", "faces", "histogram", "model_version")}
              for v, m in sorted(markers.items())}
    processed = [r for r in rows if r["status"] == "done"]
    frames = sum(int(r["frames"]) for r in processed)
    failures = shards.read_failures(config.output).to_pylist()
    summary = {
        "system": config.system, "window": config.window, "model_version": version,
        "started_at": started_at, "seconds": round(seconds, 3),
        "videos_annotated": len(processed), "videos_skipped": len(skipped), "videos_failed": len(failures),
        "videos_given_up": len(gave_up), "given_up": sorted(gave_up),
        "frames_annotated": frames, "frames_per_second": round(frames / seconds, 2) if seconds > 0 else None,
        "videos": videos, "failures": failures,
    }
    storage.write_json(storage.join(config.output, "summary.json"), summary)
    return summary


def failed_row(video_id: str, error: str) -> dict:
    return {schema.VIDEO_ID: video_id, "status": "failed", "frames": 0, "faces": 0, "seconds": 0.0,
            schema.ERROR: error}


def last_started_at(output: str) -> str | None:
    """The previous run's start time (its summary.json), for --since last."""
    uri = storage.join(output, "summary.json")
    return storage.read_json(uri).get("started_at") if storage.exists(uri) else None


def work_items(config: AnnotateConfig, pre) -> list[dict]:
    """Videos under config.input to (re)process now; see plan_items."""
    return plan_items(config, pre)[0]


def plan_items(config: AnnotateConfig, pre) -> tuple[list[dict], list[str]]:
    """(work items to run, videos given up) under config.input; inputs rejected up front become failures.

    With --since only videos modified after that time are new, but a video that failed before is retried on
    every run until it has failed `max_attempts` runs in a row on the same content (then it is given up; a
    changed file is a new input and is tried again)."""
    from fer_ray.inputs import discover, item_fingerprint

    found = discover(config.input, image_batch_size=pre.image_batch_size, allowed_roots=config.allowed_roots)
    failed = {r[schema.VIDEO_ID]: r for r in shards.read_failures(config.output).to_pylist()}
    gave_up = []
    for reject in found.rejected:
        video_id = reject[schema.VIDEO_ID]
        if failed.get(video_id, {}).get(schema.ATTEMPTS, 0) >= config.max_attempts:
            gave_up.append(video_id)
            continue
        shards.write_failure(config.output, video_id, reject[schema.URI], reject["stage"], reject[schema.ERROR])
    retry = [item for item in found.items if item[schema.VIDEO_ID] in failed]
    gave_up += given_up(config.output, {item[schema.VIDEO_ID]: item_fingerprint(item) for item in retry},
                        config.max_attempts)
    retry = [item for item in retry if item[schema.VIDEO_ID] not in set(gave_up)]
    if gave_up:
        log.warning("%d videos given up after %d failed runs each (see failures/)", len(gave_up),
                    config.max_attempts)
    since = last_started_at(config.output) if config.since == "last" else config.since
    fresh = [item for item in found.items if item[schema.VIDEO_ID] not in failed]
    if since:
        moment = parse_since(since)
        fresh = [item for item in fresh if storage.modified(item[schema.URI]) > moment]
        log.info("--since %s: %d of %d inputs are new, %d failed before and are retried", since, len(fresh),
                 len(found.items), len(retry))
    chosen = {item[schema.VIDEO_ID] for item in fresh + retry}
    return [item for item in found.items if item[schema.VIDEO_ID] in chosen], sorted(gave_up)
