"""Alignment: similarity transform, reference vs batched warp, and the template on real faces."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from fer_ray.faces import (
    ARCFACE_TEMPLATE_112,
    FaceDetector,
    align_batch,
    align_face,
    decode_face,
    encode_face,
    resize_crop,
    similarity_transform,
    template,
)
from tests.conftest import need_shared


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


# -- synthetic -------------------------------------------------------------------------------------
def test_similarity_transform_recovers_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 200, size=(5, 2))
    angle, scale, t = np.deg2rad(23.0), 0.61, np.array([-14.0, 37.5])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = src @ (scale * rot).T + t
    m = similarity_transform(src, dst)
    assert m.shape == (2, 3)
    np.testing.assert_allclose(m[:, :2], scale * rot, atol=1e-5)
    np.testing.assert_allclose(m[:, 2], t, atol=1e-3)
    np.testing.assert_allclose(_apply(m, src), dst, atol=1e-3)


def test_similarity_transform_never_reflects():
    src = ARCFACE_TEMPLATE_112.astype(np.float64)
    mirrored = src * np.array([-1.0, 1.0])
    m = similarity_transform(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0


def test_template_scales():
    np.testing.assert_allclose(template(112), ARCFACE_TEMPLATE_112)
    np.testing.assert_allclose((template(224) + 0.5) / 2 - 0.5, ARCFACE_TEMPLATE_112, atol=1e-5)


def test_align_face_puts_a_marked_point_on_the_template():
    # a white dot at a "left eye" placed by a known transform lands on the template's left eye
    frame = np.zeros((200, 300, 3), np.uint8)
    src = _apply(np.array([[1.3, 0.2, 40.0], [-0.2, 1.3, 10.0]]), ARCFACE_TEMPLATE_112)
    x, y = np.round(src[0]).astype(int)
    frame[y - 2:y + 3, x - 2:x + 3] = 255
    face = align_face(frame, src.astype(np.float32), size=112)
    ys, xs = np.nonzero(face[..., 0] > 128)
    assert abs(xs.mean() - ARCFACE_TEMPLATE_112[0, 0]) < 1.0
    assert abs(ys.mean() - ARCFACE_TEMPLATE_112[0, 1]) < 1.0


def test_resize_crop_grey48_to_rgb112():
    grey = (np.arange(48 * 48) % 256).astype(np.uint8).reshape(48, 48)
    out = resize_crop(grey, 112)
    assert out.shape == (112, 112, 3) and out.dtype == np.uint8
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    out1 = resize_crop(grey[..., None], 112)
    assert np.array_equal(out, out1)


def test_encode_decode_roundtrip():
    face = np.full((112, 112, 3), 128, np.uint8)
    face[30:60, 30:60] = (200, 40, 40)
    data = encode_face(face)
    assert data[:2] == b"\xff\xd8"
    back = decode_face(data)
    assert back.shape == face.shape
    assert np.abs(back.astype(int) - face.astype(int)).mean() < 2.0


# -- real faces ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dev_faces():
    root = need_shared("images", "taiwanese_dev")
    with open(root / "labels.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["label"] == "Neutral"]
    detector = FaceDetector(detect_size=None)
    out = []
    for row in rows[:: max(1, len(rows) // 6)][:6]:
        image = np.asarray(Image.open(root / row["path"]).convert("RGB"))
        faces = detector.detect(image[None])[0]
        assert len(faces) == 1, row["path"]
        out.append((row["path"], image, faces[0]))
    return detector, out


@pytest.mark.shared_data
def test_real_landmarks_fit_the_template(dev_faces):
    _, faces = dev_faces
    errors = []
    for _, _, face in faces:
        m = similarity_transform(face.landmarks, template(112))
        errors.append(np.linalg.norm(_apply(m, face.landmarks) - template(112), axis=1).mean())
    # neutral faces: residual of the 5-point least-squares fit at 112 (a face is not exactly the template)
    assert np.mean(errors) < 3.5, errors
    assert max(errors) < 5.0, errors


@pytest.mark.shared_data
def test_redetection_on_aligned_face_lands_near_template(dev_faces):
    detector, faces = dev_faces
    tight, context = [], []
    for path, image, face in faces:
        # the 112 crop itself, upscaled x2 for MTCNN
        aligned = align_face(image, face.landmarks, 112)
        up = np.asarray(Image.fromarray(aligned).resize((224, 224), Image.Resampling.BICUBIC))
        again = detector.detect(up[None])[0]
        assert again, f"no face re-detected on the aligned crop of {path}"
        lm112 = (again[0].landmarks + 0.5) / 2 - 0.5
        tight.append(np.linalg.norm(lm112 - template(112), axis=1).mean())
        # the same alignment (template at 112 scale) on a 224 canvas with context around the face:
        # landmarks spread x2 about their centre map the real face to half the 224 template
        centre = face.landmarks.mean(0)
        virtual = centre + 2.0 * (face.landmarks - centre)
        wide = align_face(image, virtual, 224)
        up = np.asarray(Image.fromarray(wide).resize((448, 448), Image.Resampling.BICUBIC))
        again = detector.detect(up[None])[0]
        assert again, f"no face re-detected on the aligned wide crop of {path}"
        m = similarity_transform(virtual, template(224))
        expected = _apply(m, face.landmarks)
        found = (again[0].landmarks + 0.5) / 2 - 0.5
        context.append(np.linalg.norm(found - expected, axis=1).mean())
    # with context MTCNN finds the landmarks where the warp put them (measured mean ~1.8 px at 112 scale)
    assert np.mean(context) < 3.0, context
    # the tight ArcFace crop cuts forehead and chin, which biases MTCNN's points down by 2-4 px
    # (plus the residual of the fit): measured mean ~5.5 px
    assert np.mean(tight) < 7.0, tight


@pytest.mark.shared_data
def test_align_batch_matches_reference(dev_faces):
    _, faces = dev_faces
    frames = torch.from_numpy(np.stack([img for _, img, _ in faces]))
    lms = torch.from_numpy(np.stack([f.landmarks for _, _, f in faces]))
    for size in (112, 224):
        batch = align_batch(frames, lms, size).numpy()
        assert batch.shape == (len(faces), size, size, 3) and batch.dtype == np.uint8
        ref = np.stack([align_face(img, f.landmarks, size) for _, img, f in faces])
        diff = np.abs(batch.astype(int) - ref.astype(int))
        # bound: PIL's float bilinear vs grid_sample, both truncating: at most 1 grey level off
        # at rare pixels (measured max 1, mean ~0.003)
        assert diff.max() <= 2, diff.max()
        assert diff.mean() < 0.05, diff.mean()
    floats = align_batch(frames.float(), lms, 112).numpy()
    assert np.abs(floats.astype(int) - align_batch(frames, lms, 112).numpy().astype(int)).max() == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_align_batch_cuda_matches_cpu(dev_faces):
    _, faces = dev_faces
    frames = torch.from_numpy(np.stack([img for _, img, _ in faces]))
    lms = torch.from_numpy(np.stack([f.landmarks for _, _, f in faces]))
    cpu = align_batch(frames, lms, 112)
    gpu = align_batch(frames.cuda(), lms.cuda(), 112)
    assert gpu.device.type == "cuda"
    assert (gpu.cpu().int() - cpu.int()).abs().max() <= 1
