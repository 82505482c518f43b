"""Annotation job config and its Ray-free bookkeeping: --since filtering, validation, pending videos."""

from __future__ import annotations

import datetime as dt
import os

import pytest

from fer_ray import config, shards, storage
from fer_ray.jobs.annotate import AnnotateConfig, pending_videos, work_items


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
    assert _ids(work_items(AnnotateConfig(**base))) == ["new", "old"]
    yesterday = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)).isoformat()
    assert _ids(work_items(AnnotateConfig(**base, since=yesterday))) == ["new"]
    # "last": the previous run's start time from its summary.json; no summary yet means everything
    assert _ids(work_items(AnnotateConfig(**base, since="last"))) == ["new", "old"]
    storage.write_json(storage.join(out, "summary.json"), {"started_at": yesterday})
    assert _ids(work_items(AnnotateConfig(**base, since="last"))) == ["new"]


@pytest.mark.parametrize("bad, message", [
    ({"system": "openface"}, "valid: cfc_sp, baseline, mao, prl"),
    ({"window": -1}, "window must be >= 0"),
    ({"since": "yesterday"}, "ISO time"),
    ({"batch_size": 0}, ">= 1"),
])
def test_bad_config_fails_at_start(bad, message):
    with pytest.raises(config.ConfigError, match=message):
        config.load(AnnotateConfig, {"input": "i", "models": "m", "output": "o", **bad})


def test_pending_videos_skips_same_version_and_training_crops(tmp_path):
    """Videos are pending until annotated with this version; a batch of photos until each of its photos is
    (#14: photos are annotated as one-frame videos); pre-cropped training faces never are."""
    faces, out = str(tmp_path / "faces"), str(tmp_path / "out")
    for video in ("a", "b", "c"):
        shards.mark_done(faces, "faces", video, [], kind="video", frames=3)
    shards.mark_done(faces, "faces", "set/batch-00000", [], kind="image", frames=2, members=["set/p1", "set/p2"])
    shards.mark_done(faces, "faces", "crops/batch-00000", [], kind="face_crop", frames=3)
    shards.mark_done(out, "predictions", "a", [], model_version="v1")
    shards.mark_done(out, "predictions", "b", [], model_version="v0")
    shards.mark_done(out, "predictions", "set/p1", [], model_version="v1")
    todo, finished = pending_videos(faces, out, "v1")
    assert todo == ["b", "c", "set/batch-00000"] and finished == ["a"]
    shards.mark_done(out, "predictions", "set/p2", [], model_version="v1")
    todo, finished = pending_videos(faces, out, "v1")
    assert todo == ["b", "c"] and finished == ["a", "set/p1", "set/p2"]


def test_face_settings_nest_under_preprocess(tmp_path):
    """The face stages' settings live once, in `preprocess` (a FacesConfig); the flat names users have
    (flags, notebooks, earlier YAML) map onto it, and a direct load of a flat key names its new place."""
    from fer_ray.jobs.annotate import load_config
    from tests.helpers import load_job

    base = {"input": "i", "models": "m", "output": "o"}
    flat = load_config(base | {"stride": 3, "max_frames": 9, "track_every": 5, "face_size": 96,
                               "decode_workers": 2, "detect_gpus": 0.5, "num_workers": 2})
    nested = load_config(base | {"num_workers": 2, "preprocess": {
        "stride": 3, "max_frames": 9, "track_every": 5, "face_size": 96, "decode_workers": 2,
        "worker_gpus": 0.5, "detector": {"device": "cuda"}}})
    assert flat == nested
    assert (flat.preprocess.num_workers, flat.preprocess.detector.device) == (2, "cuda")
    assert load_config(base).preprocess.num_workers == 1 == AnnotateConfig(**base).preprocess.num_workers
    assert load_config(base | {"preprocess": {"stride": 2}}).preprocess.num_workers == 1

    yaml_path = tmp_path / "annotate.yaml"
    yaml_path.write_text("input: i\nmodels: m\noutput: o\ntrack_every: 5\npreprocess:\n  stride: 2\n")
    args = vars(load_job("annotate").parse_args(["--stride", "4", "--detect-gpus", "0.5"]))
    args.pop("config"), args.pop("verbose")  # as jobs/annotate.py's main takes them out
    from_flags = load_config(str(yaml_path), args)
    assert (from_flags.preprocess.stride, from_flags.preprocess.track_every) == (4, 5)
    assert (from_flags.preprocess.worker_gpus, from_flags.preprocess.detector.device) == (0.5, "cuda")

    with pytest.raises(config.ConfigError, match="track_every is now preprocess.track_every"):
        config.load(AnnotateConfig, base | {"track_every": 5})
    with pytest.raises(ValueError, match="stride must be >= 1"):
        load_config(base | {"stride": 0})
