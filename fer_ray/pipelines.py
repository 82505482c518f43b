"""The one module that speaks Ray Data. Every other module is plain Python, importable without Ray.

Sections (each owned by one job): preprocessing, training datasets, annotation.
"""

from __future__ import annotations

# ---------------------------------------------------------------- preprocessing (jobs/preprocess.py)


def run_preprocess(items: list[dict], config) -> list[dict]:
    """Run `PreprocessStage` over work items (fer_ray.inputs) in an actor pool; returns the summary rows.

    One item per batch, so a long video never shares an actor call with others and a retried task redoes
    one item (the stage is idempotent: deterministic part names, done marker last). The items' `members`
    (image batches) travel as JSON text, so every block has the same flat Arrow schema.
    """
    import json

    import ray
    from tqdm import tqdm

    from fer_ray.inputs import MEMBERS
    from fer_ray.preprocess import STATUS_FAILED, PreprocessStage

    if not items:
        return []
    rows = [{**item, MEMBERS: json.dumps(item.get(MEMBERS) or [])} for item in items]
    workers = max(1, min(config.num_workers, len(rows)))
    summary = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        PreprocessStage, fn_constructor_kwargs={"config": config}, batch_size=1, batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=workers, initial_size=workers),
        num_cpus=config.worker_cpus, num_gpus=config.worker_gpus or None)
    results: list[dict] = []
    failed = frames = 0
    with tqdm(total=len(rows), desc="preprocess", unit="item") as bar:
        for row in summary.iter_rows():
            row = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
            results.append(row)
            failed += row["status"] == STATUS_FAILED
            frames += int(row["frames"])
            bar.update(1)
            bar.set_postfix(done=len(results) - failed, failed=failed, frames=frames)
    return results


# ---------------------------------------------------------------- training datasets (jobs/train_all.py)


def faces_dataset(faces_output_uris, video_ids=None, read_cpus: float = 0.1):
    """The face rows (fer_ray.train.data.TRAIN_COLUMNS) of the complete videos under one or more preprocess
    outputs, optionally only some videos, as a lazy ray.data.Dataset (S3 through fer_ray.storage)."""
    import ray

    from fer_ray import shards, storage
    from fer_ray.train.data import TRAIN_COLUMNS

    uris = [faces_output_uris] if isinstance(faces_output_uris, str) else list(faces_output_uris)
    parts = [p for uri in uris for p in shards.complete_parts(uri, "faces", video_ids)]
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
        return ray.data.read_parquet(paths, filesystem=fs, columns=TRAIN_COLUMNS, num_cpus=read_cpus)
    finally:
        if saved is not None:
            context.use_datasource_v2 = saved


def train_val_datasets(faces_output_uris, by: str = "subject", val_fraction: float = 0.2, seed: int = 0,
                       read_cpus: float = 0.1):
    """{"train": Dataset, "val": Dataset} split by subject (or video): no subject is on both sides.

    Returns (datasets, info) where info has the video id lists and the label summary table.
    """
    from fer_ray.train.data import label_summary, split_videos

    uris = [faces_output_uris] if isinstance(faces_output_uris, str) else list(faces_output_uris)
    summary = label_summary(uris)
    train_ids, val_ids = split_videos(summary, by, val_fraction, seed)
    datasets = {"train": faces_dataset(uris, train_ids, read_cpus), "val": faces_dataset(uris, val_ids, read_cpus)}
    return datasets, {"train_videos": train_ids, "val_videos": val_ids, "summary": summary}


# ---------------------------------------------------------------- annotation (jobs/annotate.py)
