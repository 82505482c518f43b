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


# ---------------------------------------------------------------- annotation (jobs/annotate.py)
