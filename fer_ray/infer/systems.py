"""Which trained models each published system uses, read from the training job's `models.json` index.

`models.json` (written by fer_ray.train.launch) maps a run name to its arch, task (expr|coarse|negative),
kind (frame|clip|sequence), input size and checkpoint path relative to the index. A system picks:
- cfc_sp:   every frame model of task coarse (softmax-sum ensemble) and of task negative (cascade);
- baseline: one expr frame model (the one named "baseline" if present, else the first);
- mao:      expr frame models plus clip models (Mao's CNN-GRU / CNN-Transformer), weighted;
- prl:      expr sequence models (PRL fusion over 64-frame chunks).
Logit columns are named "<task>/<run name>" (fer_ray.infer.cascade.model_name), the convention the
ablation tables read.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from fer_ray import schema, storage
from fer_ray.config import ConfigError
from fer_ray.infer import cascade
from fer_ray.infer.predict import System

SYSTEMS = ("cfc_sp", "baseline", "mao", "prl")
INDEX_FILE = schema.MODELS_INDEX


@dataclass(frozen=True)
class ModelEntry:
    """One trained model as inference needs it."""

    name: str
    arch: str
    task: str
    kind: str
    input_size: int
    checkpoint: str  # absolute URI
    train_prior: tuple[float, ...] | None = None  # class shares seen in training (models.json), if recorded

    @property
    def key(self) -> str:
        return cascade.model_name(self.task, self.name)


def read_index(models_uri: str) -> dict:
    uri = storage.join(models_uri, INDEX_FILE)
    if not storage.exists(uri):
        raise FileNotFoundError(f"no {INDEX_FILE} under {models_uri}: run jobs/train_all.py first, "
                                f"or point --models at its --output")
    return storage.read_json(uri)


def entries(index: dict, models_uri: str) -> list[ModelEntry]:
    out = []
    for name, info in sorted(index.get("models", {}).items()):
        checkpoint = info["checkpoint"]
        if "://" not in checkpoint and not checkpoint.startswith("/"):
            checkpoint = storage.join(models_uri, checkpoint)
        prior = info.get("train_prior")
        out.append(ModelEntry(name, info["arch"], info["task"], info.get("kind", "frame"),
                              int(info["input_size"]), checkpoint, tuple(prior) if prior else None))
    return out


def select(all_entries: list[ModelEntry], system: str, names: list[str] | None = None) -> list[ModelEntry]:
    """The models `system` needs (or exactly `names`), failing with what is available."""
    if system not in SYSTEMS:
        raise ValueError(f"unknown system {system!r}; valid: {', '.join(SYSTEMS)}")
    available = ", ".join(f"{e.name} ({e.task}, {e.kind})" for e in all_entries) or "none"
    if names:
        by_name = {e.name: e for e in all_entries}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise ValueError(f"models {missing} not in models.json; available: {available}")
        chosen = [by_name[n] for n in names]
    else:
        chosen = _default_models(all_entries, system)
    if not chosen:
        raise ValueError(f"models.json has no models for system {system!r}; available: {available}")
    system_of(chosen, system)  # validates the combination
    return chosen


def _default_models(all_entries: list[ModelEntry], system: str) -> list[ModelEntry]:
    frame = [e for e in all_entries if e.kind == "frame"]
    if system == "cfc_sp":
        return [e for e in frame if e.task in ("coarse", "negative")]
    if system == "baseline":
        expr = [e for e in frame if e.task == "expr"]
        named = [e for e in expr if "baseline" in e.name]
        return (named or expr)[:1]
    if system == "mao":
        return [e for e in all_entries if e.task == "expr" and e.kind in ("frame", "clip")
                and ("mao" in e.name or e.kind == "clip")]
    return [e for e in all_entries if e.task == "expr" and e.kind == "sequence"]


def ablation_extras(all_entries: list[ModelEntry], system: str, chosen: list[ModelEntry]) -> list[ModelEntry]:
    """Frame models whose logits are kept beside the system's (--keep-logits) so the CFC-SP Table 1
    (baseline vs coarse-to-fine) can be computed from one run: the baseline for cfc_sp, the cascade for
    baseline. They never enter the system's own predictions."""
    other = {"cfc_sp": "baseline", "baseline": "cfc_sp"}.get(system)
    if other is None:
        return []
    return [e for e in _default_models(all_entries, other) if e not in chosen]


def system_of(chosen: list[ModelEntry], system: str, weights: dict[str, float] | None = None,
              video_prior: float = 0.0) -> System:
    """The predict.System combining the chosen models (weights by run name)."""
    keys = {task: tuple(e.key for e in chosen if e.task == task) for task in ("expr", "coarse", "negative")}
    by_key = {e.key: float((weights or {}).get(e.name, 1.0)) for e in chosen}
    if system == "cfc_sp":
        if not keys["coarse"] or not keys["negative"] or keys["expr"]:
            raise ValueError("cfc_sp needs coarse and negative models (and no expr models)")
        return System(coarse=keys["coarse"], negative=keys["negative"], weights=by_key, video_prior=video_prior)
    if not keys["expr"] or keys["coarse"] or keys["negative"]:
        raise ValueError(f"{system} needs expr models only")
    return System(expr=keys["expr"], weights=by_key, video_prior=video_prior)


def check_prior_correction(chosen: list[ModelEntry]) -> None:
    """Prior correction needs frame models (it adjusts logits; clip/sequence models emit features) whose
    models.json entry records the training prior."""
    temporal = [e.name for e in chosen if e.kind != "frame"]
    if temporal:
        raise ConfigError(f"prior correction adjusts frame-model logits; {temporal} are clip/sequence models: "
                         "use it with the cfc_sp or baseline system")
    missing = [e.name for e in chosen if e.train_prior is None]
    if missing:
        raise ConfigError(f"prior correction needs each model's train_prior in models.json; {missing} have none "
                         "(trained before it was recorded): retrain them or drop --prior-correction")


def model_version(index: dict, chosen: list[ModelEntry], system: str, window: int,
                  weights: dict[str, float] | None = None, prior_correction: bool = False,
                  flip_test: bool = False, video_prior: float = 0.0, adapt_bn: float = 0.0,
                  crop_test: bool = False) -> str:
    """A short stable id of what produced a prediction: the index version, the models, system, window,
    prior corrections, flip and crop tests and per-video normalisation."""
    fields = {
        "index": index.get("version", ""), "system": system, "window": window,
        "models": [(e.name, e.checkpoint.rsplit("/", 2)[-2:]) for e in chosen],
        "weights": weights or {},
    }
    if prior_correction:  # only when on, so versions of earlier runs stay what they were
        fields["prior_correction"] = True
    if flip_test:
        fields["flip_test"] = True
    if video_prior:
        fields["video_prior"] = float(video_prior)
    if adapt_bn:
        fields["adapt_bn"] = float(adapt_bn)
    if crop_test:
        fields["crop_test"] = True
    payload = json.dumps(fields, sort_keys=True)
    return hashlib.sha1(payload.encode()).hexdigest()[:12]


def resolve(config) -> tuple[list[ModelEntry], list[ModelEntry], str]:
    """(the system's models, models whose logits are only kept, model version) for an annotate config;
    fails before any video is decoded when the options cannot be served."""
    index = read_index(config.models)
    available = entries(index, config.models)
    chosen = select(available, config.system, config.model_names)
    version = model_version(index, chosen, config.system, config.window, config.weights, config.prior_correction,
                            bool(config.flip_test), float(config.video_prior or 0.0),
                            float(config.adapt_bn or 0.0), bool(config.crop_test))
    extras = ablation_extras(available, config.system, chosen) if config.keep_logits else []
    if config.prior_correction:
        check_prior_correction(chosen + extras)
    return chosen, extras, version
