"""Training prior (recorded by train_all) and annotation's prior correction of frame-model logits."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fer_ray import schema
from fer_ray.faces import encode_face
from fer_ray.infer import systems
from fer_ray.infer.logits import LogitsStage, column
from fer_ray.train import sampler
from fer_ray.train.config import LossConfig, ModelSpec, OversampleConfig
from fer_ray.train.loop import training_prior
from tests.helpers import SMOKE_MODELS, write_untrained_models

COUNTS = [34, 95, 72, 0, 309]  # coarse labels of the accuracy benchmark's training photos (no Other)


def _spec(**kwargs) -> ModelSpec:
    spec = ModelSpec(name="m", arch="resnet_smoke", task="coarse", **kwargs)
    spec.validate()
    return spec


def test_training_prior_follows_sampling_and_weights():
    assert training_prior(_spec(), COUNTS) == pytest.approx(np.divide(COUNTS, sum(COUNTS)))
    drawn = np.asarray(COUNTS) * sampler.repeat_factors(COUNTS, 0.15)
    oversampled = training_prior(_spec(oversample=OversampleConfig(enabled=True)), COUNTS)
    assert oversampled == pytest.approx(drawn / drawn.sum())
    assert oversampled[0] > COUNTS[0] / sum(COUNTS)  # Neutral is repeated 1.5x
    balanced = training_prior(_spec(oversample=OversampleConfig(enabled=True),
                                    loss=LossConfig(class_weights="balanced")), COUNTS)
    assert balanced == pytest.approx([0.25, 0.25, 0.25, 0.0, 0.25])  # the weights undo the imbalance


@pytest.fixture(scope="module")
def entries(tmp_path_factory):
    uri = str(tmp_path_factory.mktemp("models"))
    frame = [m for m in SMOKE_MODELS if m[0] in ("coarse_iresnet", "negative_repvgg", "baseline")]
    index = write_untrained_models(uri, frame)
    priors = {"coarse_iresnet": [0.1, 0.2, 0.1, 0.0, 0.6], "negative_repvgg": [0.3, 0.3, 0.2, 0.2],
              "baseline": [0.1, 0.15, 0.15, 0.1, 0.2, 0.15, 0.15, 0.0]}
    for name, prior in priors.items():
        index["models"][name]["train_prior"] = prior
    return systems.entries(index, uri)


def _batch(n: int = 5) -> dict:
    rng = np.random.default_rng(0)
    faces = np.empty(n, dtype=object)
    faces[:] = [encode_face(rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)) for _ in range(n)]
    faces[2] = b""  # a frame without a face
    return {schema.VIDEO_ID: np.asarray(["v"] * n), schema.FRAME_INDEX: np.arange(n), schema.FACE: faces}


def test_entries_read_the_prior_from_models_json(entries):
    by_name = {e.name: e for e in entries}
    assert by_name["negative_repvgg"].train_prior == (0.3, 0.3, 0.2, 0.2)


def test_corrected_logits_are_the_raw_ones_minus_the_log_prior(entries):
    batch = _batch()
    raw = LogitsStage(entries)(batch)
    corrected = LogitsStage(entries, prior_correction=True)(batch)
    for entry in entries:
        prior = np.asarray(entry.train_prior)
        shift = np.where(prior > 0, np.log(np.where(prior > 0, prior, 1.0)), 0.0)
        got, want = corrected[column(entry)], raw[column(entry)]
        assert np.isnan(got[2]).all() and np.isnan(want[2]).all()  # no face: no scores either way
        keep = ~np.isnan(want).any(axis=1)
        np.testing.assert_allclose(got[keep], want[keep] - shift, rtol=1e-5, atol=1e-5)
        # the rarest trained class gains the most against the commonest
        rare, common = np.argmin(np.where(prior > 0, prior, np.inf)), np.argmax(prior)
        gap_raw = want[keep, rare] - want[keep, common]
        assert np.all(got[keep, rare] - got[keep, common] > gap_raw)


def test_prior_correction_refuses_what_it_cannot_correct(entries, tmp_path):
    unrecorded = [dataclasses.replace(e, train_prior=None) for e in entries]
    with pytest.raises(ValueError, match="train_prior"):
        LogitsStage(unrecorded, prior_correction=True)
    LogitsStage(unrecorded)  # without the option an old models.json still works
    uri = str(tmp_path)
    clip = systems.entries(write_untrained_models(uri, [m for m in SMOKE_MODELS if m[0] == "mao_gru"]), uri)
    with pytest.raises(ValueError, match="clip/sequence"):
        systems.check_prior_correction([dataclasses.replace(clip[0], train_prior=(0.125,) * 8)])


def test_model_version_tells_corrected_runs_apart(entries):
    index = {"version": "v1"}
    plain = systems.model_version(index, entries, "cfc_sp", 256)
    assert systems.model_version(index, entries, "cfc_sp", 256, None, False) == plain
    assert systems.model_version(index, entries, "cfc_sp", 256, None, True) != plain


def test_correcting_probabilities_equals_correcting_logits():
    from fer_ray.infer import cascade

    logits = np.random.default_rng(1).normal(size=(6, 5))
    prior = [0.1, 0.2, 0.1, 0.0, 0.6]
    np.testing.assert_allclose(cascade.correct_prior(cascade.softmax(logits), prior),
                               cascade.softmax(logits - cascade.log_prior(prior)), rtol=1e-12)
