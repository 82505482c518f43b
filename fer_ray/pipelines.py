"""The one module that speaks Ray Data. Every other module is plain Python, importable without Ray.

Sections (each owned by one job): preprocessing, training datasets, annotation.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time

import pyarrow as pa
import pyarrow.compute as pc
import ray
from tqdm import tqdm

from fer_ray import annotate, schema, shards, storage
from fer_ray.infer import systems
from fer_ray.infer.logits import LogitsStage
from fer_ray.infer.postprocess import LOGITS, PREDICTIONS, VideoPostprocess
from fer_ray.inputs import MEMBERS
from fer_ray.preprocess import (
    STATUS_FAILED,
    ChunkCollector,
    DecodeStage,
    DetectorConfig,
    DetectStage,
    PreprocessConfig,
    PreprocessStage,
)
from fer_ray.train.data import TRAIN_COLUMNS, label_summary, split_videos

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- preprocessing (jobs/preprocess.py)


def run_preprocess(items: list[dict], config) -> list[dict]:
    """Run `PreprocessStage` over work items (fer_ray.inputs) in an actor pool; returns the summary rows.

    One item per batch, so a long video never shares an actor call with others and a retried task redoes
    one item (the stage is idempotent: deterministic part names, done marker last). The items' `members`
    (image batches) travel as JSON text, so every block has the same flat Arrow schema.
    """
    # parts no done marker lists: what a crash mid-attempt or before a redo's cleanup left (fer_ray.shards)
    swept = shards.sweep(config.output, "faces")
    if swept:
        log.info("deleted %d face parts no done marker lists (left by an interrupted run)", swept)
    if not items:
        return []
    rows = [{**item, MEMBERS: json.dumps(item.get(MEMBERS) or [])} for item in items]
    # A whole video is one task with one output row, so a long video on a busy node legitimately goes longer
    # than Ray Data's default 30 min without "progress"; the stage's own chunked writes are the progress.
    ray.data.DataContext.get_current().execution_no_progress_timeout_s = -1
    warn_if_no_gpus(config.worker_gpus, "face detector actors")
    to_split = [bool(config.decode_workers) and r.get(schema.KIND, "video") == "video" for r in rows]
    split = [r for r, s in zip(rows, to_split) if s]
    fused = [r for r, s in zip(rows, to_split) if not s]
    results: list[dict] = []
    failed = frames = 0
    with tqdm(total=len(rows), desc="preprocess", unit="item") as bar:
        streams = ([_fused_rows(fused, config)] if fused else []) + ([_split_rows(split, config)] if split else [])
        for stream in streams:
            for row in stream:
                results.append(row)
                failed += row["status"] == STATUS_FAILED
                frames += int(row["frames"])
                bar.update(1)
                bar.set_postfix(done=len(results) - failed, failed=failed, frames=frames)
    return results


def warn_if_no_gpus(gpus: float, what: str) -> None:
    """Actors that ask for GPUs wait until a GPU node joins; say so when none is in the cluster yet (an
    autoscaler may still add one, so this is a warning, not an error)."""
    if gpus and not ray.cluster_resources().get("GPU"):
        log.warning("%s ask for %g GPU each but the cluster has no GPU now: they wait until a GPU node joins",
                    what, gpus)


def _fused_rows(rows: list[dict], config):
    """One PreprocessStage call per work item: decode, detect, align and write in one actor."""
    workers = max(1, min(config.num_workers, len(rows)))
    summary = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        PreprocessStage, fn_constructor_kwargs={"config": config}, batch_size=1, batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=workers, initial_size=workers),
        num_cpus=config.worker_cpus, num_gpus=config.worker_gpus or None)
    for row in summary.iter_rows():
        yield {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}


def _split_rows(rows: list[dict], config):
    """Videos through DecodeStage actors (CPU) feeding DetectStage actors; done markers from the driver."""
    decoders = max(1, min(config.decode_workers, len(rows)))
    detectors = max(1, min(config.num_workers, len(rows)))
    chunks = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        DecodeStage, fn_constructor_kwargs={"config": config}, batch_size=1, batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=decoders, initial_size=decoders),
        num_cpus=config.decode_cpus)
    detected = chunks.map_batches(
        DetectStage, fn_constructor_kwargs={"config": config}, batch_size=1, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=detectors, initial_size=detectors),
        num_cpus=config.worker_cpus, num_gpus=config.worker_gpus or None)
    collector = ChunkCollector(config.output)
    for row in detected.iter_rows():
        summary = collector.add({k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()})
        if summary is not None:
            yield summary
    yield from collector.unsettled()


# ---------------------------------------------------------------- training datasets (jobs/train_all.py)


def faces_dataset(faces_output_uris, video_ids=None, read_cpus: float = 0.1):
    """The face rows (fer_ray.train.data.TRAIN_COLUMNS) of the complete videos under one or more preprocess
    outputs, optionally only some videos, as a lazy ray.data.Dataset (S3 through fer_ray.storage)."""
    uris = [faces_output_uris] if isinstance(faces_output_uris, str) else list(faces_output_uris)
    # Image-set shards hold many one-frame "videos" under one done marker, so shards are chosen by marker
    # and rows by their own video_id (below): a split by subject stays exact inside a shared shard.
    wanted = None if video_ids is None else set(video_ids)
    parts = [p for uri in uris for p in _parts_holding(uri, wanted)]
    if not parts:
        raise FileNotFoundError(f"no complete face shards under {', '.join(uris)}"
                                + (f" for {len(video_ids)} requested videos" if video_ids is not None else ""))
    filesystems = {type(storage.filesystem(p)[0]).__name__ for p in parts}
    if len(filesystems) > 1:
        raise ValueError(f"face shards on several filesystems ({', '.join(sorted(filesystems))}); use one")
    fs = storage.filesystem(parts[0])[0]
    paths = [storage.filesystem(p)[1] for p in parts]
    # Ray 2.60's file-listing operator (datasource v2) asks 1 CPU per listing task, which never schedules when
    # trainers hold most CPUs of a small node; the v1 parquet reader runs with our fractional `read_cpus`
    # (we list the files ourselves, from the done markers).
    context = ray.data.DataContext.get_current()
    saved = getattr(context, "use_datasource_v2", None)
    if saved is not None:
        context.use_datasource_v2 = False
    try:
        dataset = ray.data.read_parquet(paths, filesystem=fs, columns=TRAIN_COLUMNS, num_cpus=read_cpus)
    finally:
        if saved is not None:
            context.use_datasource_v2 = saved
    if wanted is None:
        return dataset
    return dataset.map_batches(_keep_videos, fn_kwargs={"wanted": wanted}, batch_format="pyarrow",
                               num_cpus=read_cpus)


def _parts_holding(faces_uri: str, wanted: set[str] | None) -> list[str]:
    """Complete parts of the videos in `wanted`, plus every image-batch shard (their rows are filtered)."""
    markers = shards.done_markers(faces_uri, "faces")
    keep = [info for video, info in markers.items()
            if wanted is None or video in wanted or info.get("kind", "video") != "video"]
    base = storage.join(faces_uri, "faces")
    return sorted(storage.join(base, part) for info in keep for part in info["parts"])


def _keep_videos(batch, wanted: set[str]):
    return batch.filter(pc.is_in(batch.column(schema.VIDEO_ID), value_set=pa.array(sorted(wanted))))


def train_val_datasets(faces_output_uris, by: str = "subject", val_fraction: float = 0.2, seed: int = 0,
                       read_cpus: float = 0.1):
    """{"train": Dataset, "val": Dataset} split by subject (or video): no subject is on both sides.

    Returns (datasets, info) where info has the video id lists and the label summary table.
    """
    uris = [faces_output_uris] if isinstance(faces_output_uris, str) else list(faces_output_uris)
    summary = label_summary(uris)
    train_ids, val_ids = split_videos(summary, by, val_fraction, seed)
    datasets = {"train": faces_dataset(uris, train_ids, read_cpus), "val": faces_dataset(uris, val_ids, read_cpus)}
    return datasets, {"train_videos": train_ids, "val_videos": val_ids, "summary": summary}


# ---------------------------------------------------------------- annotation (jobs/annotate.py)


def _annotate_chain(config, parts: list[str], entries, extras, version: str, sources: dict[str, str]):
    """read faces -> logits actors -> group by video (no images) -> per-video post-processing."""
    fs, _ = storage.filesystem(parts[0])
    paths = [storage.filesystem(p)[1] for p in parts]
    columns = [schema.VIDEO_ID, schema.FRAME_INDEX, schema.TIMESTAMP, schema.FACE, schema.NUM_FRAMES]
    gpus = config.worker_gpus
    warn_if_no_gpus(gpus, "logits actors")
    faces = ray.data.read_parquet(paths, filesystem=fs, columns=columns, num_cpus=0.25)
    logits = faces.map_batches(
        LogitsStage, fn_constructor_kwargs={"models": entries + extras, "device": config.device,
                                            "threads": config.threads,
                                            "prior_correction": config.prior_correction},
        batch_size=config.batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=config.num_workers),
        num_cpus=config.worker_cpus, num_gpus=gpus or None)
    post_kwargs = {"output": config.output, "entries": entries, "extras": extras, "system": config.system,
                   "window": config.window, "version": version, "weights": config.weights,
                   "keep_logits": config.keep_logits, "sources": sources}
    # Small fractional CPUs for the shuffle's aggregators: on a 2-core node whole-CPU stages would starve them.
    ray.data.DataContext.get_current().hash_shuffle_operator_actor_num_cpus_override = 0.1
    partitions = max(1, min(len(parts), config.shuffle_partitions))
    return logits.groupby(schema.VIDEO_ID, num_partitions=partitions).map_groups(
        _SafeVideoPostprocess, fn_constructor_kwargs=post_kwargs, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=1), num_cpus=0.25)


class _SafeVideoPostprocess:
    """VideoPostprocess with failures as data: an error becomes a failure record, not a crashed job."""
    def __init__(self, **kwargs):
        self.inner = VideoPostprocess(**kwargs)
        self.output = kwargs["output"]

    def __call__(self, batch: dict) -> dict:
        try:
            return self.inner(batch)
        except Exception as exc:  # noqa: BLE001 - recorded per video, the job goes on
            video_id = str(batch[schema.VIDEO_ID][0])
            message = f"{type(exc).__name__}: {exc}"
            shards.write_failure(self.output, video_id, "", "postprocess", message,
                                 fingerprint=self.inner.fingerprint_of(video_id))
            return {k: [v] for k, v in annotate.failed_row(video_id, message).items()}


def run_annotate(config) -> dict:
    """Annotate every pending video of `config.input`; returns the summary (also written as summary.json)."""
    started_at = dt.datetime.now(dt.timezone.utc).isoformat()
    start = time.perf_counter()
    index = systems.read_index(config.models)
    entries = systems.select(systems.entries(index, config.models), config.system, config.model_names)
    version = systems.model_version(index, entries, config.system, config.window, config.weights,
                                    config.prior_correction)
    extras = systems.ablation_extras(systems.entries(index, config.models), config.system, entries) \
        if config.keep_logits else []
    if config.prior_correction:  # fail before any video is decoded, not inside an actor
        systems.check_prior_correction(entries + extras)
    for table in (PREDICTIONS, LOGITS):  # what an interrupted run left unreferenced (fer_ray.shards)
        shards.sweep(config.output, table)
    if annotate.is_faces_output(config.input):
        faces_uri, gave_up = config.input, []
    else:
        faces_uri, gave_up = _preprocess_for_annotate(config)
    faces_markers = shards.done_markers(faces_uri, annotate.FACES)
    todo, finished = annotate.pending_videos(faces_uri, config.output, version, faces_markers)
    sources = {v: str(faces_markers[v].get("fingerprint", "")) for v in todo}
    # videos whose post-processing failed max_attempts runs in a row on these faces and this version
    stuck = annotate.given_up(config.output, {v: f"{version}|{sources[v]}" for v in todo}, config.max_attempts)
    todo = [v for v in todo if v not in set(stuck)]
    gave_up = sorted(set(gave_up) | set(stuck))
    log.info("system %s, models %s, version %s: %d videos to annotate, %d already done, %d given up",
             config.system, [e.name for e in entries], version, len(todo), len(finished), len(gave_up))
    rows: list[dict] = []
    parts = shards.complete_parts(faces_uri, annotate.FACES, todo)
    if parts:
        results = _annotate_chain(config, parts, entries, extras, version, {v: sources[v] for v in todo})
        with tqdm(total=len(todo), desc="annotate", unit="video") as bar:
            for row in results.iter_rows():
                rows.append(row)
                bar.update(1)
                bar.set_postfix(frames=sum(int(r["frames"]) for r in rows))
    return annotate.write_summary(config, rows, finished, version, time.perf_counter() - start, started_at,
                                  gave_up)


def _preprocess_for_annotate(config) -> tuple[str, list[str]]:
    """Decode, detect and align the input videos into `<output>/faces` (resumable); returns that output and
    the videos given up (failed max_attempts runs in a row)."""
    pre = PreprocessConfig(input=config.input, output=config.output, stride=config.stride,
                           max_frames=config.max_frames, face_size=config.face_size,
                           track_every=config.track_every, num_workers=config.num_workers,
                           decode_workers=config.decode_workers, worker_gpus=config.detect_gpus,
                           detector=DetectorConfig(device="cuda" if config.detect_gpus > 0 else "cpu"))
    items, gave_up = annotate.plan_items(config, pre)
    run_preprocess(items, pre)
    return config.output, gave_up
