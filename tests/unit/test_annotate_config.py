"""Annotation job config and its Ray-free bookkeeping: --since filtering, validation, pending videos."""

from __future__ import annotations

import datetime as dt
import os

import pytest

from fer_ray import config, shards, storage
from fer_ray.annotate import AnnotateConfig, pending_videos, work_items
from fer_ray.preprocess import PreprocessConfig


def _videos(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    old, new = folder / "old.mp4", folder / "new.mp4"
    for path in (old, new):
        path.write_bytes(b"\x00" * 16)  # listing never opens the files
    week_ago = (dt.datetime.now() - dt.timedelta(days=7)).timestamp()
    os.utime(old, (week_ago, week_ago))
    return folder


def _ids(items):
    return sorted(item["video_id"] for item in items)


def test_since_keeps_only_newer_videos(tmp_path):
    folder = _videos(tmp_path)
    out = str(tmp_path / "out")
    base = {"input": str(folder), "models": "m", "output": out}
    pre = PreprocessConfig(input=str(folder), output=out)
    assert _ids(work_items(AnnotateConfig(**base), pre)) == ["new", "old"]
    yesterday = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)).isoformat()
    assert _ids(work_items(AnnotateConfig(**base, since=yesterday), pre)) == ["new"]
    # "last": the previous run's start time from its summary.json; no summary yet means everything
    assert _ids(work_items(AnnotateConfig(**base, since="last"), pre)) == ["new", "old"]
    storage.write_json(storage.join(out, "summary.json"), {"started_at": yesterday})
    assert _ids(work_items(AnnotateConfig(**base, since="last"), pre)) == ["new"]


@pytest.mark.parametrize("bad, message", [
    ({"system": "openface"}, "valid: cfc_sp, baseline, mao, prl"),
    ({"window": -1}, "window must be >= 0"),
    ({"since": "yesterday"}, "ISO time"),
    ({"batch_size": 0}, ">= 1"),
])
def test_bad_config_fails_at_start(bad, message):
    with pytest.raises(config.ConfigError, match=message):
        config.load(AnnotateConfig, {"input": "i", "models": "m", "output": "o", **bad})


def test_pending_videos_skips_same_version_and_image_batches(tmp_path):
    faces, out = str(tmp_path / "faces"), str(tmp_path / "out")
    for video in ("a", "b", "c"):
        shards.mark_done(faces, "faces", video, [], kind="video", frames=3)
    shards.mark_done(faces, "faces", "set/batch-00000", [], kind="image", frames=3)
    shards.mark_done(out, "predictions", "a", [], model_version="v1")
    shards.mark_done(out, "predictions", "b", [], model_version="v0")
    todo, finished = pending_videos(faces, out, "v1")
    assert todo == ["b", "c"] and finished == ["a"]
