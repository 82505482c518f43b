"""CFC-SP ablation tables on a hand-built logits table whose answers are worked out below.

Scores are log-probabilities, so every model's softmax is exactly the probability row written here.
Video v1 (13 frames): ground truth N N N N H H H H A A S S -1 (N=Neutral, H=Happiness, A=Anger, S=Sadness);
  frame 6 and 12 have no logits (no face). coarse/a is confidently right except frame 2 (says H, 0.7);
  coarse/b is right except frame 9 (says Surprise, 0.7); each mistake is outvoted by the other model.
  negative/repvgg is right on the negative frames. expr/baseline calls the negative frames Neutral.
Video v2 (20 frames, all H; frames 15, 16 no face): every model says H 0.97, except frame 10 where it says
  Surprise 0.6 vs H 0.4; SP with window >= 4 outvotes that low-confidence frame, w=0 cannot.
Video v3 has logits but no ground truth and must be ignored.
"""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score

from fer_ray import labels, schema
from fer_ray.evaluate import ablations

N, AN, SA, H, SU = (labels.class_index(n) for n in ("Neutral", "Anger", "Sadness", "Happiness", "Surprise"))
C_N, C_H, C_S, C_NEG = (labels.COARSE_CLASSES.index(n) for n in ("Neutral", "Happiness", "Surprise", "Negative"))
WIDE = 64  # longer than both videos: SP adds the whole-video mean


def _row(width, mass):
    """Probability row: the given {index: p} and the rest of 1 spread evenly (tiny floor for log)."""
    row = np.full(width, 0.0)
    for k, p in mass.items():
        row[k] = p
    rest = [k for k in range(width) if k not in mass]
    if rest:
        row[rest] = (1.0 - sum(mass.values())) / len(rest)
    return np.log(np.maximum(row, 1e-9)).tolist()


def _confident(width, k):
    return _row(width, {k: 0.97})


V1_TRUTH = [N, N, N, N, H, H, H, H, AN, AN, SA, SA, -1]
V1_COARSE = [labels.COARSE_OF_ABAW[y] for y in V1_TRUTH[:12]]


def _logits() -> pd.DataFrame:
    rows = []

    def add(video, frame, model, scores):
        rows.append({schema.VIDEO_ID: video, schema.FRAME_INDEX: frame, schema.MODEL: model, schema.SCORES: scores})

    for f in range(12):
        if f == 6:
            continue
        truth = V1_TRUTH[f]
        a = _row(5, {C_N: 0.3, C_H: 0.7}) if f == 2 else _confident(5, V1_COARSE[f])
        b = _row(5, {C_S: 0.7, C_NEG: 0.3}) if f == 9 else _confident(5, V1_COARSE[f])
        neg = labels.NEGATIVE_OF_ABAW[truth]
        add("v1", f, "coarse/a", a)
        add("v1", f, "coarse/b", b)
        add("v1", f, "negative/repvgg", _confident(4, neg) if neg >= 0 else _row(4, {}))
        add("v1", f, "expr/baseline", _confident(8, N if neg >= 0 else truth))
    for f in range(20):
        if f in (15, 16):
            continue
        low = f == 10
        add("v2", f, "coarse/a", _row(5, {C_S: 0.6, C_H: 0.4}) if low else _confident(5, C_H))
        add("v2", f, "coarse/b", _row(5, {C_S: 0.6, C_H: 0.4}) if low else _confident(5, C_H))
        add("v2", f, "negative/repvgg", _row(4, {}))
        add("v2", f, "expr/baseline", _row(8, {SU: 0.6, H: 0.4}) if low else _confident(8, H))
    for f in range(3):
        for model, width in (("coarse/a", 5), ("coarse/b", 5), ("negative/repvgg", 4), ("expr/baseline", 8)):
            add("v3", f, model, _row(width, {}))
    # shuffled, as rows come back from a distributed job
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0).reset_index(drop=True)


TRUTH = {"v1": np.array(V1_TRUTH), "v2": np.full(20, H)}
PERFECT = {"v1": np.array(V1_TRUTH[:12] + [SA]), "v2": np.full(20, H)}


def _with(changes):
    out = {v: p.copy() for v, p in PERFECT.items()}
    for (video, frame), label in changes.items():
        out[video][frame] = label
    return out


def _expected(pred):
    y_true = np.concatenate([TRUTH["v1"], TRUTH["v2"]])
    y_pred = np.concatenate([pred["v1"], pred["v2"]])
    keep = y_true >= 0
    return (f1_score(y_true[keep], y_pred[keep], labels=range(8), average="macro", zero_division=0),
            accuracy_score(y_true[keep], y_pred[keep]))


BASELINE_RAW = _with({("v1", f): N for f in (8, 9, 10, 11)} | {("v2", 10): SU})
BASELINE_SP = _with({("v1", f): N for f in (8, 9, 10, 11)})
CASCADE_RAW = _with({("v2", 10): SU})
ONLY_A = _with({("v1", 2): H})
ONLY_B = _with({("v1", 9): SU})


@pytest.fixture(scope="module")
def videos():
    return ablations.group_logits(_logits())


def _check(row, pred):
    f1, acc = _expected(pred)
    assert row["f1"] == pytest.approx(f1)
    assert row["accuracy"] == pytest.approx(acc)
    assert row["abaw2_score"] == pytest.approx(0.67 * f1 + 0.33 * acc)


def test_group_logits_aligns_frames(videos):
    assert sorted(videos) == ["v1", "v2", "v3"]
    v1 = videos["v1"]
    assert v1.frames.tolist() == [0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11]
    np.testing.assert_allclose(v1.probs["coarse/a"][2], [0.3, 0.7, 0, 0, 0], atol=1e-6)


def test_predictions_by_hand(videos):
    cascade_system = ablations.full_system(videos)
    assert cascade_system.coarse == ("coarse/a", "coarse/b") and cascade_system.negative == ("negative/repvgg",)
    for window, expected in ((0, CASCADE_RAW), (4, PERFECT), (WIDE, PERFECT)):
        got = ablations.predict(videos, TRUTH, cascade_system, window)
        for video in ("v1", "v2"):
            assert got[video].tolist() == expected[video].tolist(), (window, video)
    out = ablations.predict_video(videos["v2"], cascade_system, 0, 20)
    assert out["filled"].nonzero()[0].tolist() == [15, 16]
    np.testing.assert_allclose(out["probs"].sum(axis=1), 1.0)


def test_predicted_probabilities_are_the_models(videos):
    """Every model says Happiness 0.97 on v2's frame 0: the cascade and the baseline report 0.97 (the
    probabilities are summed as they are, not passed through a second softmax, which made it 0.31)."""
    for system in (ablations.full_system(videos), ablations.System(expr=("expr/baseline",))):
        out = ablations.predict_video(videos["v2"], system, 0, 20)
        assert out["probs"][0, H] == pytest.approx(0.97, abs=1e-6), system.name


def test_table1(videos):
    table = ablations.table1(videos, TRUTH, window=WIDE)
    assert table["method"].tolist() == ["baseline", "baseline + SP", "baseline + C-F", "baseline + C-F + SP"]
    for (_, row), pred in zip(table.iterrows(), (BASELINE_RAW, BASELINE_SP, CASCADE_RAW, PERFECT)):
        _check(row, pred)
    assert table.iloc[3]["f1"] == pytest.approx(0.5)  # 4 of 8 classes present, all perfect


def test_table2_every_subset(videos):
    table = ablations.table2(videos, TRUTH, window=WIDE)
    used = table[["coarse/a", "coarse/b", "negative/repvgg"]].values.tolist()
    assert used == [[True, False, True], [False, True, True], [True, True, True]]
    for (_, row), pred in zip(table.iterrows(), (ONLY_A, ONLY_B, PERFECT)):
        _check(row, pred)


def test_table3_per_backbone(videos):
    table = ablations.table3(videos, TRUTH).set_index("backbone")
    y_true = np.r_[V1_COARSE, [-1], np.full(20, C_H)]  # frame 12 unannotated, frame 6 filled correctly
    perfect = y_true.copy()
    for backbone, wrong in (("a", {2: C_H}), ("b", {9: C_S})):
        pred = perfect.copy()
        for f, label in wrong.items():
            pred[f] = label
        pred[13 + 10] = C_S  # v2 frame 10, no SP here
        keep = y_true >= 0
        expected = f1_score(y_true[keep], pred[keep], labels=range(5), average="macro", zero_division=0)
        assert table.loc[backbone, "coarse_f1"] == pytest.approx(expected)
        assert np.isnan(table.loc[backbone, "negative_f1"])
    assert table.loc["repvgg", "negative_f1"] == pytest.approx(0.5)  # Anger, Sadness perfect; 2 absent
    assert np.isnan(table.loc["repvgg", "coarse_f1"])


def test_table4_window_sweep(videos):
    table = ablations.table4(videos, TRUTH, windows=(0, 4, WIDE))
    assert table["window"].tolist() == [0, 4, WIDE]
    for (_, row), pred in zip(table.iterrows(), (CASCADE_RAW, PERFECT, PERFECT)):
        _check(row, pred)


def test_all_tables_from_arrow():
    import pyarrow as pa

    tables = ablations.all_tables(pa.Table.from_pandas(_logits(), preserve_index=False), TRUTH,
                                  window=WIDE, windows=(0, WIDE))
    assert sorted(tables) == ["table1", "table2", "table3", "table4"]
    assert tables["table4"]["f1"].tolist() == pytest.approx([_expected(CASCADE_RAW)[0], 0.5])


def test_rejects_bad_tables():
    bad_width = _logits()
    bad_width.loc[0, schema.SCORES] = [0.0, 0.0]
    with pytest.raises(ValueError, match="score lengths"):
        ablations.group_logits(bad_width)
    bad_name = _logits()
    bad_name.loc[0, schema.MODEL] = "fine/x"
    with pytest.raises(ValueError, match="task"):
        ablations.group_logits(bad_name)
    with pytest.raises(ValueError):
        ablations.System(coarse=("coarse/a",))


def test_held_out_windows_never_use_the_videos_own_labels(videos):
    # Cascade: v1 is right at w=0 and w=4; v2 needs w=4 (frame 10). Held out v1, v2's labels pick 4;
    # held out v2, v1 ties and the smaller window, 0, wins, so v2 keeps its frame-10 mistake.
    assert ablations.held_out_windows(videos, TRUTH, windows=(4, 0)) == {"v1": 4, "v2": 0}
    table = ablations.table1(videos, TRUTH, window=ablations.HELD_OUT, windows=(0, 4))
    assert table["window"].tolist() == [0, "held-out", 0, "held-out"]
    # baseline: v1's negative frames stay Neutral at any window, v2 gets w=0: its raw predictions
    for (_, row), pred in zip(table.iterrows(), (BASELINE_RAW, BASELINE_RAW, CASCADE_RAW, CASCADE_RAW)):
        _check(row, pred)
    per_video = ablations.table1(videos, TRUTH, window={"v1": 0, "v2": 4})
    assert per_video["window"].tolist() == [0, "per video", 0, "per video"]
    _check(per_video.iloc[3], PERFECT)
    only_v2 = {"v2": TRUTH["v2"]}
    assert ablations.held_out_windows(videos, only_v2, windows=(4, 0)) == {"v2": 0}  # nothing else to learn from
