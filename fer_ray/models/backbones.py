"""Frame backbones built from timm: the CFC-SP / Mao / PRL wrappers and tiny smoke-test variants.

Papers:
- Swin-S: `Swin Transformer: Hierarchical Vision Transformer using Shifted Windows` (Liu et al., ICCV 2021),
  https://arxiv.org/abs/2103.14030 - in the CFC-SP coarse ensemble (input 224).
- HRNet: `Deep High-Resolution Representation Learning for Visual Recognition` (Wang et al., TPAMI 2020),
  https://arxiv.org/abs/1908.07919 - in the CFC-SP coarse ensemble (input 128: timm's HRNet needs a side
  that is a multiple of 32).
- RepVGG: `RepVGG: Making VGG-style ConvNets Great Again` (Ding et al., CVPR 2021),
  https://arxiv.org/abs/2101.03697 - the CFC-SP negative net; :func:`reparameterize` fuses it for deploy.
- ResNet-50 (He et al., CVPR 2016) - Mao et al.'s frame CNN and the plain 8-class baseline.
- RegNetY-1.6GF: `Designing Network Design Spaces` (Radosavovic et al., CVPR 2020),
  https://arxiv.org/abs/2003.13678 - the PRL backbone (888 pooled features).

timm already registers ``resnet50``, ``regnety_016``, ``hrnet_w18``, ``hrnet_w32``, ``repvgg_a2`` and
``repvgg_b1``; fer-ray uses those entrypoints as they are (re-registering them would overwrite timm's) and only
records their input sizes in :mod:`fer_ray.models.registry`. This module registers the new names.
"""

from __future__ import annotations

import dataclasses

import torch.nn as nn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models import swin_transformer as _swin
from timm.models._manipulate import reparameterize_model
from timm.models.byobnet import ByoBlockCfg, ByobNet, ByoModelCfg
from timm.models.byobnet import checkpoint_filter_fn as _byob_filter
from timm.models.hrnet import HighResolutionNet
from timm.models.regnet import RegNet, RegNetCfg
from timm.models.resnet import BasicBlock, ResNet
from timm.models.swin_transformer import SwinTransformer
from timm.models.swin_transformer import checkpoint_filter_fn as _swin_filter

__all__ = ["reparameterize", "SMOKE_MODEL_CFGS"]  # model entrypoints are appended by @register_model

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _cfg(side: int, classifier: str, first_conv: str, **kwargs) -> dict:
    return {
        "url": "", "num_classes": 8, "input_size": (3, side, side), "pool_size": None, "crop_pct": 1.0,
        "interpolation": "bicubic", "mean": _IMAGENET_MEAN, "std": _IMAGENET_STD,
        "first_conv": first_conv, "classifier": classifier, **kwargs,
    }


default_cfgs = generate_default_cfgs({
    "swin_s": _cfg(224, "head.fc", "patch_embed.proj"),
    "swin_tiny_smoke": _cfg(112, "head.fc", "patch_embed.proj"),
    "hrnet_smoke": _cfg(128, "classifier", "conv1"),
    "repvgg_smoke": _cfg(112, "head.fc", ("stem.conv_kxk.conv", "stem.conv_1x1.conv")),
    "resnet_smoke": _cfg(112, "fc", "conv1"),
    "regnet_smoke": _cfg(112, "head.fc", "stem.conv"),
    "baseline_resnet50": _cfg(112, "fc", "conv1"),
})

SMOKE_MODEL_CFGS = {
    # Two Swin stages of one block each: 112 / patch 4 = 28 tokens a side, window 7 divides 28 and 14.
    "swin_tiny_smoke": dict(img_size=112, patch_size=4, window_size=7, embed_dim=24, depths=(1, 1),
                            num_heads=(1, 2), drop_path_rate=0.0),
    # Four-branch HRNet with 8-64 channels; the classification head (incre + 2048 final layer) is timm's.
    "hrnet_smoke": dict(
        stem_width=16,
        stage1=dict(num_modules=1, num_branches=1, block_type="BOTTLENECK", num_blocks=(1,),
                    num_channels=(8,), fuse_method="SUM"),
        stage2=dict(num_modules=1, num_branches=2, block_type="BASIC", num_blocks=(1, 1),
                    num_channels=(8, 16), fuse_method="SUM"),
        stage3=dict(num_modules=1, num_branches=3, block_type="BASIC", num_blocks=(1, 1, 1),
                    num_channels=(8, 16, 32), fuse_method="SUM"),
        stage4=dict(num_modules=1, num_branches=4, block_type="BASIC", num_blocks=(1, 1, 1, 1),
                    num_channels=(8, 16, 32, 64), fuse_method="SUM"),
    ),
    "repvgg_smoke": ByoModelCfg(
        blocks=tuple(ByoBlockCfg(type="rep", d=1, c=c, s=2) for c in (16, 32, 64, 128)),
        stem_type="rep",
        stem_chs=16,
    ),
    "resnet_smoke": dict(block=BasicBlock, layers=(1, 1, 1, 1), channels=(16, 32, 64, 128), stem_width=16),
    "regnet_smoke": RegNetCfg(w0=8, wa=16.0, wm=2.5, group_size=8, depth=6, se_ratio=0.25, stem_width=16),
}


def _no_download(variant: str, pretrained: bool) -> None:
    if pretrained:
        raise ValueError(f"{variant}: fer-ray never downloads weights; create with pretrained=False and use "
                         "fer_ray.models.load_pretrained(model, uri)")


def reparameterize(model: nn.Module) -> nn.Module:
    """Deploy-time fusion (RepVGG: 3x3 + 1x1 + identity branches -> one 3x3 conv), in place; returns the model.

    Works on any model with ``reparameterize``/``fuse`` blocks (timm's ``reparameterize_model``); a model with
    none is returned unchanged. Call after loading the trained weights and before inference.
    """
    was_training = model.training
    model = reparameterize_model(model, inplace=True)
    return model.train(was_training)


def _create_swin(variant: str, pretrained: bool = False, **kwargs) -> SwinTransformer:
    _no_download(variant, pretrained)
    kwargs = {**SMOKE_MODEL_CFGS[variant], **kwargs}
    return build_model_with_cfg(SwinTransformer, variant, False, pretrained_filter_fn=_swin_filter,
                                feature_cfg=dict(flatten_sequential=True, out_indices=(0, 1)), **kwargs)


def _create_hrnet(variant: str, pretrained: bool = False, **kwargs) -> HighResolutionNet:
    _no_download(variant, pretrained)
    return build_model_with_cfg(HighResolutionNet, variant, False, cfg=SMOKE_MODEL_CFGS[variant],
                                feature_cfg=dict(flatten_sequential=True), **kwargs)


def _create_byobnet(variant: str, pretrained: bool = False, **kwargs) -> ByobNet:
    _no_download(variant, pretrained)
    kwargs.setdefault("model_cfg", SMOKE_MODEL_CFGS[variant])
    return build_model_with_cfg(ByobNet, variant, False,
                                pretrained_filter_fn=_byob_filter,
                                feature_cfg=dict(flatten_sequential=True), **kwargs)


def _create_resnet(variant: str, pretrained: bool = False, **kwargs) -> ResNet:
    _no_download(variant, pretrained)
    kwargs = {**SMOKE_MODEL_CFGS[variant], **kwargs}
    return build_model_with_cfg(ResNet, variant, False, **kwargs)


def _create_regnet(variant: str, pretrained: bool = False, **kwargs) -> RegNet:
    _no_download(variant, pretrained)
    return build_model_with_cfg(RegNet, variant, False, model_cfg=SMOKE_MODEL_CFGS[variant],
                                feature_cfg=dict(flatten_sequential=True), **kwargs)


@register_model
def swin_s(pretrained=False, **kwargs) -> SwinTransformer:
    """Swin-S (timm ``swin_small_patch4_window7_224``), input 224: the CFC-SP coarse-ensemble member."""
    _no_download("swin_s", pretrained)
    kwargs.pop("pretrained_cfg", None)
    return _swin.swin_small_patch4_window7_224(pretrained=False, **kwargs)


@register_model
def swin_tiny_smoke(pretrained=False, **kwargs) -> SwinTransformer:
    return _create_swin("swin_tiny_smoke", pretrained, **kwargs)


@register_model
def hrnet_smoke(pretrained=False, **kwargs) -> HighResolutionNet:
    return _create_hrnet("hrnet_smoke", pretrained, **kwargs)


@register_model
def repvgg_smoke(pretrained=False, channels=None, stem_width=None, **kwargs) -> ByobNet:
    """Four one-block RepVGG stages; `channels` (4 widths, default 16-128) and `stem_width` widen it."""
    if channels is not None or stem_width is not None:
        base = SMOKE_MODEL_CFGS["repvgg_smoke"]
        widths = tuple(channels) if channels is not None else tuple(b.c for b in base.blocks)
        if len(widths) != len(base.blocks):
            raise ValueError(f"repvgg_smoke: channels needs {len(base.blocks)} widths, got {list(widths)}")
        kwargs["model_cfg"] = dataclasses.replace(
            base, blocks=tuple(dataclasses.replace(b, c=int(c)) for b, c in zip(base.blocks, widths)),
            stem_chs=int(stem_width or base.stem_chs))
    return _create_byobnet("repvgg_smoke", pretrained, **kwargs)


@register_model
def resnet_smoke(pretrained=False, **kwargs) -> ResNet:
    return _create_resnet("resnet_smoke", pretrained, **kwargs)


@register_model
def regnet_smoke(pretrained=False, **kwargs) -> RegNet:
    return _create_regnet("regnet_smoke", pretrained, **kwargs)


@register_model
def baseline_resnet50(pretrained=False, **kwargs) -> ResNet:
    """The plain single-frame 8-class baseline: timm ``resnet50`` (input 112)."""
    _no_download("baseline_resnet50", pretrained)
    from timm.models.resnet import Bottleneck

    return build_model_with_cfg(ResNet, "baseline_resnet50", False, block=Bottleneck, layers=(3, 4, 6, 3),
                                **kwargs)
