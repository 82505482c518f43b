"""fer_ray.annotate_video (in-process, no Ray) gives the rows the annotate job writes for the same video."""

from __future__ import annotations

import numpy as np
import pytest

import fer_ray
from fer_ray import schema
from tests.conftest import need_shared
from tests.helpers import write_untrained_models

OPTIONS = {"max_frames": 40, "track_every": 5, "window": 16}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    uri = str(tmp_path_factory.mktemp("api") / "models")
    write_untrained_models(uri)
    return uri


def test_annotate_video_equals_the_ray_job(models, tmp_path, ray_local):
    video = need_shared("videos", "unlabeled", "pyfeat_single_face.mp4")
    frames = fer_ray.annotate_video(str(video), models, system="cfc_sp", **OPTIONS)
    assert list(frames.columns) == schema.PREDICTIONS_SCHEMA.names
    assert frames[schema.FRAME_INDEX].tolist() == list(range(len(frames)))
    assert frames[schema.FACE_FOUND].sum() == 40  # max_frames decoded, each with the face; the rest filled

    job = fer_ray.annotate_videos(str(video), models, str(tmp_path / "job"), system="cfc_sp", **OPTIONS)
    assert len(job) == len(frames)
    for column in (schema.VIDEO_ID, schema.FRAME_INDEX, schema.LABEL, schema.FACE_FOUND, schema.FILLED,
                   schema.MODEL_VERSION):
        assert job[column].tolist() == frames[column].tolist(), column
    np.testing.assert_allclose(np.stack(job[schema.PROBS]), np.stack(frames[schema.PROBS]), atol=1e-5)


def test_annotate_video_keeps_its_output_when_asked(models, tmp_path):
    video = need_shared("videos", "unlabeled", "pyfeat_single_face.mp4")
    out = tmp_path / "kept"
    frames = fer_ray.annotate_video(str(video), models, system="baseline", output=str(out), max_frames=8)
    assert (out / "submission" / "pyfeat_single_face.txt").read_text().count("\n") == len(frames) + 1
    assert set(frames[schema.SYSTEM]) == {"baseline"}


def test_annotate_video_errors_say_why(models, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="broken.mp4"):
        fer_ray.annotate_video(str(broken), models)
    two = tmp_path / "two"
    two.mkdir()
    video = need_shared("videos", "unlabeled", "pyfeat_single_face.mp4")
    for name in ("a.mp4", "b.mp4"):
        (two / name).write_bytes(video.read_bytes())
    with pytest.raises(ValueError, match="annotate_videos"):
        fer_ray.annotate_video(str(two), models)
    with pytest.raises(Exception, match="system"):
        fer_ray.annotate_video(str(video), models, system="nope")
