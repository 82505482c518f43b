"""Calibration on labelled validation videos: the Smooth Predicting window, whether to divide out the
models' training priors and how strongly to divide out each video's own mean prediction (the video prior),
chosen where they will be used (videos), never on the videos a run is scored on.

`calibrate(videos, truth, system, priors)` scores every (prior correction, video prior, ensemble weights,
window) of a system on the validation videos' stored logits (annotate --keep-logits) and keeps the best
pooled macro-F1; ties go to no correction, the weaker video prior, equal weights, then the smaller window
(the simpler choice). Weights are searched for the ensemble with several members (CFC-SP's coarse nets, or
a baseline's expr models): each 0.5, 1 or 2. The result is what `jobs/calibrate.py` records in models.json
under `calibration.<system>`, and what annotate then uses unless --window / --prior-correction /
--video-prior say otherwise. It carries the validation figures it came from, beside the majority-class and
chance figures of the same frames, so a report can show why.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from fer_ray.evaluate import ablations, metrics
from fer_ray.infer import cascade
from fer_ray.infer.predict import System, VideoScores

# The paper's sweep plus the short windows that suit segments of 1-6 s (the dev videos' expressions).
WINDOWS = (0, 8, 16, 32, 64, 128, 256, 512)
MEMBER_WEIGHTS = (0.5, 1.0, 2.0)
VIDEO_PRIORS = (0.0, 0.25, 0.5, 0.75)  # cascade.correct_video_prior's strengths, from off


def weight_options(system: System) -> list[dict[str, float]]:
    """Ensemble weights to try: every member of the ensemble with several members at each of MEMBER_WEIGHTS,
    sets that differ only by a common factor counted once; {} (equal weights) first."""
    members = system.coarse or system.expr
    if len(members) < 2:
        return [{}]
    out, seen = [{}], {(1.0,) * len(members)}
    for values in itertools.product(MEMBER_WEIGHTS, repeat=len(members)):
        normal = tuple(round(v / max(values), 6) for v in values)
        if normal not in seen:
            seen.add(normal)
            out.append(dict(zip(members, values)))
    return out


def system_for(videos: Mapping[str, VideoScores], system: str) -> System:
    """The annotate system's models among the stored logits: cfc_sp -> the coarse/negative cascade,
    baseline -> the expr ensemble. (Mao and PRL store their temporal heads' logits; not calibrated yet.)"""
    tasks = ablations.models_by_task(videos)
    if system == "cfc_sp" and tasks["coarse"] and tasks["negative"]:
        return System(coarse=tuple(tasks["coarse"]), negative=tuple(tasks["negative"]))
    if system == "baseline" and tasks["expr"]:
        return System(expr=tuple(tasks["expr"]))
    raise ValueError(f"cannot calibrate system {system!r} from these logits (models: "
                     f"{', '.join(sorted(m for names in tasks.values() for m in names)) or 'none'}); "
                     "calibration supports cfc_sp and baseline")


def prior_corrected(videos: Mapping[str, VideoScores], priors: Mapping[str, Sequence[float]]
                    ) -> dict[str, VideoScores] | None:
    """The stored probabilities with each model's training prior divided out (what annotate
    --prior-correction computes), or None when some model has no recorded prior. `priors`: run name ->
    class shares (models.json `train_prior`)."""
    out = {}
    for video_id, scores in videos.items():
        probs = {}
        for model, values in scores.probs.items():
            prior = priors.get(cascade.split_model_name(model)[1])
            if prior is None:
                return None
            probs[model] = cascade.correct_prior(values, prior)
        out[video_id] = VideoScores(scores.frames, probs)
    return out


def calibrate(videos: Mapping[str, VideoScores], truth: Mapping[str, np.ndarray], system: System,
              priors: Mapping[str, Sequence[float]] | None = None, windows: Sequence[int] = WINDOWS,
              video_priors: Sequence[float] = VIDEO_PRIORS) -> dict:
    """{"window", "prior_correction", "video_prior", "weights", "validation": {...}}: the best pooled
    macro-F1 on these videos."""
    names = sorted(set(videos) & set(truth))
    if not names:
        raise ValueError("no validation video has both stored logits and labels")
    options = {False: dict(videos)}
    corrected = prior_corrected(videos, priors or {})
    if corrected is not None:
        options[True] = corrected
    y_true = np.concatenate([np.asarray(truth[v], dtype=np.int64) for v in names])
    scores = []
    grid = itertools.product(options.items(), sorted({float(p) for p in video_priors}), weight_options(system),
                             sorted({int(w) for w in windows}))
    for (correction, scored), video_prior, weights, window in grid:
        predicted = ablations.predict(scored, truth, replace(system, weights=weights, video_prior=video_prior),
                                      window)
        f1 = metrics.macro_f1(y_true, np.concatenate([predicted[v] for v in names]))
        scores.append({"prior_correction": correction, "video_prior": video_prior, "weights": run_names(weights),
                       "window": window, "f1": float(f1)})
    best = max(scores, key=lambda s: (s["f1"], not s["prior_correction"], -s["video_prior"], not s["weights"],
                                      -s["window"]))
    annotated = int((y_true >= 0).sum())
    reference = metrics.reference_scores(y_true)
    return {"window": best["window"], "prior_correction": best["prior_correction"],
            "video_prior": best["video_prior"], "weights": best["weights"],
            "validation": {"videos": names, "annotated_frames": annotated, "f1": best["f1"], "grid": scores,
                           "majority_f1": reference["majority_f1"], "chance_f1": reference["chance_f1"]}}


def run_names(weights: Mapping[str, float]) -> dict[str, float]:
    """{"coarse/<run>": w} -> {"<run>": w}: annotate's weights are by models.json run name."""
    return {cascade.split_model_name(model)[1]: float(w) for model, w in weights.items()}
