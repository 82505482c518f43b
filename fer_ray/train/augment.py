"""CFC-SP training augmentations and the eval transform, on whole uint8 batches.

Train (`train_transform`, each step switchable through `AugmentConfig`): rotation +-6 deg, random resized
crop (area in `crop_scale`, aspect 3/4-4/3, as torchvision's RandomResizedCrop draws it), horizontal flip,
grayscale p0.2, colour jitter 0.4 p0.8 (brightness, contrast, saturation in that order), Gaussian blur p0.5,
then float conversion + normalisation, then random erasing. A call takes a batch of samples, uint8
(B, 3, H, W) frames or (B, T, 3, H, W) clips, and draws every step's parameters once per sample (a clip's
frames share them); rotation, crop and flip are one bilinear resampling of the batch (affine_grid +
grid_sample) after an antialiased resize to the output side, so a batch costs a few tensor ops instead of a
chain of transforms per image (one CPU thread, the demo recipe at 48 px: 0.16 ms a face against 1.1 ms).
Random draws use torch's global generator (fit seeds it at every epoch), on the batch's device.

Eval (`eval_transform`): resize + normalise, the model's own transform (fer_ray.models.transforms), the one
the annotate job runs; it takes one image, a batch or a clip. Size, mean and std come from the model's data
config (fer_ray.models.data_config; `arch` None: the statistics every model uses).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fer_ray.models import data_config, transforms
from fer_ray.models.fercnn import LUMA

__all__ = ["BatchAugment", "train_transform", "eval_transform", "MEAN", "STD"]

MEAN, STD = data_config().mean, data_config().std  # old names; the values live in the model registry
_ERASE_SCALE, _ERASE_RATIO = (0.02, 0.33), (0.3, 3.3)  # torchvision RandomErasing's defaults


def eval_transform(size: int, arch: str | None = None):
    return transforms.model_transform(arch, size)


def train_transform(size: int, aug=None, arch: str | None = None):
    """The training transform for input side `size` (a BatchAugment); `aug` is an AugmentConfig (None:
    CFC-SP defaults). With augmentation off: the eval transform."""
    if aug is None:
        from fer_ray.train.config import AugmentConfig

        aug = AugmentConfig()
    config = data_config(arch, size)
    return BatchAugment(aug, config) if aug.enabled else transforms.eval_transform(config)


class BatchAugment:
    """uint8 samples (B, 3, H, W) or (B, T, 3, H, W) -> augmented, normalised float at the config's side."""

    def __init__(self, aug, config):
        self.aug, self.config = aug, config
        self.resize = transforms.resize(config)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.ndim not in (4, 5):
            raise ValueError(f"BatchAugment takes a batch (B, 3, H, W) or clips (B, T, 3, H, W), got {tuple(batch.shape)}")
        b, frames = batch.shape[0], batch.shape[1] if batch.ndim == 5 else 1
        x = self.resize(batch.reshape(b * frames, *batch.shape[-3:])).float() / 255
        draw = _Draws(b, frames, x.device)
        x = self._geometry(x, draw)
        x = self._colour(x, draw)
        mean, std = (x.new_tensor(v).view(1, 3, 1, 1) for v in (self.config.mean, self.config.std))
        x = (x - mean) / std
        if self.aug.erasing > 0:
            x = x * _erase_mask(draw, x.shape[-2:], self.aug.erasing)
        return x.reshape(batch.shape[:-3] + x.shape[-3:])

    def _geometry(self, x: torch.Tensor, draw: _Draws) -> torch.Tensor:
        aug = self.aug
        angle = draw.uniform(-1, 1) * math.radians(aug.rotation)
        if aug.crop_scale and tuple(aug.crop_scale) != (1.0, 1.0):
            sx, sy = crop_sides(aug.crop_scale, draw.uniform)
        else:
            sx = sy = torch.ones_like(angle)
        cx, cy = draw.uniform(-1, 1) * (1 - sx), draw.uniform(-1, 1) * (1 - sy)
        flip = torch.where(draw.chance(aug.flip), -1.0, 1.0)
        if not (angle.any() or (sx < 1).any() or (flip < 0).any()):
            return x
        cos, sin = angle.cos(), angle.sin()
        # output -> source coordinates: flip, scale to the crop, move to its centre, rotate the whole image
        theta = torch.stack([torch.stack([cos * sx * flip, -sin * sy, cos * cx - sin * cy], 1),
                             torch.stack([sin * sx * flip, cos * sy, sin * cx + cos * cy], 1)], 1)
        grid = F.affine_grid(draw.per_frame(theta), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _colour(self, x: torch.Tensor, draw: _Draws) -> torch.Tensor:
        aug = self.aug
        if aug.grayscale > 0:
            x = _on_some(x, draw.per_frame(draw.chance(aug.grayscale)), lambda v: _luma(v).expand_as(v))
        if aug.color_jitter > 0 and aug.color_jitter_p > 0:
            j = aug.color_jitter
            factors = [draw.per_frame(draw.uniform(1 - j, 1 + j)).view(-1, 1, 1, 1) for _ in range(3)]
            on = draw.per_frame(draw.chance(aug.color_jitter_p))
            x = _on_some(x, on, lambda v: _jitter(v, *(f[on] for f in factors)))
        if aug.blur > 0:
            kernel = max(3, (self.config.input_size // 20) | 1)
            sigma = draw.per_frame(draw.uniform(0.1, 2.0))
            on = draw.per_frame(draw.chance(aug.blur))
            x = _on_some(x, on, lambda v: _blur(v, sigma[on], kernel))
        return x


class _Draws:
    """Random numbers, one per sample, on the batch's device; per_frame repeats them for each clip frame."""

    def __init__(self, samples: int, frames: int, device: torch.device):
        self.samples, self.frames, self.device = samples, frames, device

    def uniform(self, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(self.samples).to(self.device)

    def chance(self, p: float) -> torch.Tensor:
        return self.uniform(0, 1) < p

    def per_frame(self, values: torch.Tensor) -> torch.Tensor:
        return values.repeat_interleave(self.frames, dim=0)


def crop_sides(scale, uniform, tries: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop width and height as fractions of the side, drawn as RandomResizedCrop draws them: area in
    `scale`, aspect log-uniform in [3/4, 4/3], the first of `tries` draws that fits, else the whole image."""
    sx = sy = None
    for _ in range(tries):
        area, ratio = uniform(*scale), uniform(-math.log(4 / 3), math.log(4 / 3)).exp()
        w, h = (area * ratio).sqrt(), (area / ratio).sqrt()
        if sx is None:  # 2: no draw has fitted yet
            sx, sy = torch.full_like(w, 2.0), torch.full_like(h, 2.0)
        todo = (sx > 1) & (w <= 1) & (h <= 1)
        sx, sy = torch.where(todo, w, sx), torch.where(todo, h, sy)
    whole = sx > 1
    return sx.masked_fill(whole, 1.0), sy.masked_fill(whole, 1.0)


def _luma(x: torch.Tensor) -> torch.Tensor:
    return (x * x.new_tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)


def _on_some(x: torch.Tensor, chosen: torch.Tensor, step) -> torch.Tensor:
    """`step` applied to the chosen images only (the others are neither computed nor changed)."""
    if not chosen.any():
        return x
    if chosen.all():
        return step(x)
    x = x.clone()
    x[chosen] = step(x[chosen])
    return x


def _jitter(x: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor,
            saturation: torch.Tensor) -> torch.Tensor:
    x = (x * brightness).clamp_(0, 1)
    mean_grey = _luma(x).mean((2, 3), keepdim=True)
    x = ((x - mean_grey) * contrast + mean_grey).clamp_(0, 1)
    grey = _luma(x)
    return ((x - grey) * saturation + grey).clamp_(0, 1)


def _blur(x: torch.Tensor, sigma: torch.Tensor, kernel: int) -> torch.Tensor:
    """Gaussian blur, one sigma per image (separable, reflect-padded)."""
    offsets = torch.arange(kernel, device=x.device, dtype=x.dtype) - kernel // 2
    weights = torch.exp(-0.5 * (offsets[None] / sigma[:, None]) ** 2)
    weights = weights / weights.sum(1, keepdim=True)  # (N, k)
    n, c, h, w = x.shape
    flat = x.reshape(1, n * c, h, w)
    per_channel = weights.repeat_interleave(c, dim=0)
    pad = kernel // 2
    flat = F.conv2d(F.pad(flat, (pad, pad, 0, 0), mode="reflect"), per_channel.view(n * c, 1, 1, kernel), groups=n * c)
    flat = F.conv2d(F.pad(flat, (0, 0, pad, pad), mode="reflect"), per_channel.view(n * c, 1, kernel, 1), groups=n * c)
    return flat.reshape(n, c, h, w)


def _erase_mask(draw: _Draws, size, p: float, tries: int = 10) -> torch.Tensor:
    """1 outside, 0 inside one random rectangle per sample (with probability p), as RandomErasing draws it:
    area in 2-33 % of the image, aspect log-uniform in [0.3, 3.3], the first of `tries` draws that fits."""
    height, width = size
    area = height * width
    h = w = torch.zeros(draw.samples, device=draw.device)
    for _ in range(tries):
        target = draw.uniform(*_ERASE_SCALE) * area
        ratio = draw.uniform(math.log(_ERASE_RATIO[0]), math.log(_ERASE_RATIO[1])).exp()
        th, tw = (target * ratio).sqrt().round(), (target / ratio).sqrt().round()
        todo = (h == 0) & (th < height) & (tw < width) & (th > 0) & (tw > 0)
        h, w = torch.where(todo, th, h), torch.where(todo, tw, w)
    on = draw.chance(p) & (h > 0)
    top = (draw.uniform(0, 1) * (height - h + 1)).floor()
    left = (draw.uniform(0, 1) * (width - w + 1)).floor()
    rows = torch.arange(height, device=draw.device)[None, :, None]
    cols = torch.arange(width, device=draw.device)[None, None, :]
    inside = ((rows >= top[:, None, None]) & (rows < (top + h)[:, None, None]) &
              (cols >= left[:, None, None]) & (cols < (left + w)[:, None, None]) & on[:, None, None])
    return draw.per_frame((~inside).to(torch.float32)).unsqueeze(1)
