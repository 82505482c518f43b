"""fer_ray.train.augment: the training augmentations drawn per sample on whole uint8 batches (frames and clips),
and the eval transform they end in."""

from __future__ import annotations

import pytest
import torch

from fer_ray.train import augment
from fer_ray.train.config import AugmentConfig

OFF = dict(rotation=0.0, crop_scale=[1.0, 1.0], flip=0.0, grayscale=0.0, color_jitter=0.0, blur=0.0, erasing=0.0)


def _faces(n: int = 6, side: int = 48) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, side, side), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def _augment(faces: torch.Tensor, size: int = 48, **changes) -> torch.Tensor:
    torch.manual_seed(1)
    return augment.train_transform(size, AugmentConfig(**{**OFF, **changes}))(faces)


def test_no_augmentation_is_exactly_the_eval_transform():
    faces = _faces()
    assert torch.allclose(_augment(faces), augment.eval_transform(48)(faces), atol=1e-5)
    # another side: resized as the eval transform resizes (antialiased bilinear), then augmented
    assert torch.allclose(_augment(faces, size=32), augment.eval_transform(32)(faces), atol=1e-5)
    off = augment.train_transform(32, AugmentConfig(enabled=False))
    assert torch.allclose(off(faces), augment.eval_transform(32)(faces))


def test_flip_mirrors_every_face_and_each_face_draws_its_own():
    faces = _faces(64)
    mirrored = augment.eval_transform(48)(faces.flip(-1))
    assert torch.allclose(_augment(faces, flip=1.0), mirrored, atol=1e-5)
    some = [torch.allclose(a, b, atol=1e-5) for a, b in zip(_augment(faces, flip=0.5), mirrored)]
    assert 10 < sum(some) < 54


def test_a_clips_frames_share_one_draw_and_clips_differ():
    frame = _faces(1)[0]
    clips = frame.expand(8, 5, 3, 48, 48).contiguous()  # 8 clips of one frame repeated
    out = _augment(clips, rotation=6.0, crop_scale=[0.8, 1.0], flip=0.5, color_jitter=0.4, grayscale=0.2,
                   blur=0.5, erasing=0.25)
    assert out.shape == (8, 5, 3, 48, 48) and out.dtype == torch.float32
    assert all(torch.allclose(clip[0], clip[t]) for clip in out for t in range(5))
    assert not torch.allclose(out[0], out[1])


def test_crops_cover_the_recipes_area_range_as_random_resized_crop_draws_them():
    generator = torch.Generator().manual_seed(0)

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(20000, generator=generator)
    width, height = augment.crop_sides([0.8, 1.0], uniform)
    whole = (width == 1) & (height == 1)  # no fitting draw in 10 tries: the whole image
    assert (width <= 1).all() and (height <= 1).all()
    assert (width * height)[~whole].min() >= 0.8 - 1e-6 and 0.03 > whole.float().mean() > 0.0
    ratio = (width / height)[~whole]
    assert float(ratio.min()) >= 0.75 - 1e-4 and float(ratio.max()) <= 4 / 3 + 1e-4


def test_erasing_blanks_one_rectangle_of_the_right_size():
    faces = torch.full((200, 3, 48, 48), 200, dtype=torch.uint8)
    out = _augment(faces, erasing=1.0)
    zero = (out == 0).all(1)  # erased pixels are 0 after normalisation, on every channel
    share = zero.flatten(1).float().mean(1)
    assert (share > 0).float().mean() > 0.95 and float(share.max()) <= 0.34 and float(share[share > 0].min()) >= 0.015
    rows, cols = zero.any(2), zero.any(1)  # one solid rectangle: its rows x its columns
    assert ((rows.sum(1) * cols.sum(1)) == zero.flatten(1).sum(1)).all()


def test_grayscale_blur_and_jitter_keep_the_value_range():
    faces = _faces(32)
    out = _augment(faces, grayscale=1.0)
    raw = out * torch.tensor(augment.STD).view(1, 3, 1, 1) + torch.tensor(augment.MEAN).view(1, 3, 1, 1)
    assert torch.allclose(raw[:, 0], raw[:, 1], atol=1e-5) and torch.allclose(raw[:, 1], raw[:, 2], atol=1e-5)
    for changes in ({"blur": 1.0}, {"color_jitter": 0.4, "color_jitter_p": 1.0}):
        raw = _augment(faces, **changes) * torch.tensor(augment.STD).view(1, 3, 1, 1) \
            + torch.tensor(augment.MEAN).view(1, 3, 1, 1)
        assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5
    smooth = _augment(faces, blur=1.0)
    assert smooth.diff(dim=-1).abs().mean() < _augment(faces).diff(dim=-1).abs().mean()


def test_a_single_image_is_refused_with_the_shape_it_got():
    with pytest.raises(ValueError, match=r"got \(3, 48, 48\)"):
        augment.train_transform(48)(_faces(1)[0])
