"""Shard rows -> tensors: task labels, dropped rows, subject split, clips/sequences, augment, config, local loop."""

from __future__ import annotations

import io
import os

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from fer_ray import labels, schema
from fer_ray.config import ConfigError, load
from fer_ray.train import augment, data
from fer_ray.train.config import AugmentConfig, ModelSpec, TrainConfig, spec_from_dict


def _jpeg(value: int, size: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def _rows(videos: dict[str, tuple[str, list[int]]], faceless: set[tuple[str, int]] = frozenset()) -> dict:
    cols = {c: [] for c in data.TRAIN_COLUMNS}
    for video, (subject, ys) in videos.items():
        for i, y in enumerate(ys):
            cols[schema.VIDEO_ID].append(video)
            cols[schema.FRAME_INDEX].append(i)
            cols[schema.FACE].append(b"" if (video, i) in faceless else _jpeg(10 * i % 250))
            cols[schema.LABEL].append(y)
            cols[schema.SUBJECT].append(subject)
    cols[schema.LABEL] = np.asarray(cols[schema.LABEL])
    cols[schema.FRAME_INDEX] = np.asarray(cols[schema.FRAME_INDEX])
    return cols


def test_task_labels_and_dropped_rows():
    # ABAW: Neutral, Anger, Disgust, Fear, Happiness, Sadness, Surprise, Other, and -1
    rows = _rows({"v": ("s", [0, 1, 2, 3, 4, 5, 6, 7, -1])}, faceless={("v", 4)})
    keep, y = data.usable_rows(rows, "coarse")
    assert keep.tolist() == [0, 1, 2, 3, 5, 6, 7] and y.tolist() == [0, 4, 4, 4, 4, 2, 3]
    keep, y = data.usable_rows(rows, "negative")
    assert keep.tolist() == [1, 2, 3, 5] and y.tolist() == [0, 1, 2, 3]
    keep, y = data.usable_rows(rows, "expr")
    assert keep.tolist() == [0, 1, 2, 3, 5, 6, 7] and y.tolist() == [0, 1, 2, 3, 5, 6, 7]


def test_frame_batches_fixed_size_and_repeat_factors():
    rows = _rows({"v": ("s", [0] * 10 + [1] * 2)})
    tf = augment.eval_transform(32)
    batches = list(data.frame_batches([rows], "expr", tf, batch_size=4))
    assert [b[0].shape for b in batches] == [torch.Size([4, 3, 32, 32])] * 3
    factors = np.array([1.0, 3.0] + [1.0] * 6)  # class 1 repeated 3x
    ys = torch.cat([y for _, y in data.frame_batches([rows], "expr", tf, 5, factors, np.random.default_rng(0))])
    assert (ys == 0).sum() == 10 and (ys == 1).sum() == 6


def test_source_weights_repeat_rows_of_a_source():
    rows = _rows({"fer2013/a": ("", [0] * 20), "taiwanese_dev/b": ("s", [0] * 20), "clip": ("t", [0] * 20)})
    assert data.source_of("fer2013/a") == "fer2013" and data.source_of("clip") == "clip"
    tf = augment.eval_transform(32)
    weights = {"fer2013": 0.5, "taiwanese_dev": 4}
    seen = []
    for seed in range(5):  # stochastic rounding of the 0.5: about half the fer2013 rows each epoch
        seen += [len(torch.cat([y for _, y in data.frame_batches([rows], "expr", tf, 16, None,
                                                                  np.random.default_rng(seed), source_weights=w)]))
                 for w in (weights,)]
    assert all(80 + 20 + 5 <= n <= 80 + 20 + 15 for n in seen), seen  # taiwanese x4, clip x1, fer2013 ~x0.5
    # with the class factors: multiplied
    factors = np.full(8, 2.0)
    ys = torch.cat([y for _, y in data.frame_batches([rows], "expr", tf, 16, factors, np.random.default_rng(0),
                                                      source_weights={"taiwanese_dev": 4})])
    assert len(ys) == 2 * 20 + 8 * 20 + 2 * 20


def test_ignored_classes_are_left_out_of_batches_and_counts():
    rows = _rows({"ckplus48/a": ("s", [7, 7, 1, 4]), "b": ("t", [0, 7])})
    keep, y = data.usable_rows(rows, "expr", ignore=[7])
    assert keep.tolist() == [2, 3, 4] and y.tolist() == [1, 4, 0]
    tf = augment.eval_transform(32)
    ys = torch.cat([y for _, y in data.frame_batches([rows], "expr", tf, 8, ignore=[7])])
    assert sorted(ys.tolist()) == [0, 1, 4]
    summary = pa.table({schema.VIDEO_ID: list(rows[schema.VIDEO_ID]), schema.SUBJECT: list(rows[schema.SUBJECT]),
                        schema.LABEL: list(rows[schema.LABEL]), schema.REASON: [None] * 6})
    assert data.class_counts(summary, "coarse", ignore=[7]).tolist() == [1, 1, 0, 0, 1]  # Other: none
    spec = ModelSpec(name="m", arch="fer_cnn_smoke", ignore_classes=["other"])
    spec.validate()
    assert spec.ignore_classes == ["Other"] and spec.ignored_labels == [7]
    with pytest.raises(ConfigError, match="ignore_classes: unknown expression label"):
        ModelSpec(name="m", arch="fer_cnn_smoke", ignore_classes=["Joy!"]).validate()
    with pytest.raises(ConfigError, match="ignore_classes names classes"):
        ModelSpec(name="m", arch="fer_cnn_smoke", ignore_classes=[-1]).validate()


def test_source_weights_are_checked():
    with pytest.raises(ConfigError, match="source_weights must be in"):
        ModelSpec(name="m", arch="fer_cnn_smoke", source_weights={"fer2013": 0}).validate()
    with pytest.raises(ConfigError, match="apply to frame models"):
        ModelSpec(name="m", arch="mao_cnn_gru_smoke", source_weights={"fer2013": 2}).validate()


def test_init_from_fine_tunes_after_the_pretraining_stage():
    base = {"output": "o", "faces": "f"}
    cfg = load(TrainConfig, {**base, "models": [
        {"name": "coarse", "arch": "fer_cnn_smoke", "task": "coarse", "init_from": "pre"},
        {"name": "pre", "arch": "fer_cnn_smoke"}]})
    assert cfg.spec("coarse").after == ["pre"] and cfg.stages() == [["pre"], ["coarse"]]
    with pytest.raises(ConfigError, match="init_from 'zz' is not another model"):
        load(TrainConfig, {**base, "models": [{"name": "a", "arch": "fer_cnn_smoke", "init_from": "zz"}]})
    with pytest.raises(ConfigError, match="pretrained or init_from, not both"):
        load(TrainConfig, {**base, "models": [
            {"name": "a", "arch": "fer_cnn_smoke", "init_from": "b", "pretrained": "w.pt"},
            {"name": "b", "arch": "fer_cnn_smoke"}]})


def test_fine_tuning_loads_all_but_the_classifier(tmp_path):
    """What train_all gives a fine-tuned model (its pretrained = the stage's checkpoint): the Trainer starts
    from those weights, with a fresh head of its own task's size."""
    from fer_ray.models import create_model, save_checkpoint
    from fer_ray.train.loop import Trainer

    torch.manual_seed(3)
    pre = create_model("fer_cnn_smoke", 8)
    uri = str(tmp_path / "pre.pt")
    save_checkpoint(uri, pre, {"name": "fer_cnn_smoke", "task": "expr", "num_classes": 8, "input_size": 48,
                               "kind": "frame", "config": {}, "metrics": {}})
    spec = ModelSpec(name="coarse", arch="fer_cnn_smoke", task="coarse", pretrained=uri)
    spec.validate()
    model = Trainer(spec).core
    assert torch.equal(model.features[0].weight, pre.features[0].weight)
    assert model.fc.out_features == 5


def test_face_geometry_of_the_training_faces(tmp_path):
    from fer_ray import storage
    from fer_ray.train.launch import face_geometry

    a, b, c = (str(tmp_path / n) for n in "abc")
    storage.write_json(storage.join(a, "summary.json"), {"geometry": "fer", "face_size": 48})
    storage.write_json(storage.join(b, "summary.json"), {"geometry": "fer", "face_size": 48})
    storage.write_json(storage.join(c, "summary.json"), {"geometry": "arcface", "face_size": 112})
    assert face_geometry([a, b]) == {"geometry": "fer", "face_size": 48}
    assert face_geometry([str(tmp_path / "none")]) is None  # written before geometries were recorded
    with pytest.raises(ValueError, match="different face geometries"):
        face_geometry([a, c])


def _summary(videos: dict[str, str], rows_each: int = 3) -> pa.Table:
    vids = [v for v in videos for _ in range(rows_each)]
    return pa.table({schema.VIDEO_ID: vids, schema.SUBJECT: [videos[v] for v in vids],
                     schema.LABEL: [i % 8 for i in range(len(vids))],
                     schema.REASON: [None] * len(vids)})


def test_subject_split_never_shares_a_subject():
    videos = {f"S{s:03d}_{k}": f"S{s:03d}" for s in range(30) for k in range(1 + s % 3)}
    videos.update({"loose_a": None, "loose_b": ""})  # no subject: the video is its own group
    summary = _summary(videos)
    for seed in range(5):
        train, val = data.split_videos(summary, "subject", 0.2, seed)
        assert set(train) | set(val) == set(videos) and not set(train) & set(val)
        train_subjects = {videos[v] or v for v in train}
        val_subjects = {videos[v] or v for v in val}
        assert not train_subjects & val_subjects
        val_rows = len(val) / len(videos)
        assert 0.1 < val_rows < 0.35
    assert data.split_videos(summary, "subject", 0.2, 1) == data.split_videos(summary, "subject", 0.2, 1)
    by_video = data.split_videos(summary, "video", 0.2, 0)
    assert set(by_video[0]) | set(by_video[1]) == set(videos)


def test_split_seed_offset_gives_an_ensemble_member_its_own_validation_subjects():
    from fer_ray.train.launch import model_splits

    videos = {f"S{s:03d}_{k}": f"S{s:03d}" for s in range(30) for k in range(2)}
    models = [ModelSpec(name=n, arch="resnet_smoke", split_seed_offset=o) for n, o in
              (("a", 0), ("a_tuned", 0), ("b", 1))]
    config = TrainConfig(output="out", faces=["faces"], models=models, val_fraction=0.2, seed=3)
    splits = model_splits(config, _summary(videos))
    assert sorted(splits) == [0, 1]
    assert splits[0] == data.split_videos(_summary(videos), "subject", 0.2, 3)  # offset 0: the run's split
    for train, val in splits.values():
        assert set(train) | set(val) == set(videos)
        assert not {videos[v] for v in train} & {videos[v] for v in val}
    assert set(splits[0][1]) != set(splits[1][1])  # a different draw of validation subjects


def test_class_counts_by_task_only_faces():
    summary = pa.table({schema.VIDEO_ID: ["a"] * 5, schema.SUBJECT: ["s"] * 5, schema.LABEL: [0, 1, 4, 5, 1],
                        schema.REASON: [None, None, None, None, "no_face"]})
    assert data.class_counts(summary, "coarse").tolist() == [1, 1, 0, 0, 2]
    assert data.class_counts(summary, "negative").tolist() == [1, 0, 0, 1]


def test_clips_centered_and_sorted_by_frame_index():
    rows = _rows({"v": ("s", [0, 1, 2, 3, 4]), "w": ("t", [6, -1, 6])})
    order = np.random.default_rng(0).permutation(len(rows[schema.LABEL]))  # shuffled rows
    shuffled = {k: (v[order] if isinstance(v, np.ndarray) else [v[i] for i in order]) for k, v in rows.items()}
    clips = data.TemporalSamples(shuffled, "expr", "clip", 3, decode_size=16)
    assert len(clips) == 7  # annotated frames with a face
    frame = np.asarray(shuffled[schema.FRAME_INDEX])
    video = np.asarray(shuffled[schema.VIDEO_ID])
    windows = [(video[w[0]], frame[w].tolist()) for w in clips.windows]
    assert ("v", [0, 0, 1]) in windows and ("v", [1, 2, 3]) in windows and ("v", [3, 4, 4]) in windows
    assert ("w", [1, 2, 2]) in windows
    x, y = next(clips.batches(augment.eval_transform(16), 4, shuffle=False))
    assert x.shape == (4, 3, 3, 16, 16) and y.shape == (4,)


def test_sequences_chunked_with_padding():
    rows = _rows({"v": ("s", [0, 1, -1, 2, 3])})
    seqs = data.TemporalSamples(rows, "expr", "sequence", 4, decode_size=16)
    assert seqs.targets.tolist() == [[0, 1, -1, 2], [3, -1, -1, -1]]
    frame = np.asarray(rows[schema.FRAME_INDEX])
    assert frame[seqs.windows[1]].tolist() == [4, 4, 4, 4]  # edge frame repeated
    x, y = next(seqs.batches(augment.train_transform(16), 2, shuffle=False))
    assert x.shape == (2, 4, 3, 16, 16) and y.shape == (2, 4)


def test_config_validation_and_defaults():
    cfg = load(TrainConfig, {"output": "/tmp/o", "faces": "/tmp/f",
                             "models": [{"name": "a", "arch": "hrnet_smoke", "task": "coarse"},
                                        {"name": "b", "arch": "mao_cnn_gru_smoke"}]})
    assert cfg.faces == ["/tmp/f"]
    assert cfg.models[0].input_size == 128 and cfg.models[0].kind == "frame" and cfg.models[0].num_classes == 5
    assert cfg.models[1].kind == "clip" and cfg.models[1].clip_length == 9
    # relative local paths become absolute (Tune trials run in their own working directory); S3 stays
    rel = load(TrainConfig, {"output": "rel/models", "faces": ["rel/faces", "s3://b/faces"],
                             "models": [{"name": "a", "arch": "resnet_smoke"}]})
    assert rel.output == os.path.abspath("rel/models")
    assert rel.faces == [os.path.abspath("rel/faces"), "s3://b/faces"]
    with pytest.raises(ConfigError, match="unknown arch 'nope'.*iresnet152"):
        load(TrainConfig, {"output": "o", "faces": "f", "models": [{"name": "a", "arch": "nope"}]})
    with pytest.raises(ConfigError, match="duplicate"):
        load(TrainConfig, {"output": "o", "faces": "f", "models": [{"name": "a", "arch": "resnet_smoke"}] * 2})
    with pytest.raises(ConfigError, match="task"):
        load(TrainConfig, {"output": "o", "faces": "f", "models": [{"name": "a", "arch": "resnet_smoke",
                                                                     "task": "valence"}]})


def test_sized_architectures_are_built_for_the_configured_input_size():
    from fer_ray.models import create_model

    # IResNet's embedding layer and Swin's position tables depend on the side: the spec passes it on
    for arch, side in (("iresnet_tiny", 64), ("swin_tiny_smoke", 224)):
        spec = ModelSpec(name="m", arch=arch, task="coarse", input_size=side)
        spec.validate()
        assert spec.model_kwargs["img_size"] == side
        with torch.inference_mode():
            assert create_model(arch, 5, **spec.model_kwargs).eval()(torch.zeros(1, 3, side, side)).shape == (1, 5)
    plain = ModelSpec(name="m", arch="resnet_smoke", input_size=64)
    plain.validate()
    assert "img_size" not in plain.model_kwargs  # convolutional: any side works
    default = ModelSpec(name="m", arch="iresnet_tiny")
    default.validate()
    assert default.input_size == 112 and "img_size" not in default.model_kwargs
    with pytest.raises(ConfigError, match="img_size 96 differs from input_size 64"):
        ModelSpec(name="m", arch="iresnet_tiny", input_size=64, model_kwargs={"img_size": 96}).validate()


@pytest.mark.parametrize("path", ["configs/smoke.yaml", "configs/cfc_sp.yaml", "configs/mao.yaml",
                                  "configs/prl.yaml", "configs/all.yaml", "configs/accuracy.yaml",
                                  "configs/demo.yaml", "configs/accuracy_fer.yaml",
                                  "configs/accuracy_fer_single.yaml"])
def test_shipped_configs_load(path):
    from pathlib import Path

    cfg = load(TrainConfig, str(Path(__file__).resolve().parents[2] / path))
    assert cfg.models and all(m.input_size for m in cfg.models)


def _two_class_faces(n: int) -> dict:
    """n noisy 48-px faces, dark (Neutral) and bright (Happiness) in turn, one video each."""
    rng = np.random.default_rng(0)
    cols = {c: [] for c in data.TRAIN_COLUMNS}
    for i in range(n):
        y = i % 2
        buffer = io.BytesIO()
        Image.fromarray(np.clip(rng.normal(60 + 140 * y, 20, (48, 48, 3)), 0, 255).astype(np.uint8)).save(buffer, "JPEG")
        cols[schema.VIDEO_ID].append(f"v{i:02d}")
        cols[schema.FRAME_INDEX].append(0)
        cols[schema.FACE].append(buffer.getvalue())
        cols[schema.LABEL].append(labels.class_index("Happiness") if y else 0)
        cols[schema.SUBJECT].append(f"s{i}")
    return cols


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_train_local_learns_and_reloads_identically(tmp_path, precision):
    from fer_ray.models import create_model, load_checkpoint, save_checkpoint
    from fer_ray.train.loop import train_local

    cols = _two_class_faces(48)  # two easy classes: dark vs bright faces
    spec = ModelSpec(name="t", arch="resnet_smoke", task="coarse", epochs=3, batch_size=8, lr=3e-3,
                     input_size=32, augment=AugmentConfig(enabled=False), precision=precision)
    spec.validate()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core box: spinning intra-op threads make this 50x slower under load
    try:
        model, history = train_local(spec, cols, cols, device="cpu")
    finally:
        torch.set_num_threads(threads)
    assert len(history) == 3 and history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert history[-1]["val_accuracy"] > 0.5  # two classes present; BatchNorm running stats still settling
    assert {"epoch_start", "epoch_end", "val_macro_f1", "val_abaw2", "train_loss"} <= set(history[0])
    assert {row["precision"] for row in history} == {precision}
    uri = str(tmp_path / "ck.pt")
    save_checkpoint(uri, model, {"name": spec.arch, "task": spec.task, "num_classes": 5, "input_size": 32,
                                 "kind": "frame", "config": {}, "metrics": {}})
    again, meta = load_checkpoint(uri)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(model.eval()(x), again(x))
    assert not torch.equal(model(x), create_model("resnet_smoke", 5).eval()(x))


def test_after_orders_models_in_stages():
    base = {"output": "o", "faces": "f"}
    cfg = load(TrainConfig, {**base, "models": [
        {"name": "gru", "arch": "mao_cnn_gru_smoke", "after": ["cnn"]},
        {"name": "cnn", "arch": "resnet_smoke"}, {"name": "other", "arch": "repvgg_smoke"}]})
    assert cfg.stages() == [["cnn", "other"], ["gru"]]
    with pytest.raises(ConfigError, match="cycle"):
        load(TrainConfig, {**base, "models": [{"name": "a", "arch": "resnet_smoke", "after": ["b"]},
                                              {"name": "b", "arch": "resnet_smoke", "after": ["a"]}]})
    with pytest.raises(ConfigError, match="not another model"):
        load(TrainConfig, {**base, "models": [{"name": "a", "arch": "resnet_smoke", "after": ["zz"]}]})


@pytest.mark.parametrize("arch,task,loss", [("mao_cnn_gru_smoke", "coarse", "ce"), ("prl_fusion_smoke", "expr", "focal")])
def test_train_local_temporal_models(arch, task, loss):
    from fer_ray.train.config import LossConfig
    from fer_ray.train.loop import train_local

    rows = _rows({"v1": ("s1", [0, 4, 4, 6, 1, 0]), "v2": ("s2", [4, 4, 0, -1, 6])})
    spec = ModelSpec(name="t", arch=arch, task=task, epochs=1, batch_size=2, max_steps_per_epoch=2,
                     input_size=64, loss=LossConfig(name=loss, alpha=0.9), model_kwargs={})
    spec.validate()
    if spec.kind == "sequence":
        spec.clip_length = 4  # short chunks for the test
    model, history = train_local(spec, rows, rows, device="cpu")
    assert history[0]["train_steps"] >= 1 and np.isfinite(history[0]["train_loss"])
    assert history[0]["val_frames"] > 0


def test_tune_trials_get_no_credentials_in_their_runtime_env(monkeypatch):
    """Ray Tune copies AWS_* keys from the driver into each trial actor's runtime_env (then logged by the
    runtime-env agent and shown by the dashboard); train_all switches that off before building its Tuner."""
    from ray.tune.execution import class_cache

    from fer_ray.train import launch

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTTESTTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-real-secret")
    # Ray's own list (an earlier train_all in this process may already have narrowed it)
    monkeypatch.setattr(class_cache, "ENV_VARS_TO_PROPAGATE",
                        frozenset(class_cache.ENV_VARS_TO_PROPAGATE) | launch._CREDENTIAL_VARS)

    class Before:
        pass

    class After:
        pass

    before = class_cache._ActorClassCache().get(Before)._default_options["runtime_env"]["env_vars"]
    assert before["AWS_SECRET_ACCESS_KEY"] == "not-a-real-secret"  # what Ray does on its own
    launch._keep_credentials_out_of_runtime_envs()
    after = class_cache._ActorClassCache().get(After)._default_options["runtime_env"]["env_vars"]
    assert not any(name.startswith("AWS_") for name in after), after


def test_trial_and_controller_code_imports_neither_timm_nor_torchvision():
    """A Tune trial and a Ray Train controller import fer_ray.train.launch / loop (to name train_func) but never
    build a model or decode a face: without timm and torchvision (and the torch._dynamo they pull in) each
    of those processes starts ~2.7 CPU-s sooner. The worker imports them when it builds its Trainer."""
    import subprocess
    import sys

    code = ("import sys; import fer_ray.train.launch, fer_ray.train.loop, fer_ray.jobs.train; "
            "print(sorted(m for m in ('timm', 'torchvision', 'torch._dynamo', 'facenet_pytorch') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout


def test_rows_in_any_delivery_order_come_out_in_one_order():
    """What a cached-rows worker trains on does not depend on the order Ray Data delivered the rows in:
    video id, then frame index, then the face's bytes (two faces of one frame)."""
    rows = _two_class_faces(12)
    rows[schema.VIDEO_ID][5], rows[schema.FRAME_INDEX][5] = "v04", 0  # a second face of frame 0 of v04
    want = data.in_row_order(rows)
    assert want[schema.VIDEO_ID] == sorted(want[schema.VIDEO_ID])
    for seed in range(3):
        order = np.random.default_rng(seed).permutation(12)
        shuffled = {k: [v[i] for i in order] for k, v in rows.items()}
        assert data.in_row_order(shuffled) == want


def test_a_resumed_run_trains_the_same_model_as_an_uninterrupted_one():
    """Ray Train restarts a killed worker in a new process from its last epoch checkpoint: with the epoch's
    random draws (augmentation, dropout, row order) seeded by (seed, epoch), the resumed run ends with the
    same weights as a run that was never interrupted."""
    from fer_ray.train.loop import Trainer, fit, memory_batches

    rows = _two_class_faces(32)
    spec = ModelSpec(name="t", arch="fer_cnn_smoke", task="coarse", epochs=3, batch_size=8, lr=3e-3,
                     input_size=48, augment=AugmentConfig(erasing=0.5, blur=0.5))  # random draws every batch
    spec.validate()

    def trainer() -> Trainer:
        return Trainer(spec, "cpu", [16, 0, 16, 0, 0], seed=3)

    whole = trainer()
    fit(whole, memory_batches(whole, rows, rows))

    class Killed(Exception):
        pass

    checkpoints = []
    first = trainer()

    def checkpoint_then_die(epoch, row, history, best):  # as the Ray Train reporter checkpoints, then a kill
        checkpoints.append(first.state(epoch, history, best))
        raise Killed

    with pytest.raises(Killed):
        fit(first, memory_batches(first, rows, rows), on_epoch=checkpoint_then_die)
    torch.manual_seed(12345)  # a new process: its generator is wherever it is
    torch.rand(100)
    resumed = trainer()
    resumed.load_state(checkpoints[0])
    fit(resumed, memory_batches(resumed, rows, rows), start_epoch=1, history=checkpoints[0]["history"])
    for (name, a), (_, b) in zip(whole.core.state_dict().items(), resumed.core.state_dict().items()):
        assert torch.equal(a, b), name


def test_precision_auto_is_bf16_on_gpus_only():
    from fer_ray.train.loop import autocast_device

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert autocast_device(cpu, "float32") is None and autocast_device(gpu, "float32") is None
    assert autocast_device(cpu, "bfloat16") == "cpu" and autocast_device(gpu, "auto") == "cuda"
    assert autocast_device(cpu, "auto") is None
    with pytest.raises(ConfigError, match="precision"):
        spec_from_dict({"name": "t", "arch": "resnet_smoke", "precision": "half"})


def test_seed_offset_gives_an_ensemble_member_its_own_draws():
    from fer_ray.train.loop import train_local

    cols = _two_class_faces(16)
    x = torch.randn(2, 3, 32, 32)
    outputs = []
    for offset in (0, 0, 1):
        spec = ModelSpec(name="t", arch="resnet_smoke", task="coarse", epochs=1, batch_size=8, input_size=32,
                         precision="float32", seed_offset=offset)
        spec.validate()
        model, _ = train_local(spec, cols, cols, device="cpu")
        with torch.inference_mode():
            outputs.append(model(x))
    assert torch.equal(outputs[0], outputs[1]) and not torch.allclose(outputs[0], outputs[2])
