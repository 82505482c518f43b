"""fer_ray.annotate_video (in-process, no Ray) gives the rows the annotate job writes for the same video;
fer_ray.annotate_videos returns the rows its Ray job wrote."""

from __future__ import annotations

import numpy as np
import pytest

import fer_ray
from fer_ray import schema, shards
from tests.conftest import need_shared
from tests.helpers import write_untrained_models


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    uri = str(tmp_path_factory.mktemp("api") / "models")
    write_untrained_models(uri)
    return uri


def test_annotate_video_equals_the_ray_job(dev_reference):
    """In-process rows of one video equal the rows the session's reference annotate job wrote for it
    (tests/golden.py: same video, models and frames)."""
    video_id = "pyfeat_single_face"
    frames = fer_ray.annotate_video(f"{dev_reference}/videos/{video_id}.mp4", f"{dev_reference}/models",
                                    system="cfc_sp", stride=5, max_frames=24)
    assert list(frames.columns) == schema.PREDICTIONS_SCHEMA.names
    assert frames[schema.FRAME_INDEX].tolist() == list(range(len(frames)))
    decoded = min(24, len(range(0, len(frames), 5)))  # every 5th frame, at most 24 (the clip has 72 frames)
    assert frames[schema.FACE_FOUND].sum() == decoded  # each decoded frame shows the face; the rest are filled

    job = shards.read_table(f"{dev_reference}/ref/ann", schema.PREDICTIONS_TABLE, schema.PREDICTIONS_SCHEMA,
                            columns=None).to_pandas()
    job = job[job[schema.VIDEO_ID] == video_id].sort_values(schema.FRAME_INDEX).reset_index(drop=True)
    assert len(job) == len(frames)
    for column in (schema.VIDEO_ID, schema.FRAME_INDEX, schema.LABEL, schema.FACE_FOUND, schema.FILLED,
                   schema.MODEL_VERSION):
        assert job[column].tolist() == frames[column].tolist(), column
    np.testing.assert_allclose(np.stack(job[schema.PROBS]), np.stack(frames[schema.PROBS]), atol=1e-5)


def test_annotate_videos_returns_what_the_job_wrote(models, tmp_path, ray_local):
    video = need_shared("videos", "unlabeled", "pyfeat_single_face.mp4")
    rows = fer_ray.annotate_videos(str(video), models, str(tmp_path / "job"), system="baseline", max_frames=8)
    written = shards.read_table(str(tmp_path / "job"), schema.PREDICTIONS_TABLE, schema.PREDICTIONS_SCHEMA,
                                columns=None).to_pandas().sort_values(schema.FRAME_INDEX).reset_index(drop=True)
    assert list(rows.columns) == schema.PREDICTIONS_SCHEMA.names
    assert rows[schema.FRAME_INDEX].tolist() == written[schema.FRAME_INDEX].tolist() == list(range(len(rows)))
    assert rows[schema.FACE_FOUND].sum() == 8 and set(rows[schema.SYSTEM]) == {"baseline"}
    assert rows[schema.LABEL].tolist() == written[schema.LABEL].tolist()


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
