"""One video's prediction from per-model softmax probabilities: ensemble, Smooth Predicting, cascade, gap fill.

The annotate job (fer_ray.infer.postprocess) runs it on each video's fresh logits; the ablation tables
(fer_ray.evaluate.ablations) run it on stored logits under many systems and windows, so evaluation scores
exactly the code that produced the predictions.

A `System` says which models it combines:
- expr models only: the sum of their softmax probabilities, argmax over the 8 ABAW classes;
- coarse + negative models: the CFC-SP cascade (coarse ensemble, negative ensemble, routing).
A system's video prior (0 by default) first divides each model's mean prediction over the video's rows out
of its frames (cascade.correct_video_prior). Smooth Predicting is then applied to each ensemble's
probabilities (rows = frames with that system's logits, in frame order) before the argmax/routing; frames
where any of the system's models has no logits count as "no face" and are filled from the nearest frames
(fer_ray.infer.fill), as the submission is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from fer_ray.infer import cascade, fill, smoothing

__all__ = ["System", "VideoScores", "predict_video"]


@dataclass(frozen=True)
class System:
    """Which models a prediction combines; weights (model -> weight) default to 1 each.

    video_prior: how strongly each model's mean prediction over the video is divided out of its frames
    before the ensemble (cascade.correct_video_prior; 0 off, below 1)."""

    expr: tuple[str, ...] = ()
    coarse: tuple[str, ...] = ()
    negative: tuple[str, ...] = ()
    weights: Mapping[str, float] = field(default_factory=dict)
    video_prior: float = 0.0

    def __post_init__(self):
        if bool(self.coarse) != bool(self.negative):
            raise ValueError("a cascade needs both coarse and negative models")
        if bool(self.expr) == bool(self.coarse):
            raise ValueError("a system is either expr models or a coarse+negative cascade")
        if not 0.0 <= self.video_prior < 1.0:
            raise ValueError(f"video_prior must lie in [0, 1), got {self.video_prior}")

    @property
    def models(self) -> tuple[str, ...]:
        return self.expr + self.coarse + self.negative

    @property
    def name(self) -> str:
        def part(names):
            return "+".join(cascade.split_model_name(n)[1] for n in names)
        if self.expr:
            return f"expr[{part(self.expr)}]"
        return f"coarse[{part(self.coarse)}]>negative[{part(self.negative)}]"

    def ensemble(self, video: VideoScores, names: Sequence[str], rows: np.ndarray) -> np.ndarray:
        members = [cascade.correct_video_prior(video.probs[n][rows], self.video_prior) for n in names]
        return cascade.ensemble_probs(members, [float(self.weights.get(n, 1.0)) for n in names])


@dataclass
class VideoScores:
    """One video's softmax probabilities per model over the union of its frames (NaN rows: no logits)."""

    frames: np.ndarray
    probs: dict[str, np.ndarray]


def _system_rows(video: VideoScores, system: System) -> np.ndarray:
    """Rows where every model of the system has logits."""
    ok = np.ones(video.frames.size, dtype=bool)
    for name in system.models:
        if name not in video.probs:
            return np.zeros(video.frames.size, dtype=bool)
        ok &= ~np.isnan(video.probs[name]).any(axis=1)
    return ok


def predict_video(video: VideoScores, system: System, window: int, num_frames: int) -> dict[str, np.ndarray]:
    """Labels (num_frames,), probs (num_frames, 8) and the filled mask of one system on one video.

    A cascade also returns its smoothed, row-normalised coarse_probs (num_frames, 5) and
    negative_probs (num_frames, 4)."""
    rows = _system_rows(video, system)
    per_face: dict[str, np.ndarray] = {}
    if system.expr:
        expr = smoothing.smooth(system.ensemble(video, system.expr, rows), window)
        face_labels, per_face["probs"] = expr.argmax(axis=1), cascade.normalize_rows(expr)
    else:
        coarse = smoothing.smooth(system.ensemble(video, system.coarse, rows), window)
        negative = smoothing.smooth(system.ensemble(video, system.negative, rows), window)
        face_labels, per_face["probs"] = cascade.route(coarse, negative), cascade.abaw_probs(coarse, negative)
        per_face["coarse_probs"] = cascade.normalize_rows(coarse)
        per_face["negative_probs"] = cascade.normalize_rows(negative)
    frames = video.frames[rows]
    label_full, found = fill.expand(frames, face_labels, num_frames)
    label_full, filled = fill.fill_gaps(label_full, found)
    out = {"label": label_full, "filled": filled}
    for name, values in per_face.items():  # probs, and for a cascade its smoothed coarse/negative parts
        out[name] = fill.fill_gaps(fill.expand(frames, values, num_frames)[0], found)[0]
    return out
