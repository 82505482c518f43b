"""Losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from fer_ray.config import ConfigError
from fer_ray.train import sampler
from fer_ray.train.config import LossConfig, ModelSpec
from fer_ray.train.losses import CrossEntropy, FocalLoss, balanced_weights, build_loss


def _softmax(row):
    z = [math.exp(v) for v in row]
    return [v / sum(z) for v in z]


def test_focal_loss_matches_hand_computation_prl_parameters():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.5, 0.5, 3.0]])
    target = torch.tensor([0, 1])
    expected = []
    for row, y in zip(logits.tolist(), target.tolist()):
        p = _softmax(row)[y]
        expected.append(0.9 * (1 - p) ** 2 * -math.log(p))
    value = FocalLoss(alpha=0.9, gamma=2.0)(logits, target)
    assert value.item() == pytest.approx(sum(expected) / 2, rel=1e-6)
    # first sample by hand: p = e^2 / (e^2 + e + 1) = 0.665241
    p0 = math.exp(2) / (math.exp(2) + math.exp(1) + 1)
    assert p0 == pytest.approx(0.665241, abs=1e-6)
    single = FocalLoss(alpha=0.9, gamma=2.0)(logits[:1], target[:1]).item()
    assert single == pytest.approx(0.9 * (1 - 0.665241) ** 2 * -math.log(0.665241), rel=1e-5)
    assert single == pytest.approx(0.041110, abs=1e-5)  # 0.9 * 0.334759^2 * 0.407606


def test_focal_gamma_zero_alpha_one_is_cross_entropy():
    torch.manual_seed(0)
    logits, target = torch.randn(16, 5), torch.randint(0, 5, (16,))
    ce = torch.nn.functional.cross_entropy(logits, target)
    assert FocalLoss(alpha=None, gamma=0.0)(logits, target).item() == pytest.approx(ce.item(), rel=1e-6)


def test_ignore_index_and_sequence_shapes():
    logits = torch.randn(2, 4, 3)  # (B, T, C) sequence output
    target = torch.tensor([[0, -1, 2, 1], [-1, -1, 1, 0]])
    flat_keep = target.reshape(-1) >= 0
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, 3)[flat_keep], target.reshape(-1)[flat_keep])
    assert CrossEntropy()(logits, target).item() == pytest.approx(ce.item(), rel=1e-6)
    assert FocalLoss(gamma=0.0)(logits, target).item() == pytest.approx(ce.item(), rel=1e-6)
    none = torch.full((2, 4), -1)
    assert CrossEntropy()(logits, none).item() == 0.0 and FocalLoss()(logits, none).item() == 0.0


def test_label_smoothing_and_class_weights():
    logits, target = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 0])
    w = [2.0, 1.0]
    expected = torch.nn.functional.cross_entropy(logits, target, weight=torch.tensor(w), label_smoothing=0.1)
    assert CrossEntropy(0.1, w)(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    # weighted focal with gamma 0 is weighted cross-entropy (same weighted-mean reduction)
    wce = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1]), weight=torch.tensor(w))
    assert FocalLoss(gamma=0.0, class_weights=w)(logits, torch.tensor([0, 1])).item() == pytest.approx(wce.item())
    # smoothing with one class: -(1-e) log p_y - e * mean log p
    lp = torch.log_softmax(logits[:1], -1)[0]
    hand = -(0.9 * lp[0] + 0.1 * lp.mean()).item()
    assert FocalLoss(gamma=0.0, label_smoothing=0.1)(logits[:1], target[:1]).item() == pytest.approx(hand, rel=1e-6)


def test_build_loss_from_config():
    assert isinstance(build_loss(LossConfig(name="focal", alpha=0.9)), FocalLoss)
    assert isinstance(build_loss(LossConfig()), CrossEntropy)


def test_balanced_weights_by_hand_and_with_oversampling():
    # coarse labels of the accuracy benchmark's training photos: Neutral, Happiness, Surprise, Other, Negative
    counts = [34, 95, 72, 0, 309]
    weights = balanced_weights(counts)
    n, k = sum(counts), 4  # Other has no photos: it is not counted and gets weight 0
    assert weights == pytest.approx([n / (k * 34), n / (k * 95), n / (k * 72), 0.0, n / (k * 309)])
    factors = sampler.repeat_factors(counts, 0.15)  # Neutral is repeated 1.5x, Surprise 1.03x
    drawn = [c * f for c, f in zip(counts, factors)]
    with_factors = balanced_weights(counts, factors)
    shares = [d * w for d, w in zip(drawn, with_factors) if d > 0]
    assert shares == pytest.approx([shares[0]] * 4)  # every class carries the same share of the loss
    assert with_factors[0] < weights[0]  # oversampling already did part of the work
    with pytest.raises(ValueError, match="at least one class"):
        balanced_weights([0, 0, 0])


def test_balanced_weights_remove_the_label_prior():
    """A model that can only learn a class prior (one bias per class) ends at the uniform prior when the loss
    is balanced, and at the label frequencies when it is not."""
    counts = [5, 40, 15]
    target = torch.repeat_interleave(torch.arange(3), torch.tensor(counts))
    for loss, expected in ((build_loss(LossConfig(class_weights="balanced"), counts), [1 / 3] * 3),
                           (build_loss(LossConfig()), [c / sum(counts) for c in counts])):
        bias = torch.zeros(3, requires_grad=True)
        opt = torch.optim.LBFGS([bias], max_iter=200, line_search_fn="strong_wolfe")

        def step(bias=bias, opt=opt, loss=loss):
            opt.zero_grad()
            value = loss(bias.expand(len(target), 3), target)
            value.backward()
            return value

        opt.step(step)
        assert torch.softmax(bias, 0).tolist() == pytest.approx(expected, abs=1e-4)


def test_balanced_class_weights_config():
    with pytest.raises(ValueError, match="needs the training class counts"):
        build_loss(LossConfig(class_weights="balanced"))
    spec = ModelSpec(name="m", arch="resnet_smoke", task="coarse", loss=LossConfig(class_weights="balanced"))
    spec.validate()  # "balanced" needs no per-class list
    from fer_ray.config import from_dict

    with pytest.raises(ConfigError, match="'balanced'"):
        from_dict(LossConfig, {"class_weights": "balance"})
    with pytest.raises(ConfigError, match="needs 5 values"):
        ModelSpec(name="m", arch="resnet_smoke", task="coarse", loss=LossConfig(class_weights=[1.0, 2.0])).validate()


def test_trainer_balances_its_loss_from_the_split_counts():
    from fer_ray.train.config import OversampleConfig
    from fer_ray.train.loop import Trainer

    spec = ModelSpec(name="m", arch="resnet_smoke", task="coarse", oversample=OversampleConfig(enabled=True),
                     loss=LossConfig(class_weights="balanced"))
    spec.validate()
    counts = [34, 95, 72, 0, 309]
    trainer = Trainer(spec, "cpu", counts)
    expected = balanced_weights(counts, sampler.repeat_factors(counts, spec.oversample.threshold))
    assert trainer.loss_fn.weight.tolist() == pytest.approx(expected)
    with pytest.raises(ValueError, match="class counts"):
        Trainer(spec, "cpu", None)
