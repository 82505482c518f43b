"""`train_all(config, datasets)`: every model of a TrainConfig as one Ray Tune trial, each trial a Ray Train run.

Ray Train V2 + Tune: the Tune trial function (0 CPU) gets the model's datasets from the `datasets` factory
the caller hands in (fer_ray.jobs.train builds them through fer_ray.raydata: training never speaks Ray Data
itself), builds a `TorchTrainer` with the model's own
`ScalingConfig`, a `TuneReportCallback` (epoch metrics flow to Tune) and `FailureConfig(max_failures)` (a
crashed worker group restarts from the last reported checkpoint), then calls `fit()`. `TuneConfig
(max_concurrent_trials)` lets several models train at the same time. Ray state lives under `<output>/_ray/`.

Outputs (URIs: local or s3://):
  <output>/<model>/checkpoint.pt   best epoch by val macro-F1 (the last one with `keep: last`) (fer_ray.models.save_checkpoint, meta inside)
  <output>/<model>/config.yaml     the resolved TrainConfig with just this model (fer_ray.config.load-able)
  <output>/<model>/metrics.csv     one row per epoch, wall-clock epoch_start / epoch_end (unix seconds)
  <output>/<model>/summary.json    written last: the model's models.json entry (its "done" marker)
  <output>/models.json             {"version", "models": {name: {arch, task, input_size, kind, num_classes,
                                    clip_length, checkpoint (relative), metrics (best), started_at, finished_at,
                                    class_counts (training split), train_prior (loop.training_prior)}}}
Rerunning: a model whose summary.json exists for the same spec and data is skipped; an interrupted model
resumes from its latest Ray Train checkpoint (same run name and storage); an interrupted Tune experiment is
restored with `Tuner.restore` (errored trials resumed).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fer_ray import config as config_mod
from fer_ray import labels, schema, storage
from fer_ray.train.config import TrainConfig, spec_from_dict, spec_to_dict

__all__ = ["TrainRun", "train_all", "load_config", "data_version", "model_splits", "model_dir", "SUMMARY_FILE",
           "MODELS_INDEX"]

_LOG = logging.getLogger(__name__)
SUMMARY_FILE = "summary.json"
MODELS_INDEX = schema.MODELS_INDEX
CHECKPOINT_FILE = "checkpoint.pt"
METRIC = "val_macro_f1"


@dataclass(frozen=True)
class TrainRun:
    """Everything a trial needs, computed once on the driver (`_prepare`)."""

    output: str
    faces: list[str]  # preprocess outputs
    splits: dict[int, tuple[list[str], list[str]]]  # split_seed_offset -> (train video ids, val video ids)
    version: str  # of the configs and the data (data_version)
    specs: dict[str, dict]  # model name -> ModelSpec as a dict
    spec_hashes: dict[str, str]  # model name -> hash of its spec and the data: a finished model's marker
    class_counts: dict[str, list[int]]  # model name -> training split's counts over its task's classes
    train_config: dict  # the TrainConfig without its models (each model's config.yaml)
    seed: int
    max_failures: int
    read_cpus: float
    face_geometry: dict | None = None  # {"geometry", "face_size"} of the faces trained on (face_geometry)

    def videos(self, spec: dict) -> tuple[list[str], list[str]]:
        """(train video ids, val video ids) of one model (its spec as a dict)."""
        return self.splits[spec["split_seed_offset"]]


# (run, the model's spec as a dict) -> {"train": dataset, "val": dataset}, for Ray Train
DatasetFactory = Callable[[TrainRun, dict], dict]


def load_config(source, overrides: dict | None = None) -> TrainConfig:
    return config_mod.load(TrainConfig, source, overrides)


def model_dir(output: str, name: str) -> str:
    return storage.join(output, name)


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


# Spec options added after runs were trained, left out of the hashes while they keep their default: an
# upgraded fer-ray then skips a finished model (and keeps its version) instead of training it again.
LATER_DEFAULTS = {"ema": 0.0}


def _without_later_defaults(spec_dict: dict) -> dict:
    return {k: v for k, v in spec_dict.items() if not (k in LATER_DEFAULTS and v == LATER_DEFAULTS[k])}


def data_version(config: TrainConfig, splits: dict[int, tuple[list[str], list[str]]], parts: list[str]) -> str:
    """Hash of the configs and the data (the complete face parts and the splits)."""
    run = {k: v for k, v in config_mod.to_dict(config).items() if k not in ("output", "max_concurrent_trials")}
    run["models"] = [_without_later_defaults(m) for m in run.get("models", [])]
    return _hash({"config": run, "parts": [storage.basename(storage.join(p, "..")) + "/" + storage.basename(p)
                                           for p in parts], "splits": sorted(splits.items())})[:16]


def model_splits(config: TrainConfig, summary) -> dict[int, tuple[list[str], list[str]]]:
    """split_seed_offset -> (train video ids, val video ids), one split per offset the models use."""
    from fer_ray.train import data

    splits = {}
    for offset in sorted({m.split_seed_offset for m in config.models}):
        train_ids, val_ids = data.split_videos(summary, config.val_split, config.val_fraction, config.seed + offset)
        if not train_ids or not val_ids:
            raise ValueError(f"cannot split {len(train_ids) + len(val_ids)} video(s) by {config.val_split} into "
                             "train and validation: need at least two subjects/videos")
        splits[offset] = (train_ids, val_ids)
    return splits


def _spec_hash(spec_dict: dict, data_hash: str) -> str:
    relevant = {k: v for k, v in _without_later_defaults(spec_dict).items()
                if k not in ("num_workers", "cpus_per_worker", "use_gpu")}
    return _hash({"spec": relevant, "data": data_hash})[:16]


def _ray_storage(output: str) -> tuple[str, Any]:
    """(storage_path, storage_filesystem) for Ray Train/Tune state under <output>/_ray."""
    fs, path = storage.filesystem(storage.join(output, "_ray"))
    if storage.is_s3(output):
        return path, fs
    os.makedirs(path, exist_ok=True)
    return path, None


# ------------------------------------------------------------------------------------------ trial


def _write_outputs(run: TrainRun, spec_dict: dict, result, started_at: float) -> dict:
    """Best weights, config, per-epoch metrics and the summary (last) of one finished model."""

    from fer_ray.models import create_model, save_checkpoint
    from fer_ray.safe_load import load_data
    from fer_ray.train.loop import STATE_FILE, training_prior

    spec = spec_from_dict(spec_dict)
    out = model_dir(run.output, spec.name)
    if spec.keep == "last":  # the schedule's final weights, whatever a small validation split says
        best_ckpt = result.checkpoint
    else:
        best_ckpt = result.get_best_checkpoint(METRIC, "max") if result.best_checkpoints else None
        best_ckpt = best_ckpt or result.checkpoint
    if best_ckpt is None:
        raise RuntimeError(f"{spec.name}: training reported no checkpoint")
    with best_ckpt.as_directory() as directory:
        best_state = load_data(os.path.join(directory, STATE_FILE), f"{best_ckpt.path}/{STATE_FILE}")
    with result.checkpoint.as_directory() as directory:
        last_state = load_data(os.path.join(directory, STATE_FILE), f"{result.checkpoint.path}/{STATE_FILE}")
    history = last_state["history"]
    best = {k: v for k, v in best_state["history"][-1].items() if k != "confusion"}
    model = create_model(spec.arch, spec.num_classes, **spec.model_kwargs)
    average = best_state.get("average")  # the weight average is what the run validated: export it
    model.load_state_dict(average["weights"] if average else best_state["model"])
    meta = {
        # load_checkpoint rebuilds the model from meta["name"]: the registry name; run_name is ours
        "name": spec.arch, "run_name": spec.name, "arch": spec.arch, "task": spec.task,
        "num_classes": spec.num_classes,
        "classes": list(labels.TASK_CLASSES[spec.task]), "input_size": spec.input_size, "kind": spec.kind,
        "clip_length": spec.clip_length, "config": spec_dict, "metrics": best,
        "model_kwargs": spec.model_kwargs, "version": run.version, "epoch": best_state["epoch"],
    }
    save_checkpoint(storage.join(out, CHECKPOINT_FILE), model, meta)
    # a config of this model alone: what it started from is its resolved `pretrained` URI, not other models
    alone = dataclasses.replace(spec, after=[], init_from=None)
    model_config = TrainConfig(**{**run.train_config, "models": [alone]})
    config_mod.save(model_config, storage.join(out, "config.yaml"))
    storage.write_text(storage.join(out, "metrics.csv"), _metrics_csv(history))
    entry = {
        "arch": spec.arch, "task": spec.task, "input_size": spec.input_size, "kind": spec.kind,
        "num_classes": spec.num_classes, "clip_length": spec.clip_length,
        "checkpoint": f"{spec.name}/{CHECKPOINT_FILE}", "metrics": best,
        "confusion": best_state["history"][-1].get("confusion"),
        "started_at": started_at, "finished_at": time.time(), "epochs": len(history),
        "spec_hash": run.spec_hashes[spec.name], "version": run.version,
        "class_counts": list(run.class_counts[spec.name]),
        "train_prior": training_prior(spec, run.class_counts[spec.name]),
    }
    storage.write_json(storage.join(out, SUMMARY_FILE), entry)
    return entry


def _metrics_csv(history: list[dict]) -> str:
    rows = [{k: v for k, v in row.items() if k != "confusion"} for row in history]
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _finished(run: TrainRun, name: str) -> dict | None:
    uri = storage.join(model_dir(run.output, name), SUMMARY_FILE)
    if not storage.exists(uri):
        return None
    entry = storage.read_json(uri)
    return entry if entry.get("spec_hash") == run.spec_hashes[name] else None


def _trial(tune_config: dict, run: TrainRun, datasets: DatasetFactory) -> None:
    """One Tune trial: train one model with its own TorchTrainer on the datasets the factory gives, then
    write its outputs."""
    import ray
    import ray.train
    import ray.tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from fer_ray.train.loop import train_func
    from fer_ray.train.resources import worker_bundle

    name = tune_config["model"]
    spec_dict = run.specs[name]
    done = _finished(run, name)
    if done is not None:  # finished by an earlier run
        ray.tune.report({**_scalars(done["metrics"]), "status": "skipped", "done_model": True})
        return
    started_at = time.time()
    temporal = spec_dict["kind"] in ("clip", "sequence")
    # the bundle train_all's fit check (fer_ray.train.resources) checks against the node types
    resources = worker_bundle(spec_dict["cpus_per_worker"], spec_dict["use_gpu"],
                              ray.cluster_resources().get("GPU", 0) > 0)
    use_gpu = "GPU" in resources
    storage_path, filesystem = _ray_storage(run.output)
    trainer = TorchTrainer(
        train_func,
        train_loop_config={"spec": spec_dict, "class_counts": run.class_counts[name],
                           "seed": run.seed + spec_dict["seed_offset"]},
        scaling_config=ray.train.ScalingConfig(num_workers=spec_dict["num_workers"], use_gpu=use_gpu,
                                               resources_per_worker=resources),
        datasets=datasets(run, spec_dict),
        # clip/sequence workers each read whole videos of the unsplit datasets (fer_ray.train.loop); a lone
        # worker reads them unsplit too: a split starts a coordinator actor per dataset for nothing
        dataset_config=ray.train.DataConfig(
            datasets_to_split=[] if temporal or spec_dict["num_workers"] == 1 else "all"),
        run_config=ray.train.RunConfig(
            name=f"train-{run.spec_hashes[name]}-{name}",
            storage_path=storage_path, storage_filesystem=filesystem,
            failure_config=ray.train.FailureConfig(max_failures=run.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute=METRIC,
                                                         checkpoint_score_order="max"),
            callbacks=[TuneReportCallback()],
        ),
    )
    result = trainer.fit()
    entry = _write_outputs(run, spec_dict, result, started_at)
    ray.tune.report({**_scalars(entry["metrics"]), "status": "trained", "done_model": True})


def _scalars(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


# ------------------------------------------------------------------------------------------ driver


def _prepare(config: TrainConfig) -> TrainRun:
    """Split, class counts and hashes: everything a trial needs, computed once on the driver."""
    from fer_ray import shards
    from fer_ray.train import data

    summary = data.label_summary(config.faces)
    splits = model_splits(config, summary)
    parts = [p for uri in config.faces for p in shards.complete_parts(uri, schema.FACES_TABLE)]
    version = data_version(config, splits, parts)
    specs = {m.name: spec_to_dict(m) for m in config.models}
    for spec in specs.values():  # a fine-tuned model starts from its pretraining stage's checkpoint
        if spec["init_from"]:
            spec["pretrained"] = storage.join(model_dir(config.output, spec["init_from"]), CHECKPOINT_FILE)
    return TrainRun(
        output=config.output, faces=list(config.faces), splits=splits,
        version=version, specs=specs, spec_hashes={n: _spec_hash(s, version) for n, s in specs.items()},
        class_counts={m.name: data.class_counts(summary, m.task, splits[m.split_seed_offset][0],
                                                m.ignored_labels).tolist() for m in config.models},
        train_config={k: v for k, v in config_mod.to_dict(config).items() if k != "models"},
        seed=config.seed, max_failures=config.max_failures, read_cpus=config.read_cpus,
        face_geometry=face_geometry(config.faces),
    )


def face_geometry(faces: list[str]) -> dict | None:
    """The face geometry and crop side the preprocess outputs were made with (their summary.json), which
    annotate must preprocess new videos with; None when no summary says. Outputs that disagree fail."""
    found = {}
    for uri in faces:
        summary_uri = storage.join(uri, "summary.json")
        summary = storage.read_json(summary_uri) if storage.exists(summary_uri) else {}
        if summary.get("geometry"):
            found[uri] = (str(summary["geometry"]), int(summary["face_size"]))
    if len(set(found.values())) > 1:
        raise ValueError(f"the faces outputs {', '.join(sorted(found))} were made with different face geometries "
                         "(their summary.json): a model set is trained on one (preprocess them again with one)")
    if not found:
        return None
    geometry, size = next(iter(found.values()))
    return {"geometry": geometry, "face_size": size}


def _write_index(config: TrainConfig, run: TrainRun) -> dict:
    index_uri = storage.join(config.output, MODELS_INDEX)
    index = storage.read_json(index_uri) if storage.exists(index_uri) else {"models": {}}
    models = dict(index.get("models", {}))
    for spec in config.models:
        entry = _finished(run, spec.name)
        if entry is not None:
            models[spec.name] = {k: v for k, v in entry.items() if k not in ("confusion", "spec_hash")}
    index = {"version": run.version, "models": models, "updated_at": time.time()}
    if run.face_geometry:
        index["faces"] = run.face_geometry  # annotate preprocesses videos the same way
    storage.write_json(index_uri, index)
    return index


# Credentials Ray Tune would copy from the driver's environment into every trial actor's runtime_env, where
# the runtime-env agent logs them and the dashboard's actor API shows them. Nodes get credentials from their
# own environment or instance role instead (the trial actors inherit it like every other worker).
_CREDENTIAL_VARS = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN",
                              "AWS_SESSION_TOKEN"})


def _keep_credentials_out_of_runtime_envs() -> None:
    from ray.tune.execution import class_cache

    class_cache.ENV_VARS_TO_PROPAGATE = frozenset(class_cache.ENV_VARS_TO_PROPAGATE) - _CREDENTIAL_VARS


def _run_stage(config: TrainConfig, run: TrainRun, datasets: DatasetFactory, names: list[str],
               stage: int) -> dict[str, str]:
    """One Tune experiment over `names` (restored if a previous run left it unfinished); returns errors."""
    import ray.tune as tune

    _keep_credentials_out_of_runtime_envs()
    storage_path, filesystem = _ray_storage(config.output)
    experiment = f"{config.experiment_name}-{run.version[:12]}-s{stage}"
    # The trial function only drives its TorchTrainer: a token CPU share, so trainers get the cores.
    trainable = tune.with_resources(tune.with_parameters(_trial, run=run, datasets=datasets), {"cpu": 0.01})
    exp_path = f"{storage_path}/{experiment}"
    if tune.Tuner.can_restore(exp_path, storage_filesystem=filesystem):
        _LOG.info("restoring Tune experiment %s", exp_path)
        tuner = tune.Tuner.restore(exp_path, trainable, resume_errored=True, storage_filesystem=filesystem)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"model": tune.grid_search(names)},
            tune_config=tune.TuneConfig(max_concurrent_trials=config.max_concurrent_trials),
            run_config=tune.RunConfig(name=experiment, storage_path=storage_path,
                                      storage_filesystem=filesystem, verbose=0),
        )
    errors = {}
    for result in tuner.fit():
        if result.error is not None:
            errors[result.config["model"]] = f"{type(result.error).__name__}: {result.error}"
    return errors


def train_all(config: TrainConfig, datasets: DatasetFactory) -> dict:
    """Train every model of the config (Tune trials, several at once) on the datasets `datasets(run, spec)`
    gives each; returns the run summary.

    {"version", "output", "index" (models.json URI), "models": {name: {..models.json entry.., "status":
    trained|skipped|failed, "error"}}}. Needs `ray.init()` done (or starts a local Ray).
    """
    import ray

    if not ray.is_initialized():
        ray.init()
    run = _prepare(config)
    finished = {m.name for m in config.models if _finished(run, m.name) is not None}
    pending = [m.name for m in config.models if m.name not in finished]
    errors: dict[str, str] = {}
    for stage, names in enumerate(config.stages()):
        todo = [n for n in names if n in pending]
        blocked = [n for n in todo if any(d in errors for d in config.spec(n).after)]
        for name in blocked:
            errors[name] = f"not trained: a model in its `after` list failed ({config.spec(name).after})"
        todo = [n for n in todo if n not in blocked]
        if todo:
            errors.update(_run_stage(config, run, datasets, todo, stage))
    index = _write_index(config, run)
    models = {}
    for spec in config.models:
        entry = index["models"].get(spec.name) if _finished(run, spec.name) else None
        status = "skipped" if spec.name in finished else ("trained" if entry else "failed")
        models[spec.name] = {**(entry or {}), "status": status, **({"error": errors[spec.name]}
                                                                    if spec.name in errors else {})}
    return {"version": run.version, "output": config.output,
            "index": storage.join(config.output, MODELS_INDEX), "models": models}
