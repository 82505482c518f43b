"""FerCNN: the small from-scratch CNN of ../shared/RECIPES.md, for the 48-px "fer" face geometry.

0.66 M parameters at the default widths: conv3x3(32)+BN+ReLU+maxpool, then three blocks of
[2 x (conv3x3+BN+ReLU) + maxpool] at 48/96/192 channels, global average pool, dropout 0.4, linear.
Measured on 2 CPU threads (RECIPES.md): 8 epochs on fer2013 + ckplus48 + taiwanese_dev photos reach
~0.64 macro-F1 on photos of unseen performers.

Grey and colour are handled inside the model, so training and inference cannot disagree on them: the
input (normalised RGB, as every fer-ray model gets it) becomes one luma channel, and each image is
standardised by its own mean and std (the recipe's per-image standardisation), which also removes the
dataset-wide normalisation's effect.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from timm.models import register_model

__all__ = ["FerCNN"]

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601: what PIL's convert("L") and torchvision's rgb_to_grayscale use


def _conv(in_chs: int, out_chs: int) -> list[nn.Module]:
    return [nn.Conv2d(in_chs, out_chs, 3, padding=1, bias=False), nn.BatchNorm2d(out_chs), nn.ReLU(inplace=True)]


class FerCNN(nn.Module):
    def __init__(self, num_classes: int = 8, widths: Sequence[int] = (32, 48, 96, 192), drop_rate: float = 0.4,
                 grey: bool = True, in_chans: int = 3, **_):
        super().__init__()
        self.grey = grey
        chans = 1 if grey else in_chans
        layers = [*_conv(chans, widths[0]), nn.MaxPool2d(2)]
        for in_chs, out_chs in zip(widths[:-1], widths[1:]):
            layers += [*_conv(in_chs, out_chs), *_conv(out_chs, out_chs), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*layers)
        self.num_features = self.head_hidden_size = widths[-1]
        self.drop = nn.Dropout(drop_rate)
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        if self.grey:
            luma = x.new_tensor(LUMA).view(1, 3, 1, 1)
            x = (x * luma).sum(1, keepdim=True)
        mean = x.mean((1, 2, 3), keepdim=True)
        std = x.std((1, 2, 3), keepdim=True).clamp_min(1e-3)  # a flat (blank) image stays finite
        return (x - mean) / std

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.standardise(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(x.mean((2, 3)))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _create(variant: str, pretrained: bool, **kwargs) -> FerCNN:
    if pretrained:
        raise ValueError(f"{variant}: fer-ray never downloads weights; create with pretrained=False and use "
                         "fer_ray.models.load_pretrained(model, uri)")
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    model = FerCNN(**kwargs)
    model.pretrained_cfg = model.default_cfg = {
        "architecture": variant, "url": "", "num_classes": model.num_classes, "input_size": (3, 48, 48),
        "interpolation": "bilinear", "first_conv": "features.0", "classifier": "fc"}
    return model


@register_model
def fer_cnn(pretrained=False, **kwargs) -> FerCNN:
    """RECIPES.md's 0.66 M-parameter CNN for 48-px grey faces (input 48)."""
    return _create("fer_cnn", pretrained, **kwargs)


@register_model
def fer_cnn_smoke(pretrained=False, **kwargs) -> FerCNN:
    """A narrower FerCNN (widths 8-32) for tests."""
    return _create("fer_cnn_smoke", pretrained, **{"widths": (8, 12, 16, 32), **kwargs})
