"""The eval/inference transform of a model, built from its data config (fer_ray.models.registry.data_config).

Training's evaluation, training's augmentations (their final normalisation) and the annotate job's logits
stage all build on these, so a model sees the same numbers in every stage. Inputs are uint8 (..., 3, H, W):
one frame, a batch, or a clip (T, 3, H, W); torchvision.transforms.v2.
"""

from __future__ import annotations

import torch
from torchvision.transforms import InterpolationMode, v2

from fer_ray.models.registry import DataConfig, data_config

__all__ = ["resize", "to_float", "eval_transform", "model_transform"]


def resize(config: DataConfig) -> v2.Resize:
    side = config.input_size
    return v2.Resize((side, side), interpolation=InterpolationMode(config.interpolation), antialias=True)


def to_float(config: DataConfig) -> list:
    """uint8 -> float in [0, 1] -> normalised by the config's mean and std."""
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(config.mean, config.std)]


def eval_transform(config: DataConfig) -> v2.Compose:
    return v2.Compose([resize(config), *to_float(config)])


def model_transform(name: str | None, input_size: int | None = None) -> v2.Compose:
    """The eval transform of model `name` (an arch) run at `input_size` (default: its registry side)."""
    return eval_transform(data_config(name, input_size))
