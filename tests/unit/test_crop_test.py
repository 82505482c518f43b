"""annotate's crop test: LogitsStage also scores five crops of each face (its corners and centre) and keeps the
log of the views' mean softmax (frame models); with the flip test every view is mirrored too."""

from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from fer_ray.infer import systems
from fer_ray.infer.logits import CROP_SIDE, LogitsStage, column, crops, decode_faces
from fer_ray.jobs import annotate
from tests.unit.test_flip_test import _faces, entries  # noqa: F401 - the fixture, shared


def test_crops_are_the_corners_and_centre_at_even_margins():
    image = torch.rand(1, 3, 48, 48)
    tl, tr, bl, br, centre = TF.five_crop(image, [44, 44])  # torchvision's own, at 44 of 48
    for mine, theirs in zip(crops(image), (tl, tr, bl, br, centre)):
        np.testing.assert_allclose(mine, TF.resize(theirs, [48, 48], antialias=False), atol=1e-5)
    for side in (48, 112, 128, 224):  # the centre crop sits in the middle: a mirrored face's is the mirror of it
        image = torch.rand(1, 3, side, side)
        np.testing.assert_allclose(crops(image.flip(-1))[4], crops(image)[4].flip(-1), atol=1e-5)
        assert abs(crops(image)[0].shape[-1] - side) == 0
    assert round(48 * CROP_SIDE) == 44


def test_crop_test_scores_are_the_mean_softmax_of_the_views(entries):  # noqa: F811
    frame = [e for e in entries if e.kind == "frame"]
    stage = LogitsStage(frame, crop_test=True)
    scored = stage(_faces(False))
    images, _ = decode_faces(_faces(False)["face"])
    inputs = stage._inputs(images)
    for entry in frame:
        x = inputs[entry.key]
        views = [x, *(TF.resize(v, list(x.shape[-2:]), antialias=False) for v in TF.five_crop(x, crop_size(x)))]
        with torch.inference_mode():
            expected = torch.stack([torch.softmax(stage.models[entry.key](v), 1) for v in views]).mean(0)
        np.testing.assert_allclose(np.exp(scored[column(entry)][:4]), expected.numpy(), atol=1e-5)
        assert np.isnan(scored[column(entry)][4]).all()


def crop_size(x: torch.Tensor) -> list[int]:
    return [x.shape[-1] - 2 * round(x.shape[-1] * (1 - CROP_SIDE) / 2)] * 2


def test_with_the_flip_test_a_face_and_its_mirror_get_the_same_scores(entries):  # noqa: F811
    frame = [e for e in entries if e.kind == "frame"]
    crop, both = LogitsStage(frame, crop_test=True), LogitsStage(frame, crop_test=True, flip_test=True)
    for entry in frame:
        key = column(entry)
        assert np.abs(crop(_faces(False))[key][:4] - crop(_faces(True))[key][:4]).max() > 1e-3
        # relative: these perturbed models' log-probabilities reach -500, where the views' float rounding (a
        # mirrored crop is resampled from mirrored pixels) shows in the last digits
        np.testing.assert_allclose(both(_faces(False))[key][:4], both(_faces(True))[key][:4], rtol=1e-4, atol=1e-5)


def test_clip_models_keep_their_plain_features(entries):  # noqa: F811
    clip = [e for e in entries if e.kind != "frame"]
    plain, crop = LogitsStage(clip)(_faces(False)), LogitsStage(clip, crop_test=True)(_faces(False))
    for entry in clip:
        np.testing.assert_array_equal(plain[column(entry)], crop[column(entry)])


def test_the_flag_reaches_the_logits_actors_and_the_model_version(entries):  # noqa: F811
    config = annotate.load_config({"input": "x", "models": "m", "output": "y"}, {"crop_test": True})
    assert annotate.logits_step(config, []).kwargs["crop_test"] is True
    assert annotate.load_config({"input": "x", "models": "m", "output": "y"}).crop_test is False
    index = {"version": "v1"}
    plain = systems.model_version(index, entries, "cfc_sp", 256)
    assert systems.model_version(index, entries, "cfc_sp", 256, crop_test=True) != plain
