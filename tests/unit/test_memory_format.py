"""Training's memory format on CPU: channels_last only for models that declare `cpu_channels_last` (FerCNN),
with the same step as the default layout; others (timm's RepVGG crashes with it on CPU) stay as they are."""

from __future__ import annotations

import torch

from fer_ray.train.config import ModelSpec
from fer_ray.train.loop import Trainer


def _trainer(arch: str) -> Trainer:
    spec = ModelSpec(name="m", arch=arch, task="expr", epochs=1, lr=0.01)
    spec.validate()
    return Trainer(spec, "cpu", [5] * 8, seed=3)


def _batch(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(8, 3, size, size, generator=generator), torch.arange(8) % 8


def test_fer_cnn_trains_channels_last_with_the_default_layouts_step():
    fast = _trainer("fer_cnn_smoke")
    assert fast.channels_last and fast.core.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    plain = _trainer("fer_cnn_smoke")
    plain.channels_last = False
    plain.model = plain.model.to(memory_format=torch.contiguous_format)
    x, y = _batch(48)
    torch.manual_seed(1)  # dropout draws the same mask in both
    a = fast.train_epoch([(x, y)])["train_loss"]
    torch.manual_seed(1)
    b = plain.train_epoch([(x, y)])["train_loss"]
    assert abs(a - b) < 1e-5
    for (name, p), q in zip(fast.core.state_dict().items(), plain.core.state_dict().values()):
        assert torch.allclose(p, q, atol=1e-5), name  # the same update


def test_models_that_do_not_declare_it_keep_their_layout_on_cpu():
    trainer = _trainer("repvgg_smoke")
    assert not trainer.channels_last
    conv = next(m for m in trainer.core.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous()
    x, y = _batch(trainer.spec.input_size)
    assert trainer.train_epoch([(x, y)])["train_steps"] == 1
