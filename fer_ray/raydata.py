"""The one module that speaks Ray Data. It turns plans (fer_ray.plan: stage classes that declare their
resources and batch size) into Ray Data operations, reads face shards as datasets, and holds the global Ray
Data settings our jobs need (`data_context`, scoped). Every other module is plain Python, importable
without Ray; the jobs (fer_ray.jobs) decide what runs, this module only how.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import ray
import ray.data

from fer_ray import runtime, schema, shards, storage
from fer_ray.plan import Step

runtime.quiet_ray_console()  # importing ray.data just added its console handler
# Ray Data warns once per process when its bars are off (ours are: one bar per stage unless --verbose);
# marking that warning as given keeps a quiet job quiet.
if not runtime.verbose():
    from ray.util.debug import log_once

    log_once("ray_data_progress_manager_disabled")

log = logging.getLogger(__name__)

# The DataContext every plan runs under (data_context sets them and restores the previous values after).
PLAN_SETTINGS = {
    # A whole video is one task with one output row, so a long video on a busy node legitimately goes longer
    # than Ray Data's default 30 min without "progress"; the stages' own chunked writes are the progress.
    "execution_no_progress_timeout_s": -1,
    # Small fractional CPUs for the shuffle's aggregators: on a 2-core node whole-CPU stages would starve them.
    "hash_shuffle_operator_actor_num_cpus_override": 0.1,
}
# Ray 2.60's file-listing operator (datasource v2) asks 1 CPU per listing task, which never schedules when
# trainers hold most CPUs of a small node; the v1 parquet reader runs with our fractional read CPUs (we list
# the files ourselves, from the done markers).
READ_SETTINGS = {"use_datasource_v2": False}
KEY_CPUS = 0.1  # a step's group_key tasks (a column computed per batch before a group-by)


@contextlib.contextmanager
def data_context(settings: dict | None = None):
    """Ray Data's process-wide DataContext with `settings` (default PLAN_SETTINGS) inside the block, the
    previous values back after it. A dataset keeps the context it was created under (Ray copies it then), so
    create datasets inside the block. Settings this Ray version lacks are skipped."""
    context = ray.data.DataContext.get_current()
    settings = {"enable_progress_bars": runtime.verbose(),  # our own bar per stage unless --verbose
                **(PLAN_SETTINGS if settings is None else settings)}
    wanted = {k: v for k, v in settings.items() if hasattr(context, k)}
    saved = {k: getattr(context, k) for k in wanted}
    try:
        for key, value in wanted.items():
            setattr(context, key, value)
        yield context
    finally:
        for key, value in saved.items():
            setattr(context, key, value)


# ---------------------------------------------------------------- plans


def run_rows(rows: list[dict], steps: list[Step]) -> Iterator[dict]:
    """Rows (one block each, so each is its own task) through the steps; yields the output rows."""
    with data_context():
        dataset = apply(ray.data.from_items(rows, override_num_blocks=len(rows)), steps)
        yield from _plain_rows(dataset)


def run_parquet(parts: list[str], columns: list[str], steps: list[Step], read_cpus: float) -> Iterator[dict]:
    """Parquet parts (URIs on one filesystem) through the steps; yields the output rows."""
    fs, _ = storage.filesystem(parts[0])
    paths = [storage.filesystem(p)[1] for p in parts]
    with data_context({**PLAN_SETTINGS, **READ_SETTINGS}):
        dataset = apply(ray.data.read_parquet(paths, filesystem=fs, columns=columns, num_cpus=read_cpus), steps)
        yield from _plain_rows(dataset)


def apply(dataset, steps: list[Step]):
    """Each step as an actor pool over the dataset: map_batches, or map_groups after a group-by."""
    for step in steps:
        r = step.resources
        warn_if_no_gpus(r.num_gpus, step.name or step.stage.__name__)
        options = {
            "fn_constructor_kwargs": step.kwargs, "batch_format": r.batch_format,
            "compute": ray.data.ActorPoolStrategy(min_size=1, max_size=r.concurrency,
                                                  initial_size=r.concurrency if r.eager else None),
            "num_cpus": r.num_cpus, "num_gpus": r.num_gpus or None,
        }
        if step.group_by:
            if step.group_key:  # a fraction of a CPU: it must not wait behind the actors of the steps around it
                dataset = dataset.map_batches(step.group_key, batch_format=r.batch_format, num_cpus=KEY_CPUS)
            grouped = dataset.groupby(step.group_by, num_partitions=step.partitions)
            dataset = grouped.map_groups(step.stage, **options)
        else:
            dataset = dataset.map_batches(step.stage, batch_size=r.batch_size, **options)
    return dataset


def _plain_rows(dataset) -> Iterator[dict]:
    for row in dataset.iter_rows():
        yield {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}


def warn_if_no_gpus(gpus: float, what: str) -> None:
    """Actors that ask for GPUs wait until a GPU node joins; say so when none is in the cluster yet (an
    autoscaler may still add one, so this is a warning, not an error)."""
    if gpus and not ray.cluster_resources().get("GPU"):
        log.warning("%s ask for %g GPU each but the cluster has no GPU now: they wait until a GPU node joins",
                    what, gpus)


# ---------------------------------------------------------------- training datasets


def faces_dataset(faces_output_uris, video_ids=None, read_cpus: float = 0.1, columns: list[str] | None = None):
    """The face rows (`columns`, default all) of the complete videos under one or more preprocess outputs,
    optionally only some videos, as a lazy ray.data.Dataset (S3 through fer_ray.storage)."""
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
    with data_context(READ_SETTINGS):
        dataset = ray.data.read_parquet(paths, filesystem=fs, columns=columns, num_cpus=read_cpus)
    if wanted is None:
        return dataset
    return dataset.map_batches(_keep_videos, fn_kwargs={"wanted": wanted}, batch_format="pyarrow",
                               num_cpus=read_cpus)


def _parts_holding(faces_uri: str, wanted: set[str] | None) -> list[str]:
    """Complete parts of the videos in `wanted`, plus every image-batch shard (their rows are filtered)."""
    markers = shards.done_markers(faces_uri, schema.FACES_TABLE)
    keep = [info for video, info in markers.items()
            if wanted is None or video in wanted or info.get("kind", "video") != "video"]
    base = storage.join(faces_uri, schema.FACES_TABLE)
    return sorted(storage.join(base, part) for info in keep for part in info["parts"])


def _keep_videos(batch, wanted: set[str]):
    return batch.filter(pc.is_in(batch.column(schema.VIDEO_ID), value_set=pa.array(sorted(wanted))))
