"""Redo safety: a redo (new settings, new input content, new model version) interrupted at ANY write step
never leaves a video that looks complete with missing or mixed parts, and a normal rerun finishes it.

The crash is injected into our own storage layer in-process: the N-th write or delete (of the redo's
`storage.write_bytes` / `storage.delete` calls) raises a BaseException, as a killed worker would stop there
(the stages turn ordinary exceptions into failure rows, a crash must get past them). Every step N of the
redo is tried. "Every frame exactly once" is checked against references the code under test does not
compute: decord's frame count of the real video, the frame numbers the test built.
"""

from __future__ import annotations

import io
import shutil

import decord
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from fer_ray import labels, schema, shards, storage
from fer_ray.faces import encode_face
from fer_ray.infer import systems
from fer_ray.infer.logits import LogitsStage
from fer_ray.infer.postprocess import LOGITS, PREDICTIONS, VideoPostprocess, submission_uri
from fer_ray.inputs import work_item
from fer_ray.jobs.annotate import pending_videos
from fer_ray.jobs.preprocess import PreprocessConfig
from fer_ray.preprocess import (
    FACES,
    ChunkCollector,
    DecodeStage,
    DetectStage,
    PreprocessStage,
)
from tests.conftest import need_shared
from tests.helpers import write_untrained_models


class Crash(BaseException):
    """A worker dying mid-write: not an Exception, so no stage turns it into a failure row."""


class CrashAt:
    """Counts the storage writes and deletes; the `at`-th one raises Crash before touching storage."""

    def __init__(self, monkeypatch, at: int | None):
        self.at, self.count = at, 0
        for name in ("write_bytes", "delete"):
            original = getattr(storage, name)
            monkeypatch.setattr(storage, name, self._wrap(original))

    def _wrap(self, original):
        def step(uri, *args):
            self.count += 1
            if self.count == self.at:
                raise Crash(uri)
            return original(uri, *args)
        return step


def unreferenced(output: str, table: str, video_id: str) -> list[str]:
    """Part files of a video that its done marker does not list."""
    marker = shards.read_marker(output, table, video_id) or {"parts": []}
    listed = {storage.join(output, table, p) for p in marker["parts"]}
    return [u for u in storage.list_files(storage.join(output, table, storage.safe_key(video_id))) if u not in listed]


# --------------------------------------------------------------------------- preprocess

OLD = {"stride": 1, "max_frames": 4, "face_size": 112}  # frames 0..3, 112-pixel crops
NEW = {"stride": 2, "max_frames": 3, "face_size": 64}  # frames 0, 2, 4, 64-pixel crops


@pytest.fixture(scope="module")
def video():
    path = need_shared("videos", "labeled", "tw_TW01.mp4")
    count = len(decord.VideoReader(str(path)))
    reference = {name: list(range(0, count, s["stride"]))[:s["max_frames"]] for name, s in
                 (("old", OLD), ("new", NEW))}
    return work_item("tw", str(path)), reference


def _config(output: str, settings: dict) -> PreprocessConfig:
    return PreprocessConfig(output=output, chunk_size=2, worker_cpus=1, **settings)


def fused(config: PreprocessConfig, item: dict) -> None:
    """A (re)run as the job does it: sweep what an earlier crash left, then the stage."""
    shards.sweep(config.output, FACES)
    row = PreprocessStage(config, config.output).run_item(item)
    assert row["status"] in ("done", "skipped"), row


def split(config: PreprocessConfig, item: dict) -> None:
    """The --decode-workers path in-process: DecodeStage -> DetectStage -> ChunkCollector (the driver)."""
    shards.sweep(config.output, FACES)
    detect, collector = DetectStage(config, config.output), ChunkCollector(config.output, config)
    for batch in DecodeStage(config, config.output)({k: [v] for k, v in item.items()}):
        out = detect(batch)
        for i in range(len(out[schema.VIDEO_ID])):
            summary = collector.add({k: v[i] for k, v in out.items()})
            assert summary is None or summary["status"] in ("done", "skipped"), summary


def face_rows(output: str) -> tuple[list[int], set[int]]:
    """(frame indices of the complete rows, crop sizes of the rows with a face)."""
    table = shards.read_table(output, FACES, schema.FACES_SCHEMA).to_pylist()
    sizes = {Image.open(io.BytesIO(r[schema.FACE])).size[0] for r in table if r[schema.FACE]}
    return sorted(r[schema.FRAME_INDEX] for r in table), sizes


def assert_whole(output: str, reference: dict, allowed: tuple[str, ...]) -> str:
    """The video reads as exactly one complete version (each of its frames once, one crop size)."""
    frames, sizes = face_rows(output)
    version = "new" if frames == reference["new"] else "old"
    assert version in allowed and frames == reference[version], frames
    assert sizes == {(NEW if version == "new" else OLD)["face_size"]}, sizes
    return version


@pytest.mark.parametrize("path", [fused, split], ids=["fused", "split"])
def test_preprocess_redo_crash_at_every_write_step(tmp_path, monkeypatch, video, path):
    item, reference = video
    base = str(tmp_path / "old")
    path(_config(base, OLD), item)
    assert_whole(base, reference, ("old",))

    with monkeypatch.context() as patch:  # how many writes and deletes a redo takes
        counter = CrashAt(patch, None)
        probe = str(tmp_path / "probe")
        shutil.copytree(base, probe)
        path(_config(probe, NEW), item)
    steps = counter.count
    assert steps >= 5  # 2 parts + marker + 2 old parts deleted, at least

    for at in range(1, steps + 1):
        output = str(tmp_path / f"crash{at}")
        shutil.copytree(base, output)
        with monkeypatch.context() as patch, pytest.raises(Crash):
            CrashAt(patch, at)
            path(_config(output, NEW), item)
        assert_whole(output, reference, ("old", "new"))  # interrupted: still one whole version
        path(_config(output, NEW), item)  # the next run
        assert assert_whole(output, reference, ("new",)) == "new", at
        assert unreferenced(output, FACES, "tw") == [], at
        assert shards.read_failures(output).num_rows == 0


# --------------------------------------------------------------------------- annotate

NUM_FRAMES = 10
OLD_FRAMES, NEW_FRAMES = list(range(NUM_FRAMES)), list(range(0, NUM_FRAMES, 2))  # faces redone at stride 2


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    uri = str(tmp_path_factory.mktemp("models"))
    entries = systems.entries(write_untrained_models(uri, models=[("baseline", "resnet_smoke", "expr")]), uri)
    stage = LogitsStage(entries)
    rng = np.random.default_rng(0)
    faces = [encode_face(rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)) for _ in range(NUM_FRAMES)]

    def logits(frames: list[int]) -> dict:
        column = np.empty(len(frames), dtype=object)
        column[:] = [faces[f] for f in frames]
        return stage({schema.VIDEO_ID: np.asarray(["vid"] * len(frames)), schema.FRAME_INDEX: np.asarray(frames),
                      schema.TIMESTAMP: np.asarray(frames) / 30.0, schema.FACE: column,
                      schema.NUM_FRAMES: np.full(len(frames), NUM_FRAMES)})

    return entries, {"v1": logits(OLD_FRAMES), "v2": logits(NEW_FRAMES)}


def annotate_run(output: str, models, version: str) -> None:
    """One annotate run of the video as the job does it: sweep, pending check, post-processing."""
    entries, batches = models
    source = {"v1": "faces-old", "v2": "faces-new"}[version]
    for table in (PREDICTIONS, LOGITS):
        shards.sweep(output, table)
    faces = {"vid": {"fingerprint": source, "kind": "video", "frames": NUM_FRAMES}}
    todo, _ = pending_videos("unused", output, version, faces_markers=faces)
    if todo:
        VideoPostprocess(output, entries, "baseline", 8, version, keep_logits=True,
                         sources={"vid": source})(batches[version])


def annotations(output: str) -> dict:
    """What a reader sees: versions and frames of the complete predictions and logits, the submission."""
    predictions = shards.read_table(output, PREDICTIONS, schema.PREDICTIONS_SCHEMA).to_pydict()
    logits = shards.read_table(output, LOGITS, schema.LOGITS_SCHEMA).to_pydict()
    return {"frames": predictions[schema.FRAME_INDEX], "versions": set(predictions[schema.MODEL_VERSION]),
            "marker": shards.read_marker(output, PREDICTIONS, "vid")["model_version"],
            "labels": predictions[schema.LABEL],
            "logits_frames": sorted(set(logits[schema.FRAME_INDEX])),
            "logits_marker": shards.read_marker(output, LOGITS, "vid")["model_version"],
            "submission": labels.read_expr(submission_uri(output, "vid")).tolist()}


def assert_whole_annotation(seen: dict, allowed: tuple[str, ...]) -> None:
    assert sorted(seen["frames"]) == list(range(NUM_FRAMES))  # each frame exactly once
    assert seen["versions"] == {seen["marker"]} and seen["marker"] in allowed  # one version, the marker's
    expected_logits = {"v1": OLD_FRAMES, "v2": NEW_FRAMES}[seen["logits_marker"]]
    assert seen["logits_frames"] == expected_logits and seen["logits_marker"] in allowed
    assert len(seen["submission"]) == NUM_FRAMES  # a whole file of one version, never a half-written one


def test_annotate_redo_crash_at_every_write_step(tmp_path, monkeypatch, models):
    base = str(tmp_path / "old")
    annotate_run(base, models, "v1")
    assert annotations(base)["versions"] == {"v1"}
    fresh = str(tmp_path / "fresh")  # the new version into an empty output: the reference result
    annotate_run(fresh, models, "v2")
    reference = annotations(fresh)

    with monkeypatch.context() as patch:
        counter = CrashAt(patch, None)
        probe = str(tmp_path / "probe")
        shutil.copytree(base, probe)
        annotate_run(probe, models, "v2")
    steps = counter.count
    assert steps >= 7  # predictions, logits, logits marker, submission, marker, 2 old parts deleted

    for at in range(1, steps + 1):
        output = str(tmp_path / f"crash{at}")
        shutil.copytree(base, output)
        with monkeypatch.context() as patch, pytest.raises(Crash):
            CrashAt(patch, at)
            annotate_run(output, models, "v2")
        assert_whole_annotation(annotations(output), ("v1", "v2"))
        annotate_run(output, models, "v2")  # the next run finishes the redo
        seen = annotations(output)
        assert seen == reference, at
        assert seen["submission"] == seen["labels"]
        for table in (PREDICTIONS, LOGITS):
            assert unreferenced(output, table, "vid") == [], (at, table)


# --------------------------------------------------------------------------- the bookkeeping underneath


def test_attempt_names_never_hit_the_current_marker(tmp_path):
    output = str(tmp_path)
    assert shards.next_attempt(None, "fp1") == ""  # first attempt: plain names
    first = shards.write_part(output, FACES, "v", 0, pa.table({"x": [1]}))
    shards.mark_done(output, FACES, "v", [first], fingerprint="fp1")
    redo = shards.next_attempt(shards.read_marker(output, FACES, "v"), "fp2")
    assert redo and redo == shards.next_attempt(shards.read_marker(output, FACES, "v"), "fp2")  # retry-stable
    second = shards.write_part(output, FACES, "v", 0, pa.table({"x": [2]}), redo)
    shards.mark_done(output, FACES, "v", [second], fingerprint="fp2")
    assert storage.list_files(storage.join(output, FACES, "v")) == [second]  # the old part went after the switch
    # a redo back to a fingerprint whose names the marker lists takes the alternate names
    again = shards.next_attempt({"parts": [f"v/part-{redo}-00000.parquet"]}, "fp2")
    assert again not in ("", redo)


def test_sweep_deletes_only_unlisted_parts(tmp_path):
    output = str(tmp_path)
    kept = shards.write_part(output, FACES, "v", 0, pa.table({"x": [1]}))
    shards.mark_done(output, FACES, "v", [kept])
    orphans = [shards.write_part(output, FACES, "v", 0, pa.table({"x": [1]}), "abcd1234"),
               shards.write_part(output, FACES, "w", 0, pa.table({"x": [1]}))]  # w never completed
    other = storage.join(output, FACES, "v", "notes.parquet")  # not a part: left alone
    storage.write_parquet(other, pa.table({"x": [1]}))
    assert shards.sweep(output, FACES) == 2
    assert not any(storage.exists(u) for u in orphans) and storage.exists(kept) and storage.exists(other)
    assert shards.is_done(output, FACES, "v")


def test_failure_attempts_count_runs_on_the_same_input(tmp_path):
    output = str(tmp_path)
    assert shards.write_failure(output, "v", "v.mp4", "preprocess", "broken", fingerprint="a") == 1
    assert shards.write_failure(output, "v", "v.mp4", "preprocess", "broken", fingerprint="a") == 2
    assert shards.write_failure(output, "v", "v.mp4", "preprocess", "broken", fingerprint="b") == 1  # new content
    storage.write_json(shards.failure_uri(output, "old"), {"video_id": "old", "uri": "", "stage": "x",
                                                           "error": "e"})  # written before attempts existed
    rows = {r["video_id"]: r for r in shards.read_failures(output).to_pylist()}
    assert rows["v"][schema.ATTEMPTS] == 1 and rows["v"][schema.FINGERPRINT] == "b"
    assert rows["old"][schema.ATTEMPTS] == 1
    shards.mark_done(output, FACES, "v", [])  # success removes the record
    assert set(shards.read_failures(output).column(schema.VIDEO_ID).to_pylist()) == {"old"}
