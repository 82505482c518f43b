"""Mao et al.'s temporal models: a frame CNN followed by a 2-layer GRU or a transformer over 9-frame clips.

Paper: `Spatial and Temporal Networks for Facial Expression Recognition in the Wild Videos`
(Mao, Fan, Peng; ABAW2 2021), https://arxiv.org/abs/2107.05160.

- CNN-GRU (sec. 2.2): ResNet-50 frame features -> GRU of depth 2.
- CNN-Transformer (sec. 2.3): ResNet-50 frame features -> transformer encoder with the sinusoidal positional
  encoding of `Attention Is All You Need` (Vaswani et al., 2017).
- Both see 9 consecutive frames centred on the target frame; the centre output is the prediction (trained
  many-to-many, inferred many-to-one); the CNN is the fine-tuned frame model, kept frozen.

Input ``(B, T, 3, H, W)`` -> logits ``(B, num_classes)`` at the centre frame ``T // 2``. For inference over a
whole video compute :meth:`frame_features` once per frame and run the cheap :meth:`temporal_head` on
``(B, T, D)`` windows gathered with :func:`clip_indices`. :meth:`forward_all_frames` gives ``(B, T, C)`` for
many-to-many training.
"""

from __future__ import annotations

import math

import numpy as np
import timm
import torch
import torch.nn as nn
from timm.models import register_model

from fer_ray.models import backbones as _backbones  # noqa: F401  (registers the backbone names)
from fer_ray.models import iresnet as _iresnet  # noqa: F401

__all__ = [
    "SinusoidalPositionalEncoding", "TemporalModel", "CNNGRU", "CNNTransformer", "clip_indices", "CLIP_LENGTH",
]

CLIP_LENGTH = 9
_TIMM_KWARGS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


def _cfg(side: int = 112, **kwargs) -> dict:
    return {
        "url": "", "num_classes": 8, "input_size": (3, side, side), "pool_size": None, "crop_pct": 1.0,
        "interpolation": "bicubic", "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
        "first_conv": "backbone.conv1", "classifier": "head", **kwargs,
    }


default_cfgs = {name: _cfg() for name in (
    "mao_cnn_gru", "mao_cnn_transformer", "mao_cnn_gru_smoke", "mao_cnn_transformer_smoke")}


def clip_indices(n_frames: int, center_idx, t: int = CLIP_LENGTH) -> np.ndarray:
    """Frame indices of the ``t``-frame clip centred on ``center_idx``, edge frames repeated inside the video.

    ``center_idx`` may be an int (returns shape ``(t,)``) or an array of centres (returns ``(N, t)``).
    Example: ``clip_indices(5, 0, 5) -> [0, 0, 0, 1, 2]``.
    """
    if n_frames <= 0:
        raise ValueError(f"n_frames must be positive, got {n_frames}")
    if t <= 0:
        raise ValueError(f"t must be positive, got {t}")
    centers = np.asarray(center_idx, dtype=np.int64)
    if np.any((centers < 0) | (centers >= n_frames)):
        raise ValueError(f"center index outside 0..{n_frames - 1}: {center_idx}")
    offsets = np.arange(t, dtype=np.int64) - t // 2
    return np.clip(centers[..., None] + offsets, 0, n_frames - 1)


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the fixed sin/cos position code of Vaswani et al. to ``(B, T, D)`` inputs."""

    def __init__(self, dim: int, max_len: int = 512, dropout: float = 0.0):
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float32)[:, None]
        div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
        pe = torch.zeros(max_len, dim)
        pe[:, 0::2] = torch.sin(position * div)
        pe[:, 1::2] = torch.cos(position * div)[:, : dim // 2]
        self.register_buffer("pe", pe, persistent=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > self.pe.shape[0]:
            raise ValueError(f"sequence of {x.shape[1]} frames is longer than max_len {self.pe.shape[0]}")
        return self.dropout(x + self.pe[: x.shape[1]].to(x.dtype))


def _feature_dim(backbone: nn.Module) -> int:
    dim = getattr(backbone, "head_hidden_size", None) or getattr(backbone, "num_features", None)
    if not dim:
        raise ValueError(f"cannot tell the feature size of backbone {type(backbone).__name__}")
    return int(dim)


class TemporalModel(nn.Module):
    """Shared frame-backbone plumbing: a timm/fer-ray frame model with ``num_classes=0`` as feature extractor.

    Subclasses implement :meth:`encode` ``(B, T, D) -> (B, T, E)`` and set ``num_features`` (= E).

    Args:
        backbone: any fer-ray or timm frame model name.
        freeze_backbone: no gradients to the backbone and its BatchNorm kept in eval mode (Mao et al.).
        backbone_pretrained: weights for the backbone (a frame-model checkpoint or timm state dict, local or
            s3://), loaded with :func:`fer_ray.models.load_pretrained`.
        backbone_kwargs: extra ``create_model`` arguments of the backbone.
        per_frame: ``forward`` returns ``(B, T, C)`` instead of the centre frame's ``(B, C)``.
    """

    per_frame = False

    def __init__(
            self,
            backbone: str = "resnet50",
            freeze_backbone: bool = False,
            backbone_pretrained: str | None = None,
            backbone_kwargs: dict | None = None,
    ):
        super().__init__()
        self.backbone_name = backbone
        self.backbone = timm.create_model(backbone, pretrained=False, num_classes=0, **(backbone_kwargs or {}))
        if backbone_pretrained:
            from fer_ray.models.registry import load_pretrained

            load_pretrained(self.backbone, backbone_pretrained)
        self.backbone_dim = _feature_dim(self.backbone)
        self.freeze_backbone = bool(freeze_backbone)
        if self.freeze_backbone:
            for param in self.backbone.parameters():
                param.requires_grad = False
            self.backbone.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing in the frame backbone (where the backbone supports it)."""
        if hasattr(self.backbone, "set_grad_checkpointing"):
            self.backbone.set_grad_checkpointing(enable)

    # -- frames ------------------------------------------------------------------------------------------
    def frame_features(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` face crops -> ``(N, D)`` backbone features (computed once per frame at inference)."""
        if self.freeze_backbone:
            with torch.no_grad():
                return self.backbone(images)
        return self.backbone(images)

    def _clip_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError(f"{type(self).__name__} expects (B, T, 3, H, W) clips, got shape {tuple(x.shape)}")
        b, t = x.shape[:2]
        return self.frame_features(x.flatten(0, 1)).reshape(b, t, -1)

    # -- temporal part -----------------------------------------------------------------------------------
    def encode(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, T, 3, H, W)`` -> temporal features ``(B, T, E)``."""
        return self.encode(self._clip_features(x), mask)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """``(B, T, E)`` -> centre-frame logits ``(B, C)`` (per-frame ``(B, T, C)`` for ``per_frame`` models)."""
        if not self.per_frame:
            x = x[:, x.shape[1] // 2]
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def temporal_head(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Precomputed frame features ``(B, T, D)`` -> logits, without touching the backbone."""
        return self.forward_head(self.encode(features, mask))

    def forward_all_frames(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, 3, H, W)`` -> ``(B, T, C)``: every frame's output (many-to-many training)."""
        return self.head(self.head_drop(self.forward_features(x)))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_head(self.forward_features(x, mask))


class CNNGRU(TemporalModel):
    """Mao et al. CNN-GRU: frame features -> GRU (depth 2) -> linear at the centre frame."""

    def __init__(
            self,
            num_classes: int = 8,
            backbone: str = "resnet50",
            hidden_size: int = 512,
            num_layers: int = 2,
            bidirectional: bool = False,
            drop_rate: float = 0.0,
            gru_dropout: float = 0.0,
            freeze_backbone: bool = False,
            backbone_pretrained: str | None = None,
            backbone_kwargs: dict | None = None,
    ):
        super().__init__(backbone, freeze_backbone, backbone_pretrained, backbone_kwargs)
        self.num_classes = num_classes
        self.gru = nn.GRU(self.backbone_dim, hidden_size, num_layers=num_layers, batch_first=True,
                          bidirectional=bidirectional, dropout=gru_dropout if num_layers > 1 else 0.0)
        self.num_features = self.head_hidden_size = hidden_size * (2 if bidirectional else 1)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def encode(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        out, _ = self.gru(features)
        return out


class CNNTransformer(TemporalModel):
    """Mao et al. CNN-Transformer: frame features -> linear -> + sinusoidal positions -> encoder -> centre."""

    def __init__(
            self,
            num_classes: int = 8,
            backbone: str = "resnet50",
            embed_dim: int = 512,
            depth: int = 2,
            num_heads: int = 8,
            mlp_dim: int = 1024,
            attn_drop_rate: float = 0.1,
            drop_rate: float = 0.0,
            max_len: int = 512,
            freeze_backbone: bool = False,
            backbone_pretrained: str | None = None,
            backbone_kwargs: dict | None = None,
    ):
        super().__init__(backbone, freeze_backbone, backbone_pretrained, backbone_kwargs)
        self.num_classes = num_classes
        self.proj = nn.Linear(self.backbone_dim, embed_dim) if self.backbone_dim != embed_dim else nn.Identity()
        self.pos_embed = SinusoidalPositionalEncoding(embed_dim, max_len=max_len, dropout=attn_drop_rate)
        layer = nn.TransformerEncoderLayer(embed_dim, num_heads, dim_feedforward=mlp_dim, dropout=attn_drop_rate,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, norm=nn.LayerNorm(embed_dim), enable_nested_tensor=False)
        self.num_features = self.head_hidden_size = embed_dim
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def encode(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.pos_embed(self.proj(features))
        return self.encoder(x, src_key_padding_mask=None if mask is None else ~mask.bool())


def _create_temporal(model_cls: type[TemporalModel], variant: str, pretrained: bool = False, **kwargs):
    if pretrained:
        raise ValueError(f"{variant}: fer-ray never downloads weights; pass backbone_pretrained=<uri> or use "
                         "fer_ray.models.load_pretrained(model, uri)")
    for key in _TIMM_KWARGS:
        kwargs.pop(key, None)
    model = model_cls(**kwargs)
    model.pretrained_cfg = model.default_cfg = dict(default_cfgs[variant], architecture=variant)
    return model


@register_model
def mao_cnn_gru(pretrained=False, **kwargs) -> CNNGRU:
    return _create_temporal(CNNGRU, "mao_cnn_gru", pretrained, **{"backbone": "resnet50", **kwargs})


@register_model
def mao_cnn_transformer(pretrained=False, **kwargs) -> CNNTransformer:
    return _create_temporal(CNNTransformer, "mao_cnn_transformer", pretrained, **{"backbone": "resnet50", **kwargs})


@register_model
def mao_cnn_gru_smoke(pretrained=False, **kwargs) -> CNNGRU:
    kwargs = {"backbone": "resnet_smoke", "hidden_size": 32, **kwargs}
    return _create_temporal(CNNGRU, "mao_cnn_gru_smoke", pretrained, **kwargs)


@register_model
def mao_cnn_transformer_smoke(pretrained=False, **kwargs) -> CNNTransformer:
    kwargs = {"backbone": "resnet_smoke", "embed_dim": 32, "num_heads": 2, "mlp_dim": 64, **kwargs}
    return _create_temporal(CNNTransformer, "mao_cnn_transformer_smoke", pretrained, **kwargs)
