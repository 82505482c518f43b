"""Metrics against scikit-learn on random labels (absent classes included), plus temporal quality by hand."""

import numpy as np
import pytest
from sklearn import metrics as sk

from fer_ray import labels
from fer_ray.evaluate import metrics

K = labels.NUM_CLASSES


def _random(seed, n=500, true_classes=K, pred_classes=K, unannotated=0.1):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, true_classes, n)
    y_true[rng.random(n) < unannotated] = -1
    return y_true, rng.integers(0, pred_classes, n)


CASES = [
    dict(seed=0),
    dict(seed=1, true_classes=5),               # classes 5..7 absent from ground truth, still predicted
    dict(seed=2, pred_classes=3),               # classes 3..7 never predicted
    dict(seed=3, true_classes=2, pred_classes=2, n=40),  # most classes absent on both sides
    dict(seed=4, unannotated=0.0, n=7),
]


@pytest.mark.parametrize("case", CASES)
def test_against_sklearn(case):
    y_true, y_pred = _random(**case)
    keep = y_true >= 0
    t, p = y_true[keep], y_pred[keep]
    everything = list(range(K))
    assert metrics.macro_f1(y_true, y_pred) == pytest.approx(
        sk.f1_score(t, p, labels=everything, average="macro", zero_division=0))
    present = sorted(set(t.tolist()))
    assert metrics.macro_f1_present(y_true, y_pred) == pytest.approx(
        sk.f1_score(t, p, labels=present, average="macro", zero_division=0))
    assert metrics.accuracy(y_true, y_pred) == pytest.approx(sk.accuracy_score(t, p))
    np.testing.assert_array_equal(metrics.confusion_matrix(y_true, y_pred),
                                  sk.confusion_matrix(t, p, labels=everything))
    prec, rec, f1, support = sk.precision_recall_fscore_support(t, p, labels=everything, zero_division=0)
    stats = metrics.per_class(y_true, y_pred)
    np.testing.assert_allclose(stats["precision"], prec)
    np.testing.assert_allclose(stats["recall"], rec)
    np.testing.assert_allclose(stats["f1"], f1)
    np.testing.assert_array_equal(stats["support"], support)


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_coarse_and_negative_f1_against_sklearn(seed):
    y_true, y_pred = _random(seed, n=800)
    coarse = np.asarray(labels.COARSE_OF_ABAW)
    neg = np.asarray(labels.NEGATIVE_OF_ABAW)
    keep = y_true >= 0
    t, p = y_true[keep], y_pred[keep]
    assert metrics.coarse_f1(y_true, y_pred) == pytest.approx(
        sk.f1_score(coarse[t], coarse[p], labels=range(5), average="macro", zero_division=0))
    is_neg = neg[t] >= 0
    # sklearn also counts a prediction outside `labels` (-1 here) as a miss for the true class only
    assert metrics.negative_f1(y_true, y_pred) == pytest.approx(
        sk.f1_score(neg[t][is_neg], neg[p][is_neg], labels=range(4), average="macro", zero_division=0))


def test_hand_computed():
    y_true = [0, 0, 1, 1, -1, 4]
    y_pred = [0, 1, 1, 1, 3, 4]
    # F1: class0 2/3, class1 0.8, class4 1, five absent classes 0; acc 4/5
    assert metrics.macro_f1(y_true, y_pred) == pytest.approx((2 / 3 + 0.8 + 1) / 8)
    assert metrics.macro_f1_present(y_true, y_pred) == pytest.approx((2 / 3 + 0.8 + 1) / 3)
    assert metrics.accuracy(y_true, y_pred) == pytest.approx(0.8)
    assert metrics.abaw2_score(0.5, 0.8) == pytest.approx(0.67 * 0.5 + 0.33 * 0.8)


def test_frame_metrics_json_ready():
    out = metrics.frame_metrics(*_random(8, n=100))
    assert set(out["per_class"]) == set(labels.ABAW_CLASSES)
    assert np.asarray(out["confusion_matrix"]).shape == (K, K)
    assert out["abaw2_score"] == pytest.approx(0.67 * out["f1"] + 0.33 * out["accuracy"])


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        metrics.macro_f1([0, 1], [0])
    with pytest.raises(ValueError):
        metrics.macro_f1([0, 1], [0, 8])
    with pytest.raises(ValueError):
        metrics.macro_f1([0, 9], [0, 1])


def test_all_unannotated():
    assert metrics.macro_f1([-1, -1], [0, 1]) == 0.0
    assert np.isnan(metrics.accuracy([-1, -1], [0, 1]))
    assert np.isnan(metrics.macro_f1_present([-1], [0]))


def test_temporal_by_hand():
    # 60 frames at 1 fps = 1 minute; prediction 0*20, 1*20, 0*20 -> 2 flips, segments of 20
    pred = [0] * 20 + [1] * 20 + [0] * 20
    true = [0] * 30 + [-1] * 10 + [0] * 20  # the -1 run is not a flip: one segment of 50 annotated frames
    out = metrics.temporal_metrics(true, pred, fps=1.0)
    assert out["pred_flips_per_min"] == pytest.approx(2.0)
    assert out["true_flips_per_min"] == pytest.approx(0.0)
    assert out["pred_mean_segment_frames"] == pytest.approx(20.0)
    assert out["pred_mean_segment_s"] == pytest.approx(20.0)
    assert out["true_mean_segment_frames"] == pytest.approx(50.0)


def test_temporal_from_timestamps_matches_fps():
    pred = [0, 0, 1, 1, 2, 2] * 50
    ts = np.arange(300) / 30.0
    by_fps = metrics.temporal_metrics(pred, pred, fps=30.0)
    by_ts = metrics.temporal_metrics(pred, pred, timestamps=ts)
    assert by_fps == pytest.approx(by_ts)
    assert by_fps["pred_flips_per_min"] == pytest.approx(149 / (10 / 60))  # 2 flips per block + 49 between blocks
    with pytest.raises(ValueError):
        metrics.flips_per_minute(pred)


def test_segment_ids_follow_ground_truth_runs():
    assert metrics.segment_ids([0, 0, 1, 1, 1, 0, -1, -1]).tolist() == [0, 0, 1, 1, 1, 2, 3, 3]
    assert metrics.segment_ids([4, 4, 2], start=10).tolist() == [10, 10, 11]
    assert metrics.segment_ids([]).size == 0


def _segmented(rng, segments=40, length=50, wrong=10):
    """Ground truth of `segments` runs; b is right everywhere, a is wrong on `wrong` whole runs."""
    y = np.repeat(rng.integers(0, 7, segments), length)
    y[:7] = -1  # unannotated frames are left out
    a = y.copy()
    for s in rng.choice(segments, wrong, replace=False):
        a[s * length:(s + 1) * length] = (y[s * length] + 1) % 7
    a[a < 0] = 0
    b = np.where(y >= 0, y, 3)
    return y, a, b


def test_paired_bootstrap_difference_and_interval():
    rng = np.random.default_rng(0)
    y, a, b = _segmented(rng)
    groups = metrics.segment_ids(y)
    out = metrics.paired_bootstrap(y, a, b, groups, n_boot=500)
    assert out["diff"] == pytest.approx(metrics.macro_f1(y, b) - metrics.macro_f1(y, a))
    assert 0 < out["ci_low"] <= out["diff"] <= out["ci_high"] and out["p_b_better"] == 1.0
    same = metrics.paired_bootstrap(y, a, a, groups, n_boot=200)
    assert (same["diff"], same["ci_low"], same["ci_high"], same["p_b_better"]) == (0.0, 0.0, 0.0, 0.0)
    # errors come in whole segments: resampling frames as if independent understates the spread
    frames = metrics.paired_bootstrap(y, a, b, np.arange(y.size), n_boot=500)
    assert frames["diff"] == pytest.approx(out["diff"])
    assert frames["ci_high"] - frames["ci_low"] < 0.5 * (out["ci_high"] - out["ci_low"])
    with pytest.raises(ValueError, match="group ids"):
        metrics.paired_bootstrap(y, a, b, groups[:-1])
    with pytest.raises(ValueError, match="no -1 predictions"):
        metrics.paired_bootstrap(y, np.where(y >= 0, -1, 0), b, groups)


def test_reference_scores_majority_and_chance():
    y_true = np.array([0, 0, 0, 1, 4, -1])
    ref = metrics.reference_scores(y_true)
    assert ref["majority_class"] == "Neutral"
    # Neutral everywhere: precision 3/5, recall 1 for Neutral, 0 for the other seven classes
    assert ref["majority_f1"] == pytest.approx((2 * 0.6 / 1.6) / 8)
    assert ref["majority_accuracy"] == pytest.approx(0.6) and ref["chance_accuracy"] == pytest.approx(1 / 8)
    # chance against an independent reference: the mean macro-F1 of many uniformly random predictions
    rng = np.random.default_rng(0)
    truth = rng.choice(8, size=20_000, p=[0.5, 0.1, 0.1, 0.05, 0.1, 0.1, 0.05, 0.0])
    draws = [metrics.macro_f1(truth, rng.integers(0, 8, size=truth.size)) for _ in range(20)]
    assert metrics.reference_scores(truth)["chance_f1"] == pytest.approx(np.mean(draws), abs=0.005)


def test_bootstrap_f1_interval():
    rng = np.random.default_rng(1)
    truth = np.repeat(rng.integers(0, 8, size=60), 20)  # 60 held expressions of 20 frames
    groups = metrics.segment_ids(truth)
    perfect = metrics.bootstrap_f1(truth, truth, groups, n_boot=200)
    assert perfect["f1"] == pytest.approx(metrics.macro_f1(truth, truth))
    # a resample can only lose classes (8-class macro-F1 counts an absent class as 0), never beat perfect
    assert perfect["ci_low"] <= perfect["ci_high"] <= perfect["f1"] + 1e-12
    noisy = np.where(rng.random(truth.size) < 0.3, rng.integers(0, 8, size=truth.size), truth)
    result = metrics.bootstrap_f1(truth, noisy, groups, n_boot=500)
    assert result["f1"] == pytest.approx(metrics.macro_f1(truth, noisy))
    assert result["ci_low"] < result["f1"] < result["ci_high"]
    assert result["groups"] == len(np.unique(groups))
