"""Calibration (#13): the SP window and prior correction chosen on validation videos only, recorded in
models.json, and used by annotate unless its flags say otherwise.

Hand-built expr probabilities: "steady" videos hold one expression for 40 frames at a time and the model
is right at 0.6 (the rest spread) except on every 3rd frame, where Surprise gets 0.55 (a window outvotes
those);
"flicker" videos change expression every 4 frames with the model always right at 0.9 (any long window
smears the changes). Validating on steady videos picks a long window, on flicker videos window 0.
"""

from __future__ import annotations

import numpy as np
import pytest

from fer_ray import labels, storage
from fer_ray.evaluate import calibrate as calibration
from fer_ray.infer.predict import System, VideoScores
from fer_ray.jobs import annotate

N, H, SU = (labels.class_index(n) for n in ("Neutral", "Happiness", "Surprise"))
SYSTEM = System(expr=("expr/base",))


def _video(truth: np.ndarray, right: float, wrong_every: int | None, wrong: float = 0.55) -> VideoScores:
    probs = np.full((len(truth), labels.NUM_CLASSES), 0.0)
    for i, y in enumerate(truth):
        if wrong_every and i % wrong_every == 0:
            probs[i, SU] = wrong
            probs[i, y] = 1 - wrong
        else:  # the rest spread over the other classes
            probs[i] = (1 - right) / (labels.NUM_CLASSES - 1)
            probs[i, y] = right
    return VideoScores(np.arange(len(truth)), {"expr/base": probs})


def _steady(k: int) -> tuple[np.ndarray, VideoScores]:
    truth = np.repeat([N, H] * 3, 40)[k * 7:][:200]
    return truth, _video(truth, 0.6, 3)


def _flicker(k: int) -> tuple[np.ndarray, VideoScores]:
    truth = np.tile(np.repeat([N, H, SU], 4), 20)[k:][:200]
    return truth, _video(truth, 0.9, None)


def _set(make, names):
    pairs = {name: make(k) for k, name in enumerate(names)}
    return {n: v for n, (_, v) in pairs.items()}, {n: t for n, (t, _) in pairs.items()}


def test_validation_videos_choose_the_window_the_scored_ones_would_not():
    validation, validation_truth = _set(_steady, ["s1", "s2"])
    scored, scored_truth = _set(_flicker, ["f1", "f2"])
    chosen = calibration.calibrate(validation, validation_truth, SYSTEM, windows=(0, 8, 64), video_priors=(0.0,))
    would = calibration.calibrate(scored, scored_truth, SYSTEM, windows=(0, 8, 64), video_priors=(0.0,))
    assert chosen["window"] > 0 and would["window"] == 0  # the scored videos would have picked no smoothing
    assert chosen["validation"]["videos"] == ["s1", "s2"]  # only the validation videos' labels were read
    grid = {(g["prior_correction"], g["window"]): g["f1"] for g in chosen["validation"]["grid"]}
    assert chosen["validation"]["f1"] == max(grid.values()) == grid[(False, chosen["window"])]
    assert set(grid) == {(False, 0), (False, 8), (False, 64)}  # no priors given: no corrected option
    assert 0 <= chosen["validation"]["majority_f1"] <= 1 and 0 <= chosen["validation"]["chance_f1"] <= 1


def test_prior_correction_is_chosen_when_it_helps_on_validation():
    # a model that leans to Neutral: on Happiness frames it says Neutral 0.55, Happiness 0.45; its training
    # prior was 90 % Neutral, so dividing the prior out turns those frames into Happiness
    truth = np.repeat([N, H], 30)
    probs = np.zeros((60, labels.NUM_CLASSES))
    probs[:30, N] = 0.99
    probs[:30, H] = 0.01
    probs[30:, N] = 0.55
    probs[30:, H] = 0.45
    videos = {"v": VideoScores(np.arange(60), {"expr/base": probs})}
    prior = [0.9] + [0.1 / 7] * 7
    chosen = calibration.calibrate(videos, {"v": truth}, SYSTEM, {"base": prior}, windows=(0,), video_priors=(0.0,))
    assert chosen["prior_correction"] is True and chosen["window"] == 0
    uncorrected = calibration.calibrate(videos, {"v": truth}, SYSTEM, {}, windows=(0,), video_priors=(0.0,))
    assert uncorrected["prior_correction"] is False and chosen["validation"]["f1"] > uncorrected["validation"]["f1"]


def test_unknown_system_for_the_logits_says_what_is_there():
    videos = {"v": VideoScores(np.arange(2), {"expr/base": np.full((2, 8), 0.125)})}
    with pytest.raises(ValueError, match="cannot calibrate system 'cfc_sp'.*expr/base"):
        calibration.system_for(videos, "cfc_sp")


def test_annotate_takes_the_recorded_calibration_unless_told(tmp_path):
    models = str(tmp_path / "models")
    storage.write_json(f"{models}/models.json", {"models": {}, "calibration": {
        "cfc_sp": {"window": 16, "prior_correction": True, "validation": {"videos": ["a", "b"]}}}})
    base = {"input": "in", "models": models, "output": str(tmp_path / "out")}
    chosen = annotate.calibrated(annotate.load_config(base))
    assert (chosen.window, chosen.prior_correction) == (16, True)
    told = annotate.calibrated(annotate.load_config(base | {"window": 64, "prior_correction": False}))
    assert (told.window, told.prior_correction) == (64, False)
    plain = annotate.calibrated(annotate.load_config(base | {"system": "baseline"}))  # not calibrated
    assert (plain.window, plain.prior_correction, plain.flip_test) == (annotate.DEFAULT_WINDOW, False, False)
    assert chosen.flip_test is False  # a calibration from before the flip test existed: off


def test_annotate_takes_the_recorded_flip_test_unless_told(tmp_path):
    models = str(tmp_path / "models")
    storage.write_json(f"{models}/models.json", {"models": {}, "calibration": {
        "cfc_sp": {"window": 16, "prior_correction": False, "flip_test": True, "validation": {"videos": ["a"]}}}})
    base = {"input": "in", "models": models, "output": str(tmp_path / "out")}
    chosen = annotate.calibrated(annotate.load_config(base))
    assert chosen.flip_test is True and annotate.calibration_used(chosen)["used"]
    told = annotate.calibrated(annotate.load_config(base | {"flip_test": False}))
    assert told.flip_test is False and not annotate.calibration_used(told)["used"]
    assert annotate.logits_step(chosen, []).kwargs["flip_test"] is True  # what the logits actors are given


def test_calibration_that_annotates_nothing_says_why(tmp_path):
    """A validation manifest whose video lies outside the allowed roots: one clear error naming the reason,
    not a missing-logits traceback."""
    from fer_ray.jobs import calibrate
    from fer_ray.models.smoke import SMOKE_MODELS, write_untrained_models

    models = str(tmp_path / "models")
    write_untrained_models(models, [m for m in SMOKE_MODELS if m[0] == "baseline"])
    elsewhere = tmp_path / "elsewhere" / "v.mp4"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"not read")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "val.csv").write_text(f"video_id,uri\nv,{elsewhere}\n")
    job = calibrate.CalibrateConfig(input=str(tmp_path / "in" / "val.csv"), labels=str(tmp_path / "labels"),
                                    models=models, output=str(tmp_path / "out"), system="baseline")
    with pytest.raises(ValueError, match="no validation video could be annotated .*v: .*outside the allowed"):
        calibrate.run(job)


def test_annotate_aligns_faces_as_the_models_were_trained(tmp_path):
    """models.json "faces" (train_all records the training faces' geometry): annotate preprocesses videos
    the same way unless its config names a geometry; an index without it keeps the ArcFace default."""
    models = str(tmp_path / "models")
    storage.write_json(f"{models}/models.json", {"models": {}, "faces": {"geometry": "fer", "face_size": 48}})
    base = {"input": "in", "models": models, "output": str(tmp_path / "out")}
    faces = annotate.calibrated(annotate.load_config(base)).preprocess
    assert (faces.face_geometry, faces.face_size) == ("fer", 48)
    told = annotate.calibrated(annotate.load_config(base | {"preprocess": {"geometry": "arcface"}})).preprocess
    assert (told.face_geometry, told.face_size) == ("arcface", 112)
    storage.write_json(f"{models}/models.json", {"models": {}})
    plain = annotate.calibrated(annotate.load_config(base)).preprocess
    assert (plain.geometry, plain.face_geometry, plain.face_size) == (None, "arcface", 112)


def test_the_report_says_what_the_calibration_chose_and_on_what(tmp_path):
    from fer_ray.evaluate import report

    models = str(tmp_path / "models")
    storage.write_json(f"{models}/models.json", {"models": {}, "calibration": {"cfc_sp": {
        "window": 16, "prior_correction": False,
        "validation": {"videos": ["a", "b"], "f1": 0.41, "majority_f1": 0.09, "chance_f1": 0.08}}}})
    config = annotate.calibrated(annotate.load_config({"input": "in", "models": models, "output": "out"}))
    used = annotate.calibration_used(config)
    assert used["used"] and used["window"] == 16 and used["validation_videos"] == ["a", "b"]
    told = annotate.load_config({"input": "in", "models": models, "output": "out", "window": 64})
    assert not annotate.calibration_used(annotate.calibrated(told))["used"]
    headline = {"f1": 0.3, "ci_low": 0.2, "ci_high": 0.4, "majority_class": "Neutral", "majority_f1": 0.1,
                "chance_f1": 0.08, "accuracy": 0.5, "majority_accuracy": 0.4, "chance_accuracy": 0.125,
                "annotated": 100, "videos": 2, "calibration": used}
    rows = dict(report._headline_rows(headline))
    assert rows["Calibrated on validation videos"] == ("window 16, prior correction off: macro-F1 0.410 on 2 "
                                                       "videos (majority 0.090, chance 0.080)")
    flipped = dict(report._headline_rows(headline | {"calibration": used | {"flip_test": True}}))
    assert flipped["Calibrated on validation videos"].startswith("window 16, prior correction off, flip test on:")
    leaning = dict(report._headline_rows(headline | {"calibration": used | {"video_prior": 0.5}}))
    assert leaning["Calibrated on validation videos"].startswith("window 16, prior correction off, video prior 0.5:")


def test_ensemble_weights_are_chosen_when_one_member_is_better():
    """Two expr models: "good" is right at 0.6 on every frame; "bad" says Surprise at 0.7 on every frame.
    Equal weights follow the bad one; the calibration weighs the good one up (annotate takes the weights by
    models.json run name)."""
    truth = np.repeat([N, H], 30)
    good = np.full((60, labels.NUM_CLASSES), 0.4 / 7)
    good[np.arange(60), truth] = 0.6
    bad = np.full((60, labels.NUM_CLASSES), 0.3 / 7)
    bad[:, SU] = 0.7
    videos = {"v": VideoScores(np.arange(60), {"expr/good": good, "expr/bad": bad})}
    system = System(expr=("expr/bad", "expr/good"))
    # ratios good/bad 1, 2, 4, 1/2, 1/4: (0.5, 0.5), (1, 1), (2, 2) are one option
    assert calibration.weight_options(system)[0] == {} and len(calibration.weight_options(system)) == 5
    chosen = calibration.calibrate(videos, {"v": truth}, system, windows=(0,))
    assert chosen["weights"]["good"] > chosen["weights"]["bad"]
    perfect = 2 / labels.NUM_CLASSES  # every frame right; 8-class macro-F1 counts the 6 absent classes as 0
    assert chosen["validation"]["f1"] == pytest.approx(perfect)
    equal = [g for g in chosen["validation"]["grid"] if not g["weights"]]
    assert equal[0]["f1"] == 0.0  # equal weights: Surprise on every frame
