"""benchmarks/images.py: the 7-class scoring of image sets, and the subject / split separation of its inputs."""

from __future__ import annotations

import csv
import runpy
from pathlib import Path

import numpy as np
import pytest

from fer_ray import labels
from tests.conftest import need_shared

IMAGES = runpy.run_path(str(Path(__file__).resolve().parents[2] / "benchmarks" / "images.py"), run_name="images")
NEUTRAL, ANGER, HAPPY, OTHER = (labels.ABAW_CLASSES.index(c) for c in ("Neutral", "Anger", "Happiness", "Other"))


def _logits(winners: list[int]) -> np.ndarray:
    out = np.zeros((len(winners), labels.NUM_CLASSES), dtype=np.float32)
    out[np.arange(len(winners)), winners] = 5.0
    return out


def test_prediction_is_the_argmax_over_the_sets_own_classes():
    """A set of Neutral / Anger / Happiness faces: a face whose largest logit is a class the set does not
    have (Other) is scored by its best class among the set's; an unread face counts as wrong."""
    truth = np.array([NEUTRAL, NEUTRAL, ANGER, ANGER, HAPPY, HAPPY])
    logits = _logits([NEUTRAL, NEUTRAL, ANGER, OTHER, HAPPY, HAPPY])
    logits[3, ANGER] = 1.0  # second choice: the right class
    logits[5] = np.nan      # no face found
    result = IMAGES["score"](truth, logits, ["p1", "p1", "p2", "p2", "p3", "p3"])
    assert result["classes"] == ["Neutral", "Anger", "Happiness"]
    assert result["accuracy"] == pytest.approx(5 / 6) and result["unread"] == 1
    # the unread Happiness face is counted as Neutral: Neutral 2 TP 1 FP, Anger 2 TP, Happiness 1 TP 1 FN
    expected = {"Neutral": 0.8, "Anger": 1.0, "Happiness": 2 / 3}
    assert result["per_class_f1"] == pytest.approx(expected)
    assert result["macro_f1"] == pytest.approx(np.mean(list(expected.values())))
    assert result["majority_accuracy"] == pytest.approx(1 / 3) and result["chance_accuracy"] == pytest.approx(1 / 3)
    assert result["macro_f1_ci"][0] <= result["macro_f1"] <= result["macro_f1_ci"][1]
    assert result["groups"] == 3


def test_inputs_keep_scored_performers_and_the_test_split_out_of_training(tmp_path):
    data = need_shared()
    need_shared("images", "fer2013", "labels.csv")
    files = IMAGES["write_inputs"](data, str(tmp_path))

    def rows(name: str) -> list[dict]:
        with open(files[name], newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))

    train, scored = rows("train_photos"), rows("photos")
    held_out = {v.split("_")[-1] for v in IMAGES["labelled_videos"](str(data))}
    assert train and scored and {r["subject"] for r in scored} == held_out
    assert not {r["subject"] for r in train} & held_out
    fer_train, fer_test = rows("train_fer2013"), rows("fer2013_test")
    assert len(fer_test) == 3589 and len(fer_train) == 28709
    assert not {r["path"] for r in fer_train} & {r["path"] for r in fer_test}
    assert all(Path(r["path"]).is_absolute() and Path(r["path"]).exists() for r in scored[:5] + fer_test[:5])
    # the training folders are the sources configs/demo.yaml weighs
    assert Path(files["train_photos"]).parent.name == "taiwanese_dev_train"
    assert Path(files["train_fer2013"]).parent.name == "fer2013"


def test_flip_effect_is_the_paired_change_of_each_figure():
    truth = np.array([NEUTRAL, NEUTRAL, ANGER, ANGER, HAPPY, HAPPY])
    groups = ["p1", "p1", "p2", "p2", "p3", "p3"]
    plain = _logits([NEUTRAL, ANGER, ANGER, NEUTRAL, HAPPY, HAPPY])
    same = IMAGES["flip_effect"](truth, plain, plain.copy(), groups)
    assert same["macro_f1_diff"] == 0 and same["accuracy_diff"] == 0 and same["p_flip_better"] == 0
    fixed = IMAGES["flip_effect"](truth, plain, _logits([NEUTRAL, NEUTRAL, ANGER, ANGER, HAPPY, HAPPY]), groups)
    plain_f1 = IMAGES["score"](truth, plain, groups)["macro_f1"]
    assert fixed["macro_f1_diff"] == pytest.approx(1.0 - plain_f1) and fixed["accuracy_diff"] == pytest.approx(2 / 6)
    assert fixed["macro_f1_diff_ci"][0] >= 0 and fixed["p_flip_better"] > 0.5


def test_a_model_trained_on_ck_plus_is_not_scored_as_cross_dataset(tmp_path):
    from fer_ray import schema, shards

    faces = str(tmp_path / "faces")
    shards.mark_done(faces, schema.FACES_TABLE, "taiwanese_dev_train/batch-00000", [])
    assert not IMAGES["trained_on"](shards.done_markers(faces, schema.FACES_TABLE), "ckplus48")
    shards.mark_done(faces, schema.FACES_TABLE, "ckplus48/batch-00000", [])  # another benchmark's mix
    assert IMAGES["trained_on"](shards.done_markers(faces, schema.FACES_TABLE), "ckplus48")


def test_a_scored_set_with_images_from_training_is_not_a_held_out_figure(tmp_path):
    """The leak this guards against: a benchmark fed fer2013's labels.csv whole (train and test rows) to
    training; scoring its model on the test split here named the same images fer2013_test/... ."""
    from fer_ray import schema, shards

    train, test, photos = (str(tmp_path / n) for n in ("train", "fer2013_test", "photos"))
    members = ["fer2013/train/happy/Training_1", "fer2013/test/angry/PrivateTest_7"]
    shards.mark_done(train, schema.FACES_TABLE, "fer2013/batch-00000", [], members=members)
    shards.mark_done(test, schema.FACES_TABLE, "fer2013_test/batch-00000", [],
                     members=["fer2013_test/angry/PrivateTest_7", "fer2013_test/sad/PrivateTest_8"])
    shards.mark_done(photos, schema.FACES_TABLE, "taiwanese_dev_heldout/batch-00000", [],
                     members=["taiwanese_dev_heldout/0101a02"])
    seen = IMAGES["not_held_out"](train, {"fer2013_test": test, "photos": photos})
    assert seen == {"fer2013_test": "1 of its images were in training"}
    shards.mark_done(train, schema.FACES_TABLE, "ckplus48/batch-00000", [], members=["ckplus48/images/anger/S1"])
    seen = IMAGES["not_held_out"](train, {"fer2013_test": test, "photos": photos, "ckplus48": photos})
    assert seen["ckplus48"] == "ckplus48 was in training" and "photos" not in seen


def test_an_ensemble_scores_the_mean_of_its_models_probabilities():
    confident = np.log([[0.9, 0.1, 1e-9], [0.2, 0.8, 1e-9], [np.nan, np.nan, np.nan]])
    hedging = np.log([[0.05, 0.5, 0.45], [0.3, 0.3, 0.4], [np.nan, np.nan, np.nan]])
    assert IMAGES["ensemble_logits"]([confident]) is confident  # one model: its own logits
    both = IMAGES["ensemble_logits"]([confident, hedging])
    np.testing.assert_allclose(np.exp(both[:2]), [[0.475, 0.3, 0.225], [0.25, 0.55, 0.2]], atol=1e-8)
    assert both[:2].argmax(axis=1).tolist() == [0, 1]  # not the sum of logits' answer on row 0 (class 1)
    assert np.isnan(both[2]).all()  # no face stays no face


def test_adapt_bn_normalises_each_performers_faces_together(tmp_path):
    """--adapt-bn: a performer's faces are one group, as a video's are in annotate; faces without a subject
    id keep the trained statistics (each is its own group, too small to measure)."""
    import io

    import pyarrow as pa
    from PIL import Image

    from fer_ray import schema, shards
    from fer_ray.infer import systems
    from fer_ray.infer.logits import LogitsStage, column
    from tests.helpers import SMOKE_MODELS, write_untrained_models

    root = need_shared("images/taiwanese_dev")
    rows = list(csv.DictReader((root / "labels.csv").open(newline="")))
    faces, subjects = [], []
    for subject, count in (("TW01", 20), ("TW07", 20), ("", 3)):  # "": a set without subject ids
        for row in [r for r in rows if r["subject"] == (subject or "TW11")][:count]:
            buf = io.BytesIO()
            Image.open(root / row["path"]).convert("RGB").resize((112, 112)).save(buf, format="JPEG")
            faces.append(buf.getvalue())
            subjects.append(subject or None)
    table = pa.Table.from_pylist([{
        schema.VIDEO_ID: f"photos/{i}", schema.FRAME_INDEX: 0, schema.TIMESTAMP: 0.0, schema.FACE: face,
        schema.BBOX: [0.0, 0.0, 112.0, 112.0], schema.LANDMARKS: [0.0] * 10, schema.DET_SCORE: 1.0,
        schema.LABEL: NEUTRAL, schema.REASON: None, schema.SUBJECT: subject, schema.NUM_FRAMES: 1,
    } for i, (face, subject) in enumerate(zip(faces, subjects))], schema=schema.FACES_SCHEMA)
    out = str(tmp_path / "faces")
    shards.mark_done(out, schema.FACES_TABLE, "photos", [shards.write_part(out, schema.FACES_TABLE, "photos", 0, table)])
    models = str(tmp_path / "models")
    model = systems.entries(write_untrained_models(models, [m for m in SMOKE_MODELS if m[0] == "baseline"]), models)
    _, plain, groups = IMAGES["predict"](LogitsStage(model), model, out)
    adapted_stage = LogitsStage(model, adapt_bn=1.0)
    _, adapted, _ = IMAGES["predict"](adapted_stage, model, out)
    assert groups[:40] == ["TW01"] * 20 + ["TW07"] * 20
    alone = adapted_stage({schema.FACE: np.asarray(faces[20:40], dtype=object)})[column(model[0])]
    np.testing.assert_allclose(adapted[20:40], alone, atol=1e-4)  # TW07's faces: their own statistics
    assert np.abs(adapted[:40] - plain[:40]).max() > 1e-3
    np.testing.assert_allclose(adapted[40:], plain[40:], atol=1e-5)  # no subject: as they are


def test_result_names_keep_each_way_of_scoring_a_run_apart():
    name = IMAGES["result_name"]
    assert name(["expr_cnn"], False, 0.0) == "images.json"  # earlier runs' names hold
    assert name(["expr_cnn"], True, 0.5) == "images_crop_adapt0.5.json"
    assert name(["expr_cnn", "expr_cnn_b"], True, 0.5) == "images_expr_cnn+expr_cnn_b_crop_adapt0.5.json"
    assert len({name(m, True, 0.5) for m in (["expr_cnn"], ["expr_cnn_b"], ["expr_cnn", "expr_cnn_b"])}) == 3


def test_the_peer_column_reads_what_peers_py_wrote(tmp_path, capsys):
    import json

    read = runpy.run_path(str(Path(__file__).resolve().parents[2] / "benchmarks" / "peers.py"),
                          run_name="peers")["read_figures"]
    assert read(tmp_path / "peers.json") is None  # no peer run: no column values
    record = {"peer": "fer", "video_stride": 3, "results": {
        "ckplus48": {"frames": 927, "f1": 0.398, "accuracy": 0.611},
        "fer2013_test": {"frames": 3589, "f1": 0.342, "accuracy": 0.432}}}
    (tmp_path / "peers.json").write_text(json.dumps(record))
    peer = read(tmp_path / "peers.json")
    assert peer["fer2013_test"]["accuracy"] == 0.432 and peer["ckplus48"]["video_stride"] == 3
    result = {"faces": 3589, "macro_f1": 0.6, "macro_f1_ci": [0.5, 0.7], "accuracy": 0.68, "accuracy_ci": [0.66, 0.7],
              "majority_f1": 0.056, "majority_accuracy": 0.245, "chance_f1": 0.133, "chance_accuracy": 0.143}
    IMAGES["print_table"]({"fer2013_test": result, "photos": {**result, "faces": 312}}, "t", None, peer)
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert "peer (`fer`) F1 / acc" in rows[0]
    assert rows[1].split(" | ")[4] == "0.342 / 0.432 (3589)"  # the peer's figures on the same faces
    assert rows[2].split(" | ")[4] == "-"  # a set the peer run did not score
