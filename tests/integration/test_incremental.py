"""Incremental (scheduled) annotation runs: failed videos are retried with an attempt count and given up
after `max_attempts`; a video overwritten in place is redone; an unchanged one is skipped.

The annotate job runs through its library entry point (fer_ray.jobs.annotate.run) on local storage
and the local Ray cluster; the S3 fingerprint is checked on the moto server. Frame counts come from decord
reading the file, not from the job.
"""

from __future__ import annotations

import os
import shutil
import time

import boto3
import decord
import pytest

from fer_ray import schema, shards, storage
from fer_ray.infer.postprocess import PREDICTIONS
from fer_ray.inputs import item_fingerprint, work_item
from fer_ray.jobs import annotate
from tests.conftest import need_shared
from tests.helpers import write_untrained_models

pytestmark = pytest.mark.slow
TWO_DAYS_AGO = time.time() - 2 * 86400


def _place(source, target, mtime: float | None = None) -> None:
    """Overwrite `target` in place with `source`'s content (mtime: pretend it is that old)."""
    shutil.copyfile(source, target)
    if mtime is not None:
        os.utime(target, (mtime, mtime))


def _run(folder, models, output, **kw) -> dict:
    options = {"input": str(folder), "models": models, "output": output, "system": "baseline",
               "stride": 10, "max_frames": 3, "max_attempts": 2} | kw
    return annotate.run(annotate.load_config(options))


def _failures(output: str) -> dict:
    return {r[schema.VIDEO_ID]: r for r in shards.read_failures(output).to_pylist()}


def _frames(output: str, video_id: str) -> list[int]:
    table = storage.read_parquet_many(shards.complete_parts(output, PREDICTIONS, [video_id]))
    return sorted(table.column(schema.FRAME_INDEX).to_pylist())


def test_since_last_retries_failures_gives_up_and_redoes_changed_videos(tmp_path, ray_local):
    videos = need_shared("videos", "labeled")
    tw01, tw07 = videos / "tw_TW01.mp4", videos / "tw_TW07.mp4"
    count01, count07 = len(decord.VideoReader(str(tw01))), len(decord.VideoReader(str(tw07)))
    folder = tmp_path / "videos"
    folder.mkdir()
    _place(tw01, folder / "good.mp4", TWO_DAYS_AGO)
    (folder / "bad.mp4").write_bytes(b"")  # fails to decode on every run
    os.utime(folder / "bad.mp4", (TWO_DAYS_AGO, TWO_DAYS_AGO))
    models = str(tmp_path / "models")
    write_untrained_models(models, models=[("baseline", "resnet_smoke", "expr")])
    output = str(tmp_path / "out")

    first = _run(folder, models, output, since="last")  # no previous run: everything is new
    assert first["videos_annotated"] == 1 and _frames(output, "good") == list(range(count01))
    assert _failures(output)["bad"][schema.ATTEMPTS] == 1

    # bad.mp4 is older than the first run's start but failed: retried and counted; good.mp4 overwritten in
    # place (a fresh mtime): redone
    _place(tw07, folder / "good.mp4")
    second = _run(folder, models, output, since="last")
    assert second["videos_annotated"] == 1 and second["videos_given_up"] == 0
    assert _failures(output)["bad"][schema.ATTEMPTS] == 2
    assert _frames(output, "good") == list(range(count07))

    # max_attempts=2 reached: given up, not retried. good.mp4 overwritten with other content but an old
    # mtime: a plain rerun sees the size change and redoes it
    _place(tw01, folder / "good.mp4", TWO_DAYS_AGO)
    third = _run(folder, models, output)
    assert third["given_up"] == ["bad"] and third["videos_failed"] == 1 and third["videos_annotated"] == 1
    assert [f[schema.VIDEO_ID] for f in third["failures"]] == ["bad"]  # one record, never double-counted
    assert _failures(output)["bad"][schema.ATTEMPTS] == 2
    assert _frames(output, "good") == list(range(count01))
    marker = shards.read_marker(output, PREDICTIONS, "good")

    # the given-up file replaced by a good one is a new input: retried; unchanged good.mp4 is skipped
    _place(tw07, folder / "bad.mp4")
    last = _run(folder, models, output, since="last")
    assert last["videos_annotated"] == 1 and last["given_up"] == [] and last["videos_failed"] == 0
    assert _frames(output, "bad") == list(range(count07)) and _failures(output) == {}
    assert shards.read_marker(output, PREDICTIONS, "good") == marker
    versions = shards.read_table(output, PREDICTIONS, schema.PREDICTIONS_SCHEMA).column(schema.MODEL_VERSION)
    assert len(set(versions.to_pylist())) == 1


def test_s3_fingerprint_changes_when_an_object_is_overwritten(s3_bucket):
    """Same key, new content: the fingerprint done markers record no longer matches."""
    client = boto3.client("s3")
    bucket = s3_bucket.removeprefix("s3://")
    client.put_object(Bucket=bucket, Key="videos/a.mp4", Body=b"first content")
    item = work_item("a", f"{s3_bucket}/videos/a.mp4")
    before = item_fingerprint(item)
    assert item_fingerprint(item) == before  # unchanged object: same fingerprint, the video is skipped
    client.put_object(Bucket=bucket, Key="videos/a.mp4", Body=b"other content, longer")
    assert item_fingerprint(item) != before
