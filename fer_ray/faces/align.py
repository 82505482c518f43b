"""Face alignment: 5-point similarity transform to a template: ArcFace's (insightface, tight: the papers'
112-px crops) or "fer" (FER2013's own loose framing, for 48-px models trained on fer2013 / CK+ crops too).

Coordinate convention everywhere: a pixel's centre is at its integer index (as MTCNN landmarks and
cv2.warpAffine use it). ``align_face`` is the per-frame reference (PIL, bilinear); ``align_batch`` is the
batched torch version (``grid_sample``) that runs on the frames' device and matches it to within a
grey level or two (see tests/unit/test_align.py for the bound).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from fer_ray import codec
from fer_ray.codec import encode_face  # the one face codec; still importable from here

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "FER_TEMPLATE_48",
    "GEOMETRIES",
    "template",
    "similarity_transform",
    "align_face",
    "align_batch",
    "resize_crop",
    "encode_face",
    "decode_face",
]

# insightface's reference 5 points for a 112x112 crop: left eye, right eye, nose, left/right mouth corner.
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)


# Where MTCNN puts the 5 points on fer2013's 48x48 crops, on average: 265 faces found in 300 train crops
# (seed 0) upsampled 3x and edge-padded; ckplus48's mean lies within 1 px of it. Eyes 18 px apart at
# y = 18 (ArcFace's template, scaled to 48, has them 15 px apart at y = 22): a looser crop with forehead
# and chin, which photos and video frames aligned to it share with the pre-cropped sets.
FER_TEMPLATE_48 = np.array(
    [
        [15.0, 18.5],
        [32.9, 18.0],
        [24.1, 28.4],
        [16.6, 38.2],
        [31.6, 37.8],
    ],
    dtype=np.float32,
)
GEOMETRIES = {"arcface": (ARCFACE_TEMPLATE_112, 112), "fer": (FER_TEMPLATE_48, 48)}


def template(size: int, geometry: str = "arcface") -> np.ndarray:
    """The geometry's template scaled to a ``size`` x ``size`` crop (pixel-centre convention kept)."""
    if geometry not in GEOMETRIES:
        raise ValueError(f"unknown face geometry {geometry!r}; valid: {', '.join(GEOMETRIES)}")
    points, side = GEOMETRIES[geometry]
    scale = size / side
    return ((points + 0.5) * scale - 0.5).astype(np.float32)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 matrix M (rotation, uniform scale, translation; no reflection) minimising
    ``sum |M @ [src, 1] - dst|^2`` (Umeyama 1991)."""
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    n = src.shape[0]
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / n
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0
    rot = u @ np.diag(d) @ vt
    var_src = (src_c**2).sum() / n
    scale = (s * d).sum() / var_src if var_src > 0 else 1.0
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = dst_mean - scale * rot @ src_mean
    return m.astype(np.float32)


def _invert(m: np.ndarray) -> np.ndarray:
    full = np.vstack([np.asarray(m, dtype=np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def align_face(frame: np.ndarray, landmarks: np.ndarray, size: int = 112, geometry: str = "arcface") -> np.ndarray:
    """Reference per-frame warp: uint8 (size, size, 3) crop whose landmarks sit on ``template(size, geometry)``."""
    m = similarity_transform(landmarks, template(size, geometry))
    inv = _invert(m)  # output pixel -> input pixel, pixel-centre-at-integer convention
    # PIL samples output pixel centres at (x + 0.5) and reads input pixel centres at (i + 0.5).
    a = inv[:, :2]
    c = inv[:, 2] + 0.5 - a @ np.array([0.5, 0.5])
    data = (a[0, 0], a[0, 1], c[0], a[1, 0], a[1, 1], c[1])
    image = Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8))
    out = image.transform((size, size), Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR)
    return np.asarray(out.convert("RGB"))


def _batched_similarity(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Umeyama for a batch: src (N,5,2), dst (5,2) -> (N,2,3), float64 on src's device."""
    src = src.double()
    dst = dst.double().to(src.device).expand_as(src)
    src_mean, dst_mean = src.mean(1, keepdim=True), dst.mean(1, keepdim=True)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.transpose(1, 2) @ src_c / src.shape[1]
    u, s, vt = torch.linalg.svd(cov)
    sign = torch.sign(torch.linalg.det(u) * torch.linalg.det(vt))
    d = torch.stack([torch.ones_like(sign), torch.where(sign == 0, torch.ones_like(sign), sign)], dim=1)
    rot = u @ torch.diag_embed(d) @ vt
    var_src = (src_c**2).sum((1, 2)) / src.shape[1]
    scale = (s * d).sum(1) / var_src.clamp_min(1e-12)
    a = scale[:, None, None] * rot
    t = dst_mean.transpose(1, 2) - a @ src_mean.transpose(1, 2)
    return torch.cat([a, t], dim=2)


def align_batch(frames: torch.Tensor, landmarks: torch.Tensor, size: int = 112,
                geometry: str = "arcface") -> torch.Tensor:
    """Batched alignment on the frames' device: frames uint8 or float (N,H,W,3) in 0..255,
    landmarks (N,5,2) source pixels -> uint8 (N,size,size,3) on ``template(size, geometry)``. Outside the
    frame is black."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (N,H,W,3), got {tuple(frames.shape)}")
    device = frames.device
    n, h, w, _ = frames.shape
    if n == 0:
        return torch.zeros((0, size, size, 3), dtype=torch.uint8, device=device)
    landmarks = torch.as_tensor(landmarks, device=device).reshape(n, 5, 2)
    m = _batched_similarity(landmarks, torch.from_numpy(template(size, geometry)))  # (N,2,3) src->dst
    a, t = m[:, :, :2], m[:, :, 2:]
    a_inv = torch.linalg.inv(a)
    t_inv = -a_inv @ t
    # grid of output pixel centres (integer convention), mapped into input pixels, then normalised
    ys, xs = torch.meshgrid(
        torch.arange(size, device=device, dtype=torch.float64),
        torch.arange(size, device=device, dtype=torch.float64),
        indexing="ij",
    )
    out_pts = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=0)  # (2, S*S)
    src_pts = a_inv @ out_pts + t_inv  # (N, 2, S*S)
    norm = torch.tensor([w, h], device=device, dtype=torch.float64).view(1, 2, 1)
    grid = ((src_pts + 0.5) * 2.0 / norm - 1.0).transpose(1, 2).reshape(n, size, size, 2)
    images = frames.permute(0, 3, 1, 2)
    dtype = torch.float32 if not images.is_floating_point() else images.dtype
    out = F.grid_sample(images.to(dtype), grid.to(dtype), mode="bilinear", padding_mode="border",
                        align_corners=False)
    # like PIL: clamp-to-edge inside the frame's extent [-0.5, size - 0.5), black outside it
    inside = ((src_pts[:, 0] >= -0.5) & (src_pts[:, 0] < w - 0.5)
              & (src_pts[:, 1] >= -0.5) & (src_pts[:, 1] < h - 0.5)).reshape(n, 1, size, size)
    out = out * inside.to(out.dtype)
    return out.floor_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def resize_crop(image: np.ndarray, size: int = 112) -> np.ndarray:
    """The "already a face crop" path (48x48 grey CK+/FER2013): to RGB uint8, resized to size x size."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    pil = Image.fromarray(image.astype(np.uint8) if image.dtype != np.uint8 else image)
    pil = pil.convert("RGB")
    if pil.size != (size, size):
        pil = pil.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(pil)


def decode_face(data: bytes) -> np.ndarray:
    """RGB uint8 (H, W, 3) array from encoded face bytes: fer_ray.codec's decoder, channels last."""
    return np.ascontiguousarray(codec.decode_face(data).permute(1, 2, 0).numpy())
