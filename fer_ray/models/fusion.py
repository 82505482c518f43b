"""PRL: RegNetY-1.6GF frame features fused with a transformer encoding of 64-frame sequences.

Paper: `Facial Expression Classification using Fusion of Deep Neural Network in Video`
(Phan et al., ABAW3 2022), https://arxiv.org/abs/2203.12899.

    frames (B, 64, 3, 112, 112) -> RegNetY-1.6GF pooled features (B, 64, 888)
        -> linear 888 -> 64 -> transformer encoder (depth 1, 2 heads, embed 64, feed-forward 512)
        -> concat(backbone features, encoder output) (B, 64, 952) -> dropout 0.5 -> linear 8 per frame

Videos are cut into non-overlapping 64-frame chunks, the last one padded by repeating the last frame
(:func:`chunk_indices`). The paper uses no positional encoding (``pos_embed="sinusoidal"`` adds one); its
Table 1 dropout value is printed truncated ("0."), 0.1 is used in the encoder. Trained with focal loss
(alpha 0.9, gamma 2) in the paper.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
from timm.models import register_model

from fer_ray.models.temporal import SinusoidalPositionalEncoding, TemporalModel, _cfg, _create_temporal
from fer_ray.models.temporal import default_cfgs as _temporal_cfgs

__all__ = ["PRLFusion", "chunk_indices", "SEQUENCE_LENGTH"]

SEQUENCE_LENGTH = 64

default_cfgs = {name: _cfg(first_conv="backbone.stem.conv")
                for name in ("prl_fusion", "prl_fusion_smoke")}
_temporal_cfgs.update(default_cfgs)  # _create_temporal looks the variant up there


def chunk_indices(n_frames: int, t: int = SEQUENCE_LENGTH) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping ``t``-frame chunks covering ``0..n_frames-1``.

    Returns ``(indices, mask)``, both ``(ceil(n_frames / t), t)``: frame indices with the last real frame
    repeated as padding, and ``True`` where the position holds a real (not repeated-padding) frame.
    ``chunk_indices(5, 4) -> [[0,1,2,3],[4,4,4,4]]``, mask ``[[T,T,T,T],[T,F,F,F]]``.
    """
    if t <= 0:
        raise ValueError(f"t must be positive, got {t}")
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")
    n_chunks = -(-n_frames // t)
    positions = np.arange(n_chunks * t, dtype=np.int64)
    mask = (positions < n_frames).reshape(n_chunks, t)
    indices = np.minimum(positions, max(n_frames - 1, 0)).reshape(n_chunks, t)
    return indices, mask


class PRLFusion(TemporalModel):
    """PRL fusion model: per-frame logits ``(B, T, C)`` from ``(B, T, 3, H, W)`` sequences.

    ``mask`` (``(B, T)``, True = real frame), when given to ``forward``/``temporal_head``, keeps padded
    frames out of attention; their outputs are still produced and should be dropped by the caller.
    """

    per_frame = True

    def __init__(
            self,
            num_classes: int = 8,
            backbone: str = "regnety_016",
            embed_dim: int = 64,
            depth: int = 1,
            num_heads: int = 2,
            mlp_dim: int = 512,
            attn_drop_rate: float = 0.1,
            drop_rate: float = 0.5,
            pos_embed: str = "none",
            max_len: int = 512,
            freeze_backbone: bool = False,
            backbone_pretrained: str | None = None,
            backbone_kwargs: dict | None = None,
    ):
        super().__init__(backbone, freeze_backbone, backbone_pretrained, backbone_kwargs)
        if pos_embed not in ("none", "sinusoidal"):
            raise ValueError(f"pos_embed must be 'none' or 'sinusoidal', got {pos_embed!r}")
        self.num_classes = num_classes
        self.proj = nn.Linear(self.backbone_dim, embed_dim)
        self.pos_embed = (SinusoidalPositionalEncoding(embed_dim, max_len=max_len)
                          if pos_embed == "sinusoidal" else nn.Identity())
        layer = nn.TransformerEncoderLayer(embed_dim, num_heads, dim_feedforward=mlp_dim, dropout=attn_drop_rate,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.num_features = self.head_hidden_size = self.backbone_dim + embed_dim
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def encode(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, T, D)`` backbone features -> fused ``(B, T, D + embed_dim)``."""
        encoded = self.encoder(self.pos_embed(self.proj(features)),
                               src_key_padding_mask=None if mask is None else ~mask.bool())
        return torch.cat([features, encoded], dim=-1)


@register_model
def prl_fusion(pretrained=False, **kwargs) -> PRLFusion:
    return _create_temporal(PRLFusion, "prl_fusion", pretrained, **{"backbone": "regnety_016", **kwargs})


@register_model
def prl_fusion_smoke(pretrained=False, **kwargs) -> PRLFusion:
    kwargs = {"backbone": "regnet_smoke", "embed_dim": 16, "mlp_dim": 32, **kwargs}
    return _create_temporal(PRLFusion, "prl_fusion_smoke", pretrained, **kwargs)
