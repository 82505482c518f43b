"""The train_all job: every model of a TrainConfig fitted as Ray Tune trials (each a Ray Train run), written
with models.json (fer_ray.train.launch). This module builds each model's face datasets through
fer_ray.raydata and hands them to training, which never speaks Ray Data itself; it also holds the check that
every model's training worker fits a node.
"""

from __future__ import annotations

import logging

from fer_ray.train.config import TrainConfig
from fer_ray.train.launch import TrainRun, load_config, train_all

__all__ = ["check_cluster", "check_plan", "datasets", "load_config", "run", "select_models"]

log = logging.getLogger(__name__)


def run(config: TrainConfig) -> dict:
    """Train every model of `config`; returns the run summary (models.json entries with their status)."""
    return train_all(config, datasets)


def datasets(run: TrainRun, spec: dict) -> dict:
    """{"train", "val"}: the face rows of one model's split (its spec as a dict; TrainRun.videos)."""
    from fer_ray import raydata
    from fer_ray.train.data import TRAIN_COLUMNS

    train_ids, val_ids = run.videos(spec)
    train = raydata.faces_dataset(run.faces, train_ids, run.read_cpus, TRAIN_COLUMNS)
    if spec["kind"] not in ("clip", "sequence"):  # frame models: shards in random order each epoch
        train = train.randomize_block_order()  # (rows are mixed by the loop's shuffle buffer)
    return {"train": train, "val": raydata.faces_dataset(run.faces, val_ids, run.read_cpus, TRAIN_COLUMNS)}


def select_models(config: TrainConfig, names: list[str]) -> None:
    """Keep only the named models; dependencies outside the selection are taken as already trained."""
    config.models = [config.spec(n) for n in names]  # KeyError lists the valid names
    for model in config.models:
        model.after = [a for a in model.after if a in names]


def check_plan(config: TrainConfig, plan: str) -> None:
    """Every model's training worker fits a node type of a cluster-launcher YAML or KubeRay manifest
    (ValueError naming the model otherwise); no Ray."""
    from fer_ray.train import resources

    resources.check_fit(config.models, resources.plan_node_types(plan), plan)


def check_cluster(config: TrainConfig) -> None:
    """Every model's training worker fits a node of the Ray cluster joined (ValueError naming the model
    otherwise): a worker that fits no node would wait forever. With an autoscaler whose node types cannot
    be seen, only a warning."""
    from fer_ray.train import resources

    node_types, complete = resources.live_node_types()
    try:
        resources.check_fit(config.models, node_types, "this Ray cluster")
    except ValueError as exc:
        if complete:
            raise
        # an autoscaler whose node types we cannot see may still add a node that fits
        log.warning("%s; an autoscaler is running: waiting for it", exc)
