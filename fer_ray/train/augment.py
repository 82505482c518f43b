"""CFC-SP training augmentations and the eval transform, torchvision.transforms.v2 on uint8 tensors.

Train (each step switchable through `AugmentConfig`): rotation +-6 deg, random resized crop, horizontal flip,
grayscale p0.2, colour jitter 0.4 p0.8, Gaussian blur p0.5, then float conversion + normalisation, then random
erasing. Eval: resize + normalise, the model's own transform (fer_ray.models.transforms), the one the annotate
job runs. Size, mean and std come from the model's data config (fer_ray.models.data_config; `arch` None: the
statistics every model uses). Inputs are uint8 (..., 3, H, W): one frame (3, H, W) or a clip (T, 3, H, W);
for a clip v2 draws the random parameters once, so every frame of a clip gets the same augmentation.
"""

from __future__ import annotations

from torchvision.transforms import InterpolationMode, v2

from fer_ray.models import data_config, transforms

__all__ = ["train_transform", "eval_transform", "MEAN", "STD"]

MEAN, STD = data_config().mean, data_config().std  # old names; the values live in the model registry


def eval_transform(size: int, arch: str | None = None) -> v2.Compose:
    return transforms.model_transform(arch, size)


def train_transform(size: int, aug=None, arch: str | None = None) -> v2.Compose:
    """The training transform for input side `size`; `aug` is an AugmentConfig (None: CFC-SP defaults)."""
    if aug is None:
        from fer_ray.train.config import AugmentConfig

        aug = AugmentConfig()
    config = data_config(arch, size)
    if not aug.enabled:
        return transforms.eval_transform(config)
    steps: list = []
    if aug.rotation > 0:
        steps.append(v2.RandomRotation(aug.rotation))
    if aug.crop_scale and tuple(aug.crop_scale) != (1.0, 1.0):
        steps.append(v2.RandomResizedCrop((size, size), scale=tuple(aug.crop_scale), antialias=True,
                                          interpolation=InterpolationMode(config.interpolation)))
    else:
        steps.append(transforms.resize(config))
    if aug.flip > 0:
        steps.append(v2.RandomHorizontalFlip(aug.flip))
    if aug.grayscale > 0:
        steps.append(v2.RandomGrayscale(aug.grayscale))
    if aug.color_jitter > 0 and aug.color_jitter_p > 0:
        j = aug.color_jitter
        steps.append(v2.RandomApply([v2.ColorJitter(brightness=j, contrast=j, saturation=j)], p=aug.color_jitter_p))
    if aug.blur > 0:
        kernel = max(3, (size // 20) | 1)
        steps.append(v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=aug.blur))
    steps.extend(transforms.to_float(config))
    if aug.erasing > 0:
        steps.append(v2.RandomErasing(p=aug.erasing))
    return v2.Compose(steps)
