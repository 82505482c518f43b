"""annotate's flip test: LogitsStage scores each face and its left-right mirror and keeps the log of the two
softmaxes' mean (frame models); clip/sequence models keep their plain features."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from fer_ray import schema
from fer_ray.infer import systems
from fer_ray.infer.cascade import softmax
from fer_ray.infer.logits import LogitsStage, column
from fer_ray.models import load_checkpoint, save_checkpoint
from tests.helpers import SMOKE_MODELS, write_untrained_models


@pytest.fixture(scope="module")
def entries(tmp_path_factory):
    uri = str(tmp_path_factory.mktemp("models"))
    chosen = [m for m in SMOKE_MODELS if m[0] in ("coarse_iresnet", "negative_repvgg", "baseline", "mao_gru")]
    found = systems.entries(write_untrained_models(uri, chosen), uri)
    for entry in found:
        _perturb(entry.checkpoint)
    return found


def _perturb(checkpoint: str) -> None:
    """Fresh models answer nearly the same for any face (zero-initialised last norms): noise on every weight
    makes their scores depend on the picture, as a trained model's do."""
    torch.manual_seed(1)
    model, meta = load_checkpoint(checkpoint)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.2)
    save_checkpoint(checkpoint, model, meta)


def _png(image: np.ndarray) -> bytes:
    """Lossless bytes, so a mirrored face is exactly the mirror image (JPEG would round it differently)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _faces(mirrored: bool) -> dict:
    """Four faces lit from the left (mirrored: from the right) and a frame without a face."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 112)[None, :, None]
    images = [np.clip(ramp * rng.uniform(0.5, 1.0) + rng.normal(0, 20, (112, 112, 3)), 0, 255).astype(np.uint8)
              for _ in range(4)]
    faces = np.empty(5, dtype=object)
    faces[:] = [_png(image[:, ::-1] if mirrored else image) for image in images] + [b""]
    return {schema.VIDEO_ID: np.asarray(["v"] * 5), schema.FRAME_INDEX: np.arange(5), schema.FACE: faces}


def test_a_face_and_its_mirror_get_the_same_scores(entries):
    frame = [e for e in entries if e.kind == "frame"]
    plain, flip = LogitsStage(frame), LogitsStage(frame, flip_test=True)
    for entry in frame:
        key = column(entry)
        # without the flip test these models tell the two apart, so the check below can fail
        assert np.abs(plain(_faces(False))[key][:4] - plain(_faces(True))[key][:4]).max() > 1e-3
        left, right = flip(_faces(False))[key], flip(_faces(True))[key]
        np.testing.assert_allclose(left[:4], right[:4], atol=1e-5)
        assert np.isnan(left[4]).all()  # no face: no scores


def test_flip_test_scores_are_the_mean_of_the_two_softmaxes(entries):
    frame = [e for e in entries if e.kind == "frame"]
    plain = LogitsStage(frame)
    flip = LogitsStage(frame, flip_test=True)(_faces(False))
    for entry in frame:
        key = column(entry)
        expected = (softmax(plain(_faces(False))[key][:4]) + softmax(plain(_faces(True))[key][:4])) / 2
        np.testing.assert_allclose(np.exp(flip[key][:4]), expected, atol=1e-5)
        assert flip[key].dtype == np.float32


def test_clip_models_keep_their_plain_features(entries):
    clip = [e for e in entries if e.kind != "frame"]
    assert clip
    plain, flip = LogitsStage(clip)(_faces(False)), LogitsStage(clip, flip_test=True)(_faces(False))
    for entry in clip:
        np.testing.assert_array_equal(plain[column(entry)], flip[column(entry)])


def test_model_version_tells_flip_test_runs_apart(entries):
    index = {"version": "v1"}
    plain = systems.model_version(index, entries, "cfc_sp", 256)
    assert systems.model_version(index, entries, "cfc_sp", 256, flip_test=False) == plain
    assert systems.model_version(index, entries, "cfc_sp", 256, flip_test=True) != plain
