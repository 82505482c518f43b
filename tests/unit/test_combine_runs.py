"""benchmarks/combine_runs.py: several accuracy runs' stored logits as one set of models."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pytest

from fer_ray.evaluate import ablations
from fer_ray.infer.predict import VideoScores
from tests.unit.test_ablations import TRUTH, _logits

COMBINE = runpy.run_path(str(Path(__file__).resolve().parents[2] / "benchmarks" / "combine_runs.py"),
                         run_name="combine")


def test_two_runs_become_one_ensemble_of_their_models():
    run = ablations.group_logits(_logits())
    combined = COMBINE["combine"]([run, run])
    assert sorted(combined) == sorted(run)
    assert sorted(combined["v1"].probs) == sorted(f"{m}@{i}" for i in (0, 1) for m in run["v1"].probs)
    full = ablations.full_system(combined)
    assert full.coarse == ("coarse/a@0", "coarse/a@1", "coarse/b@0", "coarse/b@1")
    # a run joined with itself is the same run: every weight doubled, every argmax kept
    for window in (0, 4):
        got, alone = (ablations.predict(v, TRUTH, s, window) for v, s in
                      ((combined, full), (run, ablations.full_system(run))))
        assert all(got[v].tolist() == alone[v].tolist() for v in alone)


def test_runs_over_different_frames_are_refused():
    run = ablations.group_logits(_logits())
    other = dict(run)
    other["v1"] = VideoScores(run["v1"].frames[1:], {m: p[1:] for m, p in run["v1"].probs.items()})
    with pytest.raises(SystemExit, match="v1: the runs annotated different frames"):
        COMBINE["combine"]([run, other])
    assert np.array_equal(COMBINE["combine"]([run])["v2"].frames, run["v2"].frames)


VIDEO_PRIOR = runpy.run_path(str(Path(__file__).resolve().parents[2] / "benchmarks" / "video_prior.py"),
                             run_name="video_prior")


def test_video_prior_benchmark_scores_what_the_held_out_choices_predict():
    videos = ablations.group_logits(_logits())
    full, names = ablations.full_system(videos), sorted(TRUTH)
    got = VIDEO_PRIOR["held_out"](videos, TRUTH, full, (0, 4), names)
    chosen = ablations.held_out_settings(videos, TRUTH, full, (0, 4), VIDEO_PRIOR["calibration"].VIDEO_PRIORS)
    assert got["chosen"] == {v: (s.window, s.video_prior) for v, s in chosen.items()}
    assert got["with"] == pytest.approx(ablations.evaluate(videos, TRUTH, full, chosen)["f1"])
    alone = ablations.held_out_windows(videos, TRUTH, full, (0, 4))
    assert got["without"] == pytest.approx(ablations.evaluate(videos, TRUTH, full, alone)["f1"])
    assert got["diff"]["diff"] == pytest.approx(got["with"] - got["without"])
    rows = VIDEO_PRIOR["surface"](videos, TRUTH, full, names)
    assert len(rows) == len(VIDEO_PRIOR["calibration"].VIDEO_PRIORS)
    assert rows[0][0] == pytest.approx(ablations.evaluate(videos, TRUTH, full, 0)["f1"])  # strength 0, no SP
