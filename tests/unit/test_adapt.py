"""Per-video normalisation (fer_ray.infer.adapt, annotate --adapt-bn): BatchNorm layers normalise with the
statistics of one video's faces, the trained statistics come back afterwards, and the logits stage adapts per
face track of a whole video, leaving groups too small to measure as they were."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import torch
from PIL import Image

from fer_ray import schema
from fer_ray.infer import adapt, systems
from fer_ray.infer.logits import LogitsStage, column
from tests.conftest import need_shared
from tests.helpers import SMOKE_MODELS, write_untrained_models


def _patterns(n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """8x8 grey images with a brighter left half: by 1 in class 0, by 2 in class 1, with noise."""
    labels = rng.integers(0, 2, n)
    x = rng.normal(0, 0.3, (n, 1, 8, 8))
    x[:, :, :, :4] += 1.0 + labels[:, None, None, None]
    return torch.tensor(x, dtype=torch.float32), torch.tensor(labels)


def _trained_net() -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(4 * 64, 2))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    rng = np.random.default_rng(0)
    for _ in range(150):
        x, y = _patterns(64, rng)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval()


def test_a_video_under_other_light_is_read_right_with_its_own_statistics():
    """A brighter light (gain and offset on every pixel) moves every feature off the trained statistics: the
    plain model reads every face of such a video as the brighter class, the model normalised by the video's
    own faces tells them apart again, and the trained statistics are back afterwards."""
    net = _trained_net()
    x, y = _patterns(400, np.random.default_rng(1))
    with torch.no_grad():
        assert (net(x).argmax(1) == y).float().mean() > 0.95  # the trained model reads its own light
        shifted = 1.5 * x + 1.0
        before = [b.clone() for b in net[1].buffers()]
        plain = (net(shifted).argmax(1) == y).float().mean()
        chunks = [shifted[rows] for rows in adapt.chunk_rows(len(shifted), size=128)]
        with adapt.video_statistics([net], chunks, net):
            adapted = (net(shifted).argmax(1) == y).float().mean()
        after = list(net[1].buffers())
    assert plain < 0.75 and adapted > 0.95, (plain, adapted)
    assert all(torch.equal(a, b) for a, b in zip(before, after)) and not net.training


def test_statistics_are_the_inputs_own_and_restored_after_an_error():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.BatchNorm2d(3)).eval()
    x = torch.randn(64, 1, 6, 6) * 2 + 5
    with torch.no_grad():
        features = net[0](x)
        with adapt.video_statistics([net], [x[:32], x[32:]], net):  # equal chunks: their mean is the mean
            torch.testing.assert_close(net[1].running_mean, features.mean((0, 2, 3)))
            assert not net[1].training
        assert torch.equal(net[1].running_mean, torch.zeros(3)) and torch.equal(net[1].running_var, torch.ones(3))
        with pytest.raises(RuntimeError, match="mid-video"):
            with adapt.video_statistics([net], [x], net):
                raise RuntimeError("mid-video")
    assert torch.equal(net[1].running_mean, torch.zeros(3)) and net[1].momentum == 0.1


def test_strength_mixes_the_inputs_statistics_with_the_trained_ones():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.BatchNorm2d(3)).eval()
    with torch.no_grad():
        net[1].running_mean.fill_(1.0)
        net[1].running_var.fill_(4.0)
        x = torch.randn(64, 1, 6, 6) * 2 + 5
        features = net[0](x)
        mean, var = features.mean((0, 2, 3)), features.var((0, 2, 3))
        for strength in (0.0, 0.5, 1.0):
            with adapt.video_statistics([net], [x], net, strength):
                torch.testing.assert_close(net[1].running_mean, strength * mean + (1 - strength) * 1.0)
                torch.testing.assert_close(net[1].running_var, strength * var + (1 - strength) * 4.0)
        assert torch.equal(net[1].running_mean, torch.ones(3)) and torch.equal(net[1].running_var, torch.full((3,), 4.0))


def test_chunks_cover_every_row_once_in_a_seeded_order():
    for count in (1, 2, 255, 256, 257, 1000):
        chunks = adapt.chunk_rows(count, size=256)
        assert sorted(np.concatenate(chunks).tolist()) == list(range(count))
        assert max(map(len, chunks)) <= 256 and (count < 2 or min(map(len, chunks)) >= 2)
    assert all(np.array_equal(a, b) for a, b in zip(adapt.chunk_rows(500), adapt.chunk_rows(500)))
    assert adapt.chunk_rows(0) == []
    sampled = np.concatenate(adapt.chunk_rows(2000, size=256, sample=512))  # a sample: distinct rows, seeded
    assert sampled.size == 512 and np.unique(sampled).size == 512 and sampled.max() < 2000
    assert np.array_equal(sampled, np.concatenate(adapt.chunk_rows(2000, size=256, sample=512)))


# ---------------------------------------------------------------- the logits stage on real faces


@pytest.fixture(scope="module")
def entries(tmp_path_factory):
    uri = str(tmp_path_factory.mktemp("models"))
    chosen = [m for m in SMOKE_MODELS if m[0] in ("coarse_iresnet", "negative_repvgg")]
    return systems.entries(write_untrained_models(uri, chosen), uri)


def _jpeg(path) -> bytes:
    buf = io.BytesIO()
    Image.open(path).convert("RGB").resize((112, 112)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photos():
    """Encoded photos of two taiwanese_dev performers: 20 each, the first performer's then the second's."""
    root = need_shared("images/taiwanese_dev")
    rows = list(csv.DictReader(open(root / "labels.csv", newline="")))
    faces = []
    for subject in ("TW01", "TW07"):
        paths = sorted(r["path"] for r in rows if r["subject"] == subject)[:20]
        assert len(paths) == 20
        faces += [_jpeg(root / p) for p in paths]
    return faces


def _batch(faces: list[bytes], tracks=None) -> dict:
    column_ = np.empty(len(faces), dtype=object)
    column_[:] = faces
    batch = {schema.VIDEO_ID: np.asarray(["v"] * len(faces)), schema.FRAME_INDEX: np.arange(len(faces)),
             schema.FACE: column_}
    if tracks is not None:
        batch[schema.TRACK_ID] = np.asarray(tracks)
    return batch


def test_the_stage_adapts_each_track_and_leaves_small_groups_alone(entries, photos):
    plain, adapted = LogitsStage(entries), LogitsStage(entries, adapt_bn=True)
    keys = [column(e) for e in entries]
    few = photos[:adapt.MIN_FACES - 1]  # a group too small to measure: the trained statistics
    for key in keys:
        np.testing.assert_allclose(adapted(_batch(few))[key], plain(_batch(few))[key], atol=1e-5)

    first, second = photos[:20], photos[20:]
    alone = [adapted(_batch(first)), adapted(_batch(second))]
    for key in keys:  # 20 faces: adapted, so the scores move
        assert np.abs(alone[0][key] - plain(_batch(first))[key]).max() > 1e-3
    # one video holding both performers as two face tracks, interleaved, and a frame without a face: each
    # track gets the scores it gets alone (its own statistics), the faceless frame none
    order = np.r_[np.arange(0, 40, 2), np.arange(1, 40, 2)].argsort()  # rows alternate between the tracks
    faces = list(np.asarray(first + second, dtype=object)[order]) + [b""]
    tracks = list(np.r_[np.zeros(20, int), np.ones(20, int)][order]) + [0]
    both = adapted(_batch(faces, tracks))
    for key in keys:
        expected = np.concatenate([alone[0][key], alone[1][key]])[order]
        np.testing.assert_allclose(both[key][:40], expected, atol=1e-4)
        assert np.isnan(both[key][40]).all()
    assert both[schema.FACE_FOUND].tolist() == [True] * 40 + [False]
    # nothing carries over to the next video: the stage's models still give the plain scores
    adapted.adapt_bn = False
    for key in keys:
        np.testing.assert_allclose(adapted(_batch(first))[key], plain(_batch(first))[key], atol=1e-5)


def test_photos_are_grouped_by_person_and_videos_by_video_and_track():
    batch = {schema.VIDEO_ID: np.asarray(["tw/TW01/a", "tw/TW01/b", "tw/TW02/a", "ck/TW01/a", "v1", "v1", "tw/x"],
                                         dtype=object),
             schema.SUBJECT: np.asarray(["TW01", "TW01", "TW02", "TW01", "TW01", "TW01", None], dtype=object),
             schema.NUM_FRAMES: np.asarray([1, 1, 1, 1, 300, 300, 1]),
             schema.TRACK_ID: np.asarray([-1, -1, -1, -1, 0, 1, -1])}
    # one person's photos together, per set; a video (even with a subject) by itself, split by face track;
    # a photo without a subject alone
    assert adapt.groups(batch).tolist() == ["photos:tw/TW01", "photos:tw/TW01", "photos:tw/TW02", "photos:ck/TW01",
                                            "video:v1#0", "video:v1#1", "video:tw/x#-1"]
    assert adapt.with_groups(batch)[schema.NORM_GROUP].tolist() == [
        "photos:tw/TW01", "photos:tw/TW01", "photos:tw/TW02", "photos:ck/TW01", "video:v1", "video:v1", "video:tw/x"]
    # a frame count the table left empty is no photo's
    nulls = batch | {schema.NUM_FRAMES: np.asarray([1.0, np.nan, 1.0, 1.0, 300.0, 300.0, 1.0])}
    assert adapt.groups(nulls).tolist()[:2] == ["photos:tw/TW01", "video:tw/TW01/b#-1"]
    # a batch of one video's faces only (what fer_ray.api passes): one group
    assert set(adapt.groups({schema.VIDEO_ID: np.asarray(["v"] * 3)}).tolist()) == {"video:v#0"}


def test_the_stage_adapts_a_persons_photos_together(entries, photos):
    """Photos (one-frame items) of one person in one call are one normalisation group, as the frames of one
    video are; the same photos without their subject are each alone and keep the trained statistics."""
    plain, adapted = LogitsStage(entries), LogitsStage(entries, adapt_bn=True)
    first = photos[:20]
    as_video = adapted(_batch(first))
    column_ = np.empty(20, dtype=object)
    column_[:] = first
    as_photos = {schema.VIDEO_ID: np.asarray([f"tw/TW01/{i}" for i in range(20)], dtype=object),
                 schema.FACE: column_, schema.NUM_FRAMES: np.ones(20, int),
                 schema.SUBJECT: np.asarray(["TW01"] * 20, dtype=object)}
    person = adapted(as_photos)
    alone = adapted(as_photos | {schema.SUBJECT: np.asarray([None] * 20, dtype=object)})
    for key in (column(e) for e in entries):
        np.testing.assert_allclose(person[key], as_video[key], atol=1e-4)
        np.testing.assert_allclose(alone[key], plain(_batch(first))[key], atol=1e-5)
        assert np.abs(person[key] - alone[key]).max() > 1e-3
    assert schema.NORM_GROUP not in adapted(adapt.with_groups(as_photos))


def test_a_group_gets_the_same_scores_in_any_row_order(entries, photos, monkeypatch):
    """A shuffle hands the stage a group's rows in any order; the statistics' chunks are drawn by position, so
    the stage puts the rows in frame order first: shuffled rows get the same scores, row for row."""
    monkeypatch.setattr(adapt, "CHUNK", 8)  # several chunks of 40 faces: their makeup depends on the order
    stage = LogitsStage(entries, adapt_bn=True)
    ordered = stage(_batch(photos))
    shuffle = np.random.default_rng(0).permutation(len(photos))
    shuffled = stage({k: v[shuffle] for k, v in _batch(photos).items()})
    for key in (column(e) for e in entries):
        np.testing.assert_allclose(shuffled[key], ordered[key][shuffle], atol=1e-5)
