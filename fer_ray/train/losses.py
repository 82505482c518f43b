"""Classification losses: cross-entropy with label smoothing and class weights, and focal loss.

Focal loss (Lin et al., ICCV 2017), as PRL uses it (alpha 0.9, gamma 2) for multi-class targets:
    FL = alpha * w_y * (1 - p_y)^gamma * (-log p_y)
averaged over the annotated targets (target -1 is ignored). `alpha` is one scalar for every class
(None = 1); per-class weighting goes through `class_weights` (w_y), as in weighted cross-entropy, and the
mean is then weighted too (sum FL / sum w_y), matching torch's weighted cross-entropy reduction.
Logits of shape (N, C) or (B, T, C) (sequence models) with targets (N,) or (B, T).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

IGNORE_INDEX = -1

__all__ = ["FocalLoss", "CrossEntropy", "build_loss", "balanced_weights", "class_weights", "IGNORE_INDEX"]


def _flatten(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1).long()


class CrossEntropy(nn.Module):
    def __init__(self, label_smoothing: float = 0.0, class_weights: Sequence[float] | None = None):
        super().__init__()
        self.label_smoothing = float(label_smoothing)
        weight = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits, target = _flatten(logits, target)
        if not bool((target != IGNORE_INDEX).any()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits, target, weight=self.weight, ignore_index=IGNORE_INDEX,
                               label_smoothing=self.label_smoothing)


class FocalLoss(nn.Module):
    def __init__(self, alpha: float | None = None, gamma: float = 2.0, class_weights: Sequence[float] | None = None,
                 label_smoothing: float = 0.0):
        super().__init__()
        self.alpha = 1.0 if alpha is None else float(alpha)
        self.gamma = float(gamma)
        self.label_smoothing = float(label_smoothing)
        weight = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits, target = _flatten(logits, target)
        keep = target != IGNORE_INDEX
        if not bool(keep.any()):
            return logits.sum() * 0.0
        logits, target = logits[keep], target[keep]
        log_p = F.log_softmax(logits, dim=-1)
        log_pt = log_p.gather(1, target[:, None]).squeeze(1)
        pt = log_pt.exp()
        if self.label_smoothing > 0:  # smoothed CE term, focal modulation from the true-class probability
            ce = -(1 - self.label_smoothing) * log_pt - self.label_smoothing * log_p.mean(dim=-1)
        else:
            ce = -log_pt
        loss = self.alpha * (1.0 - pt).pow(self.gamma) * ce
        if self.weight is not None:
            w = self.weight.to(loss.device)[target]
            return (loss * w).sum() / w.sum().clamp_min(1e-12)
        return loss.mean()


def balanced_weights(counts: Sequence[float], factors: Sequence[float] | None = None) -> list[float]:
    """Per-class loss weights w_c = n / (K * n_c) that give every class the same share of the loss.

    counts: training samples per class; factors: the oversampler's repeat factors, applied first, so the
    weights correct what oversampling leaves (a class the sampler already repeats needs less weight).
    K counts only the classes with samples; a class without any gets weight 0 (it is never a target).
    Why: CFC-SP groups four classes into Negative; on a set where those four are common (posed photo
    sets: 61 % of the coarse labels) the coarse net learns that prior and routes most frames to Negative.
    """
    drawn = np.asarray(counts, dtype=np.float64)
    if factors is not None:
        drawn = drawn * np.asarray(factors, dtype=np.float64)
    present = drawn > 0
    if not present.any():
        raise ValueError("balanced class weights need at least one class with training samples")
    weights = np.zeros_like(drawn)
    weights[present] = drawn.sum() / (present.sum() * drawn[present])
    return weights.tolist()


def class_weights(loss_config, counts: Sequence[float] | None = None,
                  factors: Sequence[float] | None = None) -> list[float] | None:
    """A `LossConfig`'s per-class weights: its list, None, or for `balanced` the weights computed from the
    training split's per-class counts (and the oversampling factors, if any)."""
    weights = loss_config.class_weights
    if weights != "balanced":
        return weights
    if counts is None:
        raise ValueError("loss.class_weights 'balanced' needs the training class counts")
    return balanced_weights(counts, factors)


def build_loss(loss_config, counts: Sequence[float] | None = None, factors: Sequence[float] | None = None) -> nn.Module:
    """The loss module for a `LossConfig` (fer_ray.train.config), weighted as `class_weights` says."""
    weights = class_weights(loss_config, counts, factors)
    if loss_config.name == "focal":
        return FocalLoss(loss_config.alpha, loss_config.gamma, weights, loss_config.label_smoothing)
    if loss_config.name == "ce":
        return CrossEntropy(loss_config.label_smoothing, weights)
    raise ValueError(f"unknown loss {loss_config.name!r}; valid: ce, focal")
