"""The calibrate job: choose a system's Smooth Predicting window, prior corrections and (when asked) flip test
and per-video normalisation on labelled validation videos and record them in models.json, where annotate takes
them by default.

`run(config)` annotates the validation videos (window 0, no correction, logits kept) under
`<output>/annotate` (resumable, as annotate is), scores every (correction, window) on their stored logits
(fer_ray.evaluate.calibrate) and writes the choice and the validation figures it came from to
`<output>/calibration.json` and to `<models>/models.json` under `calibration.<system>`. With `flip_tests:
[false, true]` it also scores the faces of that run with the flip test (`<output>/annotate_flip`, model time
only: no second decode or detection) and keeps the better; `adapt_bn: [0, 0.5]` does the same for
per-video normalisation at those strengths (`<output>/annotate_adapt0.5`, `annotate_flip_adapt0.5`). Pick
validation videos of performers that are neither in the training set nor among the videos you will score.
"""

from __future__ import annotations

import itertools
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
    video_priors: list[float] = field(default_factory=lambda: list(calibration.VIDEO_PRIORS))  # [0.0]: never
    flip_tests: list[bool] = field(default_factory=lambda: [False])  # annotate's flip test settings to try
    adapt_bn: list[float] = field(default_factory=lambda: [0.0])  # annotate's per-video normalisation strengths
    annotate: dict = field(default_factory=dict)  # more annotate options (stride, max_frames, track_every, ...)

    def validate(self) -> None:
        if self.system not in ("cfc_sp", "baseline"):
            raise cfg.ConfigError(f"system {self.system!r} cannot be calibrated yet; valid: cfc_sp, baseline")
        if not self.windows or any(w < 0 for w in self.windows):
            raise cfg.ConfigError(f"windows must be one or more values >= 0, got {self.windows}")
        if not self.video_priors or any(not 0.0 <= p < 1.0 for p in self.video_priors):
            raise cfg.ConfigError(f"video_priors must be one or more values in [0, 1), got {self.video_priors}")
        if not self.flip_tests:
            raise cfg.ConfigError("flip_tests must hold false, true or both")
        if not self.adapt_bn or any(not 0.0 <= s <= 1.0 for s in self.adapt_bn):
            raise cfg.ConfigError(f"adapt_bn must be one or more strengths in [0, 1], got {self.adapt_bn}")
        fixed = {"input", "models", "output", "system", "window", "prior_correction", "video_prior", "flip_test",
                 "adapt_bn", "keep_logits"}
        if set(self.annotate) & fixed:
            raise cfg.ConfigError(f"annotate options may not set {', '.join(sorted(set(self.annotate) & fixed))}: "
                                  "the calibrate job sets them")


def run(config: CalibrateConfig) -> dict:
    """Annotate the validation videos, calibrate, record; returns the calibration."""
    index = systems.read_index(config.models)
    priors = {name: m["train_prior"] for name, m in index.get("models", {}).items() if m.get("train_prior")}
    found, source = {}, config.input
    options = itertools.product(sorted(set(config.flip_tests)), sorted({float(s) for s in config.adapt_bn}))
    for flip, adapt in options:  # the first run decodes the videos; the others read its faces
        annotated = storage.join(config.output, run_folder(flip, adapt, first=not found))
        job = annotate.load_config({**config.annotate, "input": source, "models": config.models,
                                    "output": annotated, "system": config.system, "window": 0,
                                    "prior_correction": False, "video_prior": 0.0, "flip_test": flip,
                                    "adapt_bn": adapt, "keep_logits": True})
        summary = annotate.run(job)
        if not summary["videos"]:
            raise ValueError(f"calibrate: no validation video could be annotated ({nothing_annotated(summary)})")
        source = source if annotate.is_faces_output(source) else annotated  # where this run's faces are
        videos = ablations.group_logits(readers.read_logits(annotated))
        calibrated = calibration.calibrate(videos, load_truth(config.labels, sorted(videos)),
                                           calibration.system_for(videos, config.system), priors, config.windows,
                                           config.video_priors)
        found[flip, adapt] = calibrated | {"flip_test": flip, "adapt_bn": adapt,
                                           "model_version": summary["model_version"]}
    # ties: the cheaper run (no flip test), then the weaker normalisation
    chosen = max(found.values(), key=lambda c: (c["validation"]["f1"], not c["flip_test"], -c["adapt_bn"]))
    chosen["validation"] |= compared(found)
    chosen |= {"input": config.input, "labels": config.labels}
    storage.write_json(storage.join(config.output, "calibration.json"), chosen)
    index.setdefault("calibration", {})[config.system] = chosen
    storage.write_json(storage.join(config.models, schema.MODELS_INDEX), index)  # one whole file, atomically
    log.info("%s: window %d, prior correction %s, video prior %g, flip test %s, per-video normalisation %g: "
             "macro-F1 %.3f on %d validation videos (majority %.3f, chance %.3f)", config.system, chosen["window"],
             chosen["prior_correction"], chosen["video_prior"], chosen["flip_test"], chosen["adapt_bn"],
             chosen["validation"]["f1"], len(chosen["validation"]["videos"]), chosen["validation"]["majority_f1"],
             chosen["validation"]["chance_f1"])
    return chosen


def run_folder(flip: bool, adapt: float, first: bool) -> str:
    """Where one (flip test, per-video normalisation strength) run of the validation videos goes: the first
    run, which decodes them, is `annotate`; the others, which read its faces, are named by what they add."""
    if first:
        return "annotate"
    return "annotate" + annotate.options_suffix(flip_test=flip, adapt_bn=adapt)


def compared(found: dict) -> dict:
    """The best validation macro-F1 at each flip test setting ("off"/"on") and each normalisation strength
    ("0", "0.5", ...), where several were tried (what the report shows beside the choice)."""
    out = {}
    for name, index in (("flip_test_f1", 0), ("adapt_bn_f1", 1)):
        settings = sorted({key[index] for key in found})
        if len(settings) > 1:
            out[name] = {_setting_name(value): max(c["validation"]["f1"] for key, c in found.items()
                                                   if key[index] == value) for value in settings}
    return out


def _setting_name(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}"


def nothing_annotated(summary: dict) -> str:
    """Why a validation run annotated nothing: its first failure (the job's own reason), or that there was
    no video."""
    failures = summary.get("failures") or []
    if not failures:
        return "the input holds no video"
    first = failures[0]
    return f"{len(failures)} failed; {first.get('video_id')}: {first.get('error')}"

