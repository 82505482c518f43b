"""The calibrate job: choose a system's Smooth Predicting window and prior correction on labelled validation
videos and record them in models.json, where annotate takes them by default.

`run(config)` annotates the validation videos (window 0, no correction, logits kept) under
`<output>/annotate` (resumable, as annotate is), scores every (correction, window) on their stored logits
(fer_ray.evaluate.calibrate) and writes the choice and the validation figures it came from to
`<output>/calibration.json` and to `<models>/models.json` under `calibration.<system>`. Pick validation
videos of performers that are neither in the training set nor among the videos you will score.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from fer_ray import config as cfg
from fer_ray import schema, storage
from fer_ray.evaluate import ablations
from fer_ray.evaluate import calibrate as calibration
from fer_ray.evaluate.run import load_truth
from fer_ray.infer import readers, systems
from fer_ray.jobs import annotate

log = logging.getLogger(__name__)


@dataclass
class CalibrateConfig:
    """`jobs/calibrate.py` options: validation videos (manifest, folder, s3:// prefix or preprocess output),
    their labels (EXPR txt folder or CSV, as evaluate takes), the models to calibrate and a work folder."""

    input: str
    labels: str
    models: str
    output: str
    system: str = "cfc_sp"
    windows: list[int] = field(default_factory=lambda: list(calibration.WINDOWS))
    annotate: dict = field(default_factory=dict)  # more annotate options (stride, max_frames, track_every, ...)

    def validate(self) -> None:
        if self.system not in ("cfc_sp", "baseline"):
            raise cfg.ConfigError(f"system {self.system!r} cannot be calibrated yet; valid: cfc_sp, baseline")
        if not self.windows or any(w < 0 for w in self.windows):
            raise cfg.ConfigError(f"windows must be one or more values >= 0, got {self.windows}")
        fixed = {"input", "models", "output", "system", "window", "prior_correction", "keep_logits"}
        if set(self.annotate) & fixed:
            raise cfg.ConfigError(f"annotate options may not set {', '.join(sorted(set(self.annotate) & fixed))}: "
                                  "the calibrate job sets them")


def run(config: CalibrateConfig) -> dict:
    """Annotate the validation videos, calibrate, record; returns the calibration."""
    annotated = storage.join(config.output, "annotate")
    job = annotate.load_config({**config.annotate, "input": config.input, "models": config.models,
                                "output": annotated, "system": config.system, "window": 0,
                                "prior_correction": False, "keep_logits": True})
    summary = annotate.run(job)
    videos = ablations.group_logits(readers.read_logits(annotated))
    truth = load_truth(config.labels, sorted(videos))
    index = systems.read_index(config.models)
    priors = {name: m["train_prior"] for name, m in index.get("models", {}).items() if m.get("train_prior")}
    chosen = calibration.calibrate(videos, truth, calibration.system_for(videos, config.system), priors,
                                   config.windows)
    chosen |= {"input": config.input, "labels": config.labels, "model_version": summary["model_version"]}
    storage.write_json(storage.join(config.output, "calibration.json"), chosen)
    index.setdefault("calibration", {})[config.system] = chosen
    storage.write_json(storage.join(config.models, schema.MODELS_INDEX), index)  # one whole file, atomically
    log.info("%s: window %d, prior correction %s: macro-F1 %.3f on %d validation videos (majority %.3f, "
             "chance %.3f)", config.system, chosen["window"], chosen["prior_correction"],
             chosen["validation"]["f1"], len(chosen["validation"]["videos"]), chosen["validation"]["majority_f1"],
             chosen["validation"]["chance_f1"])
    return chosen

