"""The video prior (#13): each model's mean prediction over a video divided out of its frames, its strength
chosen on validation videos (calibrate), recorded in models.json and used by annotate unless told.

Hand-built expr probabilities of a "biased" performer: on Neutral frames the model says Sadness 0.5,
Neutral 0.4 (a resting face that reads sad); on Happiness frames Happiness 0.6, Sadness 0.3. Raw, every
Neutral frame is called Sadness; with the video's mean divided out, Sadness's share of every frame
drops and the Neutral frames come out Neutral. A "fair" performer's model is right on every frame, so there is no bias
to take out and a full correction does harm.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fer_ray import config as cfg
from fer_ray import labels, storage
from fer_ray.evaluate import ablations
from fer_ray.evaluate import calibrate as calibration
from fer_ray.infer import cascade, systems
from fer_ray.infer.predict import System, VideoScores, predict_video
from fer_ray.jobs import annotate

N, H, SA = (labels.class_index(n) for n in ("Neutral", "Happiness", "Sadness"))
SYSTEM = System(expr=("expr/base",))


def _row(shares: dict[int, float]) -> np.ndarray:
    rest = (1.0 - sum(shares.values())) / (labels.NUM_CLASSES - len(shares))
    row = np.full(labels.NUM_CLASSES, rest)
    for k, v in shares.items():
        row[k] = v
    return row


def _biased(truth: np.ndarray) -> VideoScores:
    rows = [_row({N: 0.4, SA: 0.5}) if y == N else _row({H: 0.6, SA: 0.3}) for y in truth]
    return VideoScores(np.arange(len(truth)), {"expr/base": np.stack(rows)})


def _fair(truth: np.ndarray) -> VideoScores:
    # right on every frame, only just on the Neutral ones: the video's mean is mostly Neutral, so taking
    # all of it out turns those frames into Sadness
    rows = [_row({N: 0.5, SA: 0.45}) if y == N else _row({H: 0.5, N: 0.3, SA: 0.05}) for y in truth]
    return VideoScores(np.arange(len(truth)), {"expr/base": np.stack(rows)})


def _truth(k: int = 0) -> np.ndarray:
    return np.repeat([N, H, N, H], [30 + k, 20, 30, 20 + k])


def _labels(video: VideoScores, video_prior: float, truth: np.ndarray) -> np.ndarray:
    return predict_video(video, dataclasses.replace(SYSTEM, video_prior=video_prior), 0, len(truth))["label"]


def test_dividing_out_the_videos_mean_turns_a_shared_bias_back():
    truth = _truth()
    video = _biased(truth)
    probs = video.probs["expr/base"]
    assert np.array_equal(cascade.correct_video_prior(probs, 0.0), probs)  # strength 0: unchanged
    corrected = cascade.correct_video_prior(probs, 0.75)
    assert np.allclose(corrected.sum(axis=1), 1.0)  # still probability rows
    assert (_labels(video, 0.0, truth)[truth == N] == SA).all()  # raw: every Neutral frame read as Sadness
    assert np.array_equal(_labels(video, 0.75, truth), truth)  # the video's own mean taken out: all right
    # the correction is the video's own: the same frames in a video of Happiness only stay as they were
    happy = VideoScores(np.arange(5), {"expr/base": np.stack([_row({N: 0.4, SA: 0.5})] * 5)})
    assert (_labels(happy, 0.0, np.zeros(5, int)) == SA).all()


def test_a_video_that_never_changes_keeps_its_answer_and_a_photo_its_probabilities():
    steady = np.stack([_row({N: 0.4, SA: 0.5})] * 30)  # every frame alike: nothing to tell apart
    for strength in (0.25, 0.5, 0.75):
        assert (cascade.correct_video_prior(steady, strength).argmax(axis=1) == SA).all()
    photo = steady[:1]  # a photo is a one-frame video: its mean is itself and says nothing about the person
    np.testing.assert_array_equal(cascade.correct_video_prior(photo, 0.75), photo)


def test_a_system_refuses_a_video_prior_outside_zero_to_below_one():
    with pytest.raises(ValueError, match="video_prior must lie in"):
        System(expr=("expr/base",), video_prior=1.0)  # 1 would flatten a steady video to uniform
    with pytest.raises(ValueError, match="strength must lie in"):
        cascade.correct_video_prior(np.full((2, 8), 0.125), 1.5)
    with pytest.raises(cfg.ConfigError, match="video_prior must lie in"):
        annotate.load_config({"input": "in", "models": "m", "output": "o", "video_prior": -0.1})


def test_validation_videos_choose_the_video_prior_the_scored_ones_would_not():
    biased = {f"b{k}": _biased(_truth(k)) for k in range(2)}
    fair = {f"f{k}": _fair(_truth(k)) for k in range(2)}
    truth = {name: _truth(int(name[1])) for name in [*biased, *fair]}
    chosen = calibration.calibrate(biased, truth, SYSTEM, windows=(0,))
    would = calibration.calibrate(fair, truth, SYSTEM, windows=(0,))
    assert chosen["video_prior"] > 0 and would["video_prior"] == 0.0
    assert chosen["validation"]["videos"] == ["b0", "b1"]  # only the validation videos' labels were read
    grid = {(g["video_prior"], g["window"]): g["f1"] for g in chosen["validation"]["grid"]}
    assert set(grid) == {(p, 0) for p in calibration.VIDEO_PRIORS}
    assert grid[(chosen["video_prior"], 0)] == chosen["validation"]["f1"] > grid[(0.0, 0)]
    off = calibration.calibrate(biased, truth, SYSTEM, windows=(0,), video_priors=(0.0,))  # --video-priors 0
    assert off["video_prior"] == 0.0


def test_held_out_settings_never_use_the_videos_own_labels():
    videos = {"b0": _biased(_truth(0)), "b1": _biased(_truth(1)), "f0": _fair(_truth(0))}
    truth = {name: _truth(int(name[1])) for name in videos}
    chosen = ablations.held_out_settings(videos, truth, SYSTEM, windows=(0, 8), video_priors=(0.0, 0.75))
    # held out, the fair video gets the strength the biased ones chose, and pays for it on its own frames
    assert chosen["f0"] == ablations.Setting(0, 0.75)
    labels_of = ablations.predict(videos, truth, SYSTEM, chosen)
    assert (labels_of["f0"] != truth["f0"]).any() and np.array_equal(labels_of["b0"], truth["b0"])
    # the window-only pick is the same function with the system's own video prior
    assert ablations.held_out_windows(videos, truth, SYSTEM, (0, 8)) == {v: 0 for v in videos}


def test_annotate_takes_the_recorded_video_prior_unless_told(tmp_path):
    models = str(tmp_path / "models")
    storage.write_json(f"{models}/models.json", {"models": {}, "calibration": {
        "cfc_sp": {"window": 16, "prior_correction": False, "video_prior": 0.5, "validation": {"videos": ["a"]}}}})
    base = {"input": "in", "models": models, "output": str(tmp_path / "out")}
    chosen = annotate.calibrated(annotate.load_config(base))
    assert chosen.video_prior == 0.5 and annotate.calibration_used(chosen)["used"]
    assert annotate.postprocess_kwargs(chosen, [], [], "v", {})["video_prior"] == 0.5  # what the actors get
    told = annotate.calibrated(annotate.load_config(base | {"video_prior": 0.0}))
    assert told.video_prior == 0.0 and not annotate.calibration_used(told)["used"]
    plain = annotate.calibrated(annotate.load_config(base | {"system": "baseline"}))  # not calibrated: off
    assert plain.video_prior == 0.0


def test_the_video_prior_is_part_of_the_model_version():
    index = {"version": "i"}
    versions = {systems.model_version(index, [], "cfc_sp", 8, video_prior=p) for p in (0.0, 0.5, 0.75)}
    assert len(versions) == 3
    # off leaves the version of runs from before the video prior existed as it was
    assert systems.model_version(index, [], "cfc_sp", 8, video_prior=0.0) == systems.model_version(
        index, [], "cfc_sp", 8)
