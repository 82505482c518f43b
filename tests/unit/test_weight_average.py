"""ModelSpec.ema: the weight average (fer_ray.train.average) that a run validates, exports and resumes."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from fer_ray.config import ConfigError
from fer_ray.train.average import WeightAverage
from fer_ray.train.config import AugmentConfig, ModelSpec, spec_from_dict
from tests.unit.test_train_data import _two_class_faces


def test_the_average_follows_the_warm_up_then_the_decay():
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1))
    average = WeightAverage(model, decay=0.28)
    weight, mean = float(model[0].weight.detach()), 0.0  # BatchNorm's running mean starts at 0
    for n, value in enumerate([2.0, -1.0, 4.0, 3.0], start=1):
        with torch.no_grad():
            model[0].weight.fill_(value)
            model[1].running_mean.fill_(10 * value)
            model[1].num_batches_tracked.fill_(7 * n)
        decay = min(0.28, (1 + n) / (10 + n))  # 2/11, 3/12, then the cap (4/13 > 0.28)
        weight = decay * weight + (1 - decay) * value
        mean = decay * mean + (1 - decay) * 10 * value
        average.update(model)
        assert float(average.module[0].weight) == pytest.approx(weight)
        assert float(average.module[1].running_mean) == pytest.approx(mean)  # statistics averaged too
    assert average.updates == 4 and average.current_decay() == 0.28
    assert int(average.module[1].num_batches_tracked) == 28  # integer buffers are copied, not averaged
    assert not average.module.training and not any(p.requires_grad for p in average.module.parameters())


def test_ema_is_checked():
    with pytest.raises(ConfigError, match="ema"):
        spec_from_dict({"name": "t", "arch": "resnet_smoke", "ema": 1.0})
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(nn.Linear(1, 1), 0.0)


def _spec(**changes) -> ModelSpec:
    spec = ModelSpec(name="t", arch="fer_cnn_smoke", task="coarse", epochs=3, batch_size=8, lr=3e-3,
                     input_size=48, augment=AugmentConfig(erasing=0.5, blur=0.5), **changes)
    spec.validate()
    return spec


def test_a_run_with_ema_validates_and_returns_the_average():
    from fer_ray.train.loop import Trainer, fit, memory_batches, train_local

    rows = _two_class_faces(32)
    model, history = train_local(_spec(ema=0.9), rows, rows, seed=3, device="cpu")
    plain, _ = train_local(_spec(), rows, rows, seed=3, device="cpu")
    trained = Trainer(_spec(ema=0.9), "cpu", [16, 0, 16, 0, 0], seed=3)
    fit(trained, memory_batches(trained, rows, rows))
    # the average only watches: the same draws train the same weights with it or without it
    for (name, a), (_, b) in zip(plain.state_dict().items(), trained.core.state_dict().items()):
        assert torch.equal(a, b), name
    # and the run hands back the average, not its last weights
    for (name, a), (_, b) in zip(model.state_dict().items(), trained.average.module.state_dict().items()):
        assert torch.equal(a, b), name
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), plain.parameters()))
    # validation scored the average: the last epoch's figures are the average's, recomputed here
    metrics, _ = trained.evaluate(memory_batches(trained, rows, rows)(0)[1])
    assert history[-1]["val_loss"] == pytest.approx(metrics["val_loss"])


def test_a_resumed_run_ends_with_the_same_average():
    """A worker killed after an epoch resumes from its checkpoint: the average goes on from the saved one (a
    fresh copy of the resumed weights would forget the epochs before the kill)."""
    from fer_ray.safe_load import as_plain
    from fer_ray.train.loop import Trainer, fit, memory_batches

    rows = _two_class_faces(32)

    def trainer() -> Trainer:
        return Trainer(_spec(ema=0.9), "cpu", [16, 0, 16, 0, 0], seed=3)

    whole = trainer()
    fit(whole, memory_batches(whole, rows, rows))
    first, saved = trainer(), []

    class Killed(Exception):
        pass

    def checkpoint_then_die(epoch, row, history, best):
        saved.append(as_plain(first.state(epoch, history, best)))
        raise Killed

    with pytest.raises(Killed):
        fit(first, memory_batches(first, rows, rows), on_epoch=checkpoint_then_die)
    resumed = trainer()
    resumed.load_state(saved[0])
    fit(resumed, memory_batches(resumed, rows, rows), start_epoch=1, history=saved[0]["history"])
    assert resumed.average.updates == whole.average.updates == 3 * 4  # 3 epochs of 32 faces in batches of 8
    for (name, a), (_, b) in zip(whole.average.module.state_dict().items(),
                                 resumed.average.module.state_dict().items()):
        assert torch.equal(a, b), name
    without = trainer()
    with pytest.raises(ValueError, match="no weight average"):
        without.load_state({**saved[0], "average": None})


def test_runs_trained_before_ema_existed_keep_their_hashes():
    """An upgrade must not retrain finished models: with ema at its default, a model's spec hash and the
    run's version are those of a spec without the field (what runs before it recorded); ema on changes both."""
    import dataclasses

    from fer_ray.train import launch
    from fer_ray.train.config import TrainConfig, spec_to_dict

    spec = _spec()
    config = TrainConfig(output="out", faces=["faces"], models=[spec])
    splits, parts = {0: (["a"], ["b"])}, ["faces/part-0"]
    as_before = {k: v for k, v in spec_to_dict(spec).items() if k != "ema"}
    assert launch._spec_hash(spec_to_dict(spec), "data") == launch._spec_hash(as_before, "data")
    with_ema = dataclasses.replace(spec, ema=0.999)
    assert launch._spec_hash(spec_to_dict(with_ema), "data") != launch._spec_hash(as_before, "data")
    assert launch.data_version(dataclasses.replace(config, models=[with_ema]), splits, parts) != \
        launch.data_version(config, splits, parts)
