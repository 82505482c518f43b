"""benchmarks/accuracy.py: Table 1's steps as paired differences, on the hand-built logits of test_ablations."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pytest

from fer_ray.evaluate import ablations, metrics
from tests.unit.test_ablations import TRUTH, _logits

ACCURACY = runpy.run_path(str(Path(__file__).resolve().parents[2] / "benchmarks" / "accuracy.py"), run_name="acc")


def test_differences_are_table1_steps_with_intervals():
    videos = ablations.group_logits(_logits())
    base = ablations.System(expr=("expr/baseline",))
    full = ablations.full_system(videos)
    windows = {"baseline": {"v1": 0, "v2": 4}, "cascade": {"v1": 4, "v2": 4}}
    rows = {row["step"]: row for row in ACCURACY["differences"](videos, TRUTH, base, full, windows)}
    window = ACCURACY["WINDOW"]
    assert list(rows) == ["C-F over the baseline", f"SP w={window} on the baseline",
                          "SP held-out w on the baseline", f"SP w={window} on the cascade",
                          "SP held-out w on the cascade"]
    cf = rows["C-F over the baseline"]
    expected = ablations.evaluate(videos, TRUTH, full, 0)["f1"] - ablations.evaluate(videos, TRUTH, base, 0)["f1"]
    assert cf["diff"] == pytest.approx(expected) and cf["diff"] > 0  # the baseline calls negatives Neutral
    held = rows["SP held-out w on the baseline"]
    expected = (ablations.evaluate(videos, TRUTH, base, windows["baseline"])["f1"]
                - ablations.evaluate(videos, TRUTH, base, 0)["f1"])
    assert held["diff"] == pytest.approx(expected)
    for row in rows.values():
        assert row["ci_low"] <= row["diff"] + 1e-12 and row["diff"] <= row["ci_high"] + 1e-12
        assert row["groups"] == 5  # annotated ground-truth runs: N H A S in v1, H in v2


def _index(prior_of):
    widths = {"a": 5, "b": 5, "repvgg": 4, "baseline": 8}
    return {"models": {name: {"train_prior": prior_of(k)} for name, k in widths.items()}}


def test_prior_tables_from_the_recorded_priors():
    videos = ablations.group_logits(_logits())
    base, full = ablations.System(expr=("expr/baseline",)), ablations.full_system(videos)
    assert ACCURACY["prior_corrected"](videos, {"models": {}}) is None  # nothing recorded: no such tables
    uniform = ACCURACY["prior_corrected"](videos, _index(lambda k: [1 / k] * k))
    for video_id, scores in videos.items():  # a uniform prior changes nothing
        for model, probs in scores.probs.items():
            np.testing.assert_allclose(uniform[video_id].probs[model], probs)
    skewed = ACCURACY["prior_corrected"](videos, _index(lambda k: [0.7] + [0.3 / (k - 1)] * (k - 1)))
    out = ACCURACY["prior_tables"](videos, skewed, TRUTH, base, full)
    assert set(out) == {"table1_prior", "table1_prior_held_out", "held_out_windows_prior", "differences_prior"}
    effect = {row["step"]: row for row in out["differences_prior"]}["prior correction of the cascade"]
    expected = ablations.evaluate(skewed, TRUTH, full, 0)["f1"] - ablations.evaluate(videos, TRUTH, full, 0)["f1"]
    assert effect["diff"] == pytest.approx(expected)
    assert out["table1_prior"].set_index("method").loc["baseline + C-F", "f1"] == pytest.approx(
        ablations.evaluate(skewed, TRUTH, full, 0)["f1"])


def test_targets_give_each_measured_figure_its_interval_and_verdict(capsys):
    videos = ablations.group_logits(_logits())
    base, full = ablations.System(expr=("expr/baseline",)), ablations.full_system(videos)
    windows = {"v1": 0, "v2": 0}  # unsmoothed: on these logits 256 scores otherwise
    rows = ACCURACY["targets"](videos, TRUTH, base, full, windows)
    assert [r["threshold"] for r in rows] == [t[2] for t in ACCURACY["TARGETS"]]
    measured = {r["target"]: r for r in rows if r["f1"] is not None}
    assert len(measured) == 3 and all(r["f1"] is None for r in rows[3:])
    calibrated, paper, single = rows[:3]
    assert calibrated["f1"] == pytest.approx(ablations.evaluate(videos, TRUTH, full, windows)["f1"])
    assert calibrated["f1"] != paper["f1"]  # the per-video windows, not 256
    assert paper["f1"] == pytest.approx(ablations.evaluate(videos, TRUTH, full, ACCURACY["WINDOW"])["f1"])
    assert single["f1"] == pytest.approx(ablations.evaluate(videos, TRUTH, base, 0)["f1"])
    reference = metrics.reference_scores(np.concatenate([TRUTH["v1"], TRUTH["v2"]]))
    for row in (calibrated, paper, single):
        assert row["ci_low"] <= row["f1"] <= row["ci_high"] and row["met"] == (row["f1"] >= row["threshold"])
        assert (row["majority_f1"], row["chance_f1"]) == (reference["majority_f1"], reference["chance_f1"])
    ACCURACY["print_targets"](rows)
    printed = capsys.readouterr().out
    assert "see benchmarks/images.py" in printed and ("met" in printed or "missed by" in printed)
    references = f"(majority class {reference['majority_f1']:.3f}, chance {reference['chance_f1']:.3f}"
    assert printed.count(f"{references}; no peer figure: run benchmarks/peers.py)") == 3
    # with a peers.py run's figures, the peer's on the same videos stands beside each video figure
    ACCURACY["print_targets"](rows, {"dev_videos": {"f1": 0.4641, "video_stride": 3}})
    assert capsys.readouterr().out.count(f"{references}; the peer (`fer`, one frame in 3) 0.464)") == 3


def test_epochs_override_every_model_or_the_named_ones(tmp_path):
    import yaml

    config = str(Path(__file__).resolve().parents[2] / "configs" / "accuracy_fer.yaml")
    parse, write = ACCURACY["epochs_arg"], ACCURACY["train_config"]

    def epochs(arg: str) -> dict:
        models = yaml.safe_load(open(write(config, str(tmp_path), parse(arg))))["models"]
        return {m["name"]: m["epochs"] for m in models}

    names = ["expr_cnn", "expr_cnn_b", "coarse_cnn", "coarse_cnn_b", "negative_cnn", "negative_cnn_b"]
    assert epochs("5") == dict.fromkeys(names, 5)
    assert epochs("expr_cnn=14,coarse_cnn=3") == {**dict.fromkeys(names, 5), "expr_cnn": 14, "expr_cnn_b": 20,
                                                  "coarse_cnn": 3}
    with pytest.raises(SystemExit, match="no model \\['expr'\\].*expr_cnn, expr_cnn_b, coarse_cnn"):
        write(config, str(tmp_path), parse("expr=14"))
    from fer_ray.config import load
    from fer_ray.train.config import TrainConfig

    saved = load(TrainConfig, write(config, str(tmp_path), None, 1, "bfloat16"))
    assert saved.seed == 1 and {m.precision for m in saved.models} == {"bfloat16"}


def test_a_data_folder_without_labelled_videos_is_one_line(tmp_path):
    (tmp_path / "videos" / "labeled").mkdir(parents=True)
    (tmp_path / "videos" / "labeled" / "tw_X.mp4").write_bytes(b"")  # no labels beside it
    for data in (tmp_path, tmp_path / "missing"):
        with pytest.raises(SystemExit, match="no labelled dev video"):
            ACCURACY["main"](["--data", str(data), "--output", str(tmp_path / "out")])


def test_the_baseline_is_one_model_when_several_are_pretrained():
    """Two pretraining seeds (expr_cnn, expr_cnn_b) feed the cascade's ensembles; the baseline row is still
    the single model, the first by name."""
    videos = ablations.group_logits(_logits())
    for scores in videos.values():
        scores.probs["expr/baseline_b"] = scores.probs["expr/baseline"][:, ::-1]
    assert ablations.models_by_task(videos)["expr"] == ["expr/baseline", "expr/baseline_b"]
    assert ACCURACY["baseline_models"](videos) == ["expr/baseline"]


def test_the_video_prior_rows_and_steps_score_the_held_out_choices():
    videos = ablations.group_logits(_logits())
    base, full = ablations.System(expr=("expr/baseline",)), ablations.full_system(videos)
    tuned = {"cascade": (full, (0, 4)), "baseline": (base, (0,))}
    settings = {name: ablations.held_out_settings(videos, TRUTH, system, windows, (0.0, 0.5))
                for name, (system, windows) in tuned.items()}
    rows = {row["system"]: row for row in ACCURACY["video_prior_rows"](videos, TRUTH, tuned, settings)}
    for name, (system, _) in tuned.items():
        assert rows[name]["f1"] == pytest.approx(ablations.evaluate(videos, TRUTH, system, settings[name])["f1"])
        assert rows[name]["ci_low"] <= rows[name]["f1"] <= rows[name]["ci_high"]
        assert rows[name]["chosen"] == {v: (s.window, s.video_prior) for v, s in settings[name].items()}
    windows = {"baseline": {"v1": 0, "v2": 0}, "cascade": {"v1": 4, "v2": 0}}
    steps = {row["step"]: row for row in ACCURACY["differences"](videos, TRUTH, base, full, windows, settings)}
    step = steps["video prior on the cascade + SP"]
    expected = (ablations.evaluate(videos, TRUTH, full, settings["cascade"])["f1"]
                - ablations.evaluate(videos, TRUTH, full, windows["cascade"])["f1"])
    assert step["diff"] == pytest.approx(expected)
    assert "video prior on the baseline" in steps
