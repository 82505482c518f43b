"""IResNet: the "improved" ResNet of ArcFace face recognition, used as a frame backbone.

Paper: `ArcFace: Additive Angular Margin Loss for Deep Face Recognition` (Deng et al., CVPR 2019),
https://arxiv.org/abs/1801.07698, with the IR block of `Improved Residual Networks` (Duta et al., 2020).
CFC-SP (Xue et al., ABAW3 2022) uses IR-152 in its coarse ensemble; Mao et al. (ABAW2 2021) start from
face-recognition weights.

The layout follows insightface ``recognition/arcface_torch/backbones/iresnet.py`` module for module, with
the same attribute names, so an insightface ``backbone.pth`` loads with :func:`fer_ray.models.load_pretrained`:

    stem   conv3x3(3, 64) - BN - PReLU                                  (input 112 x 112, stride 1)
    stages IBasicBlock = BN - conv3x3 - BN - PReLU - conv3x3(stride) - BN (+ shortcut), stride 2 in the
           first block of each of the 4 stages -> 7 x 7 x 512 at 112 input
    neck   BN2d - dropout - flatten - FC(512*7*7 -> 512) - BN1d   = the 512-d face embedding (``features``)
    head   Linear(512 -> num_classes)                               (fer-ray addition; absent in insightface)

``forward_features`` returns the 7 x 7 map after ``bn2``; ``forward_head(x, pre_logits=True)`` the embedding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.utils.checkpoint
from timm.models import register_model

__all__ = ["IBasicBlock", "IResNet"]  # model entrypoints are appended by @register_model

_MEAN = (0.5, 0.5, 0.5)  # insightface normalises faces to [-1, 1]
_STD = (0.5, 0.5, 0.5)


def _cfg(**kwargs) -> dict:
    return {
        "url": "", "num_classes": 8, "input_size": (3, 112, 112), "pool_size": (7, 7),
        "crop_pct": 1.0, "interpolation": "bilinear", "mean": _MEAN, "std": _STD,
        "first_conv": "conv1", "classifier": "head", **kwargs,
    }


default_cfgs = {
    name: _cfg() for name in ("iresnet18", "iresnet34", "iresnet50", "iresnet100", "iresnet152", "iresnet_tiny")
}


def conv3x3(in_chs: int, out_chs: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_chs, out_chs, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_chs: int, out_chs: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_chs, out_chs, kernel_size=1, stride=stride, bias=False)


class IBasicBlock(nn.Module):
    """BN - conv3x3 - BN - PReLU - conv3x3(stride) - BN, plus the (projected) identity."""

    expansion = 1

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chs, eps=1e-5)
        self.conv1 = conv3x3(in_chs, out_chs)
        self.bn2 = nn.BatchNorm2d(out_chs, eps=1e-5)
        self.prelu = nn.PReLU(out_chs)
        self.conv2 = conv3x3(out_chs, out_chs, stride)
        self.bn3 = nn.BatchNorm2d(out_chs, eps=1e-5)
        self.downsample = downsample
        self.stride = stride

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.bn1(x)
        x = self.conv1(x)
        x = self.bn2(x)
        x = self.prelu(x)
        x = self.conv2(x)
        x = self.bn3(x)
        return x + shortcut


class IResNet(nn.Module):
    """ArcFace IResNet with a classification head on the face embedding.

    Args:
        layers: blocks per stage, e.g. (3, 4, 14, 3) for IR-50.
        num_classes: classifier outputs; 0 gives no classifier (``forward`` returns the embedding).
        widths: channels of the 4 stages (the stem has ``widths[0]``).
        embed_dim: size of the face embedding (512 in insightface).
        img_size: square input side; fixes the embedding FC input (side / 16 squared positions).
        drop_rate: dropout before the embedding FC (insightface ``dropout``).
        freeze_embedding_scale: keep the embedding BN1d weight fixed at 1, as insightface does.
        zero_init_last: zero the last BN of every residual branch (ignored when loading weights).
    """

    def __init__(
            self,
            layers: Sequence[int] = (3, 4, 14, 3),
            num_classes: int = 8,
            in_chans: int = 3,
            widths: Sequence[int] = (64, 128, 256, 512),
            embed_dim: int = 512,
            img_size: int = 112,
            drop_rate: float = 0.0,
            freeze_embedding_scale: bool = True,
            zero_init_last: bool = True,
    ):
        super().__init__()
        if img_size % 16:
            raise ValueError(f"IResNet img_size must be a multiple of 16, got {img_size}")
        if len(layers) != 4 or len(widths) != 4:
            raise ValueError("IResNet needs 4 stages: layers and widths of length 4")
        self.num_classes = num_classes
        self.img_size = img_size
        self.drop_rate = drop_rate
        self.num_features = widths[-1]          # channels of forward_features
        self.head_hidden_size = embed_dim       # size of the pre-logits embedding
        self.grad_checkpointing = False

        self.conv1 = nn.Conv2d(in_chans, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0], eps=1e-5)
        self.prelu = nn.PReLU(widths[0])
        in_chs = widths[0]
        for index, (depth, out_chs) in enumerate(zip(layers, widths), start=1):
            setattr(self, f"layer{index}", self._make_layer(in_chs, out_chs, depth, stride=2))
            in_chs = out_chs
        self.bn2 = nn.BatchNorm2d(in_chs, eps=1e-5)
        self.dropout = nn.Dropout(p=drop_rate)
        side = img_size // 16
        self.fc = nn.Linear(in_chs * side * side, embed_dim)
        self.features = nn.BatchNorm1d(embed_dim, eps=1e-5)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_last:
            for module in self.modules():
                if isinstance(module, IBasicBlock):
                    module.zero_init_last()
        self.features.weight.requires_grad = not freeze_embedding_scale

    @staticmethod
    def _make_layer(in_chs: int, out_chs: int, depth: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or in_chs != out_chs:
            downsample = nn.Sequential(conv1x1(in_chs, out_chs, stride), nn.BatchNorm2d(out_chs, eps=1e-5))
        blocks = [IBasicBlock(in_chs, out_chs, stride, downsample)]
        blocks += [IBasicBlock(out_chs, out_chs) for _ in range(1, depth)]
        return nn.Sequential(*blocks)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        for index in range(1, 5):
            stage = getattr(self, f"layer{index}")
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = torch.utils.checkpoint.checkpoint_sequential(stage, len(stage), x, use_reentrant=False)
            else:
                x = stage(x)
        return self.bn2(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        side = self.img_size // 16
        if x.shape[-2:] != (side, side):
            raise ValueError(f"IResNet built for {self.img_size}px input (a {side}x{side} feature map) got a "
                             f"{tuple(x.shape[-2:])} map; resize faces to {self.img_size} or create it with "
                             f"img_size={x.shape[-1] * 16}")
        x = torch.flatten(x, 1)
        x = self.dropout(x)
        x = self.features(self.fc(x))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _create_iresnet(variant: str, layers: Sequence[int], pretrained: bool = False, **kwargs) -> IResNet:
    if pretrained:
        raise ValueError(f"{variant}: fer-ray never downloads weights; create with pretrained=False and use "
                         "fer_ray.models.load_pretrained(model, uri)")
    kwargs.pop("pretrained_cfg", None)
    kwargs.pop("pretrained_cfg_overlay", None)
    kwargs.pop("cache_dir", None)
    model = IResNet(layers=layers, **kwargs)
    model.pretrained_cfg = model.default_cfg = dict(default_cfgs[variant], architecture=variant)
    return model


@register_model
def iresnet18(pretrained=False, **kwargs) -> IResNet:
    return _create_iresnet("iresnet18", (2, 2, 2, 2), pretrained, **kwargs)


@register_model
def iresnet34(pretrained=False, **kwargs) -> IResNet:
    return _create_iresnet("iresnet34", (3, 4, 6, 3), pretrained, **kwargs)


@register_model
def iresnet50(pretrained=False, **kwargs) -> IResNet:
    return _create_iresnet("iresnet50", (3, 4, 14, 3), pretrained, **kwargs)


@register_model
def iresnet100(pretrained=False, **kwargs) -> IResNet:
    return _create_iresnet("iresnet100", (3, 13, 30, 3), pretrained, **kwargs)


@register_model
def iresnet152(pretrained=False, **kwargs) -> IResNet:
    return _create_iresnet("iresnet152", (3, 8, 36, 3), pretrained, **kwargs)


@register_model
def iresnet_tiny(pretrained=False, **kwargs) -> IResNet:
    """Smoke-test IResNet: one block per stage, widths 16-128, 128-d embedding (input 112)."""
    kwargs = {"widths": (16, 32, 64, 128), "embed_dim": 128, **kwargs}
    return _create_iresnet("iresnet_tiny", (1, 1, 1, 1), pretrained, **kwargs)
