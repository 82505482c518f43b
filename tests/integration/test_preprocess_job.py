"""jobs/preprocess.py end to end on the session Ray cluster: real videos and image sets read from S3 and from
local folders, bad inputs as failure records, resume after a crash mid-video.

Kept fast with stride 4 and at most 45 decoded frames per video (frames 0..176: the labelled dev
videos change expression in that span, and the face leaves pyfeat_face_noface within it).
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fer_ray import labels, schema, shards, storage
from fer_ray.faces import decode_face
from fer_ray.video import frame_indices, open_video
from tests.conftest import SHARED_DATA, need_shared
from tests.helpers import load_job

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]

STRIDE, MAX_FRAMES = 4, 45
# the input folder links to the shared videos, which lie outside it: allowed by name (inputs are confined)
# one detector actor: a second costs ~7 s of CPU to start (torch, timm, MTCNN), more than these inputs' work;
# work spread over many actors and nodes is test_multinode's
ARGS = ["--stride", str(STRIDE), "--max-frames", str(MAX_FRAMES), "--num-workers", "1", "--worker-cpus", "0.5",
        "--allow-root", str(SHARED_DATA / "videos")]
VIDEOS = {  # video_id -> file under shared/data/videos
    "tw_TW01": "labeled/tw_TW01.mp4",
    "tw_TW07": "labeled/tw_TW07.mp4",
    "pyfeat_no_face": "unlabeled/pyfeat_no_face.mp4",
    "pyfeat_face_noface": "unlabeled/pyfeat_face_noface.mov",
}
IMAGES = {"taiwanese_dev": 6, "ckplus48": 5}  # set -> images taken
BUCKET = "preprocess-job"


JOB = load_job("preprocess")


def image_rows(name: str) -> pd.DataFrame:
    table = pd.read_csv(need_shared("images", name, "labels.csv"), dtype=str, keep_default_na=False)
    return table.iloc[np.linspace(0, len(table) - 1, IMAGES[name]).astype(int)]


def write_image_set(folder: Path, name: str) -> None:
    """A small copy of a shared image set: labels.csv and the images it names, paths relative to it."""
    folder.mkdir(parents=True, exist_ok=True)
    source = need_shared("images", name)
    with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "subject"])
        for row in image_rows(name).itertuples():
            target = folder / row.path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / row.path, target)
            writer.writerow([row.path, row.label, row.subject])


@pytest.fixture(scope="module")
def good_inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("inputs")
    for video_id, name in VIDEOS.items():
        source = need_shared("videos", name)
        os.symlink(source, root / source.name)
        if source.with_suffix(".txt").exists():
            os.symlink(source.with_suffix(".txt"), root / f"{video_id}.txt")
    for name in IMAGES:
        write_image_set(root / name, name)
    return root


def run_job(*argv: str) -> tuple[int, dict]:
    code = JOB.main(list(argv))
    output = argv[list(argv).index("--output") + 1]
    return code, storage.read_json(storage.join(output, "summary.json"))


def check_output(output: str) -> pd.DataFrame:
    """Every decoded frame is a row with the right label; faces where there are faces."""
    table = shards.read_table(output, "faces", schema.FACES_SCHEMA).to_pandas()
    assert not table.duplicated([schema.VIDEO_ID, schema.FRAME_INDEX]).any()
    for video_id, name in VIDEOS.items():
        rows = table[table[schema.VIDEO_ID] == video_id].sort_values(schema.FRAME_INDEX)
        source = need_shared("videos", name)
        with open_video(str(source)) as video:
            num_frames = video.num_frames
        expected = frame_indices(num_frames, STRIDE, MAX_FRAMES)
        assert rows[schema.FRAME_INDEX].tolist() == expected.tolist(), video_id
        assert (rows[schema.NUM_FRAMES] == num_frames).all()
        assert np.all(np.diff(rows[schema.TIMESTAMP].to_numpy()) > 0)
        found = rows[schema.REASON].isna()
        assert (rows.loc[~found, schema.REASON] == schema.REASON_NO_FACE).all()
        assert (rows.loc[~found, schema.FACE].map(len) == 0).all() and rows.loc[~found, schema.BBOX].isna().all()
        if source.with_suffix(".txt").exists():
            truth = labels.read_expr(str(source.with_suffix(".txt")))
            assert rows[schema.LABEL].tolist() == truth[expected].tolist(), video_id
            assert len(set(truth[expected].tolist())) > 1  # the span covers an expression change
            assert found.all(), f"{video_id}: faces missing on {(~found).sum()} frames"
        else:
            assert (rows[schema.LABEL] == labels.UNANNOTATED).all()
        if video_id == "pyfeat_no_face":
            assert not found.any()
        if video_id == "pyfeat_face_noface":  # the face is there, then leaves for good
            flags = found.to_numpy()
            assert flags[0] and not flags[-1] and 5 < flags.sum() < len(flags) - 5
            assert not flags[np.argmin(flags):].any()
        for face in rows.loc[found, schema.FACE].head(3):
            assert decode_face(face).shape == (112, 112, 3)
    for name, count in IMAGES.items():
        rows = table[table[schema.VIDEO_ID].str.startswith(name + "/")]
        truth = image_rows(name)
        assert len(rows) == count
        expected = {f"{name}/{p.rsplit('.', 1)[0]}": labels.class_index(v) for p, v in zip(truth.path, truth.label)}
        assert dict(zip(rows[schema.VIDEO_ID], rows[schema.LABEL])) == expected
        assert (rows[schema.FRAME_INDEX] == 0).all() and (rows[schema.NUM_FRAMES] == 1).all()
        assert rows[schema.REASON].isna().sum() >= count - 1  # a face in (almost) every image
        assert decode_face(rows[schema.FACE].iloc[0]).shape == (112, 112, 3)
    return table


@pytest.fixture(scope="module")
def local_run(ray_local, s3_server, good_inputs, tmp_path_factory):
    """The module's main run: inputs on S3 (videos with their EXPR files; image sets as labels.csv with paths
    relative to it, images beside it), output on local disk. (S3 output: tests/golden.py's reference run.)"""
    import boto3

    boto3.client("s3").create_bucket(Bucket=BUCKET)
    for file in good_inputs.rglob("*"):
        if file.is_file():
            storage.write_bytes(f"s3://{BUCKET}/in/{file.relative_to(good_inputs)}", file.read_bytes())
    output = tmp_path_factory.mktemp("local") / "out"
    code, summary = run_job("--input", f"s3://{BUCKET}/in", "--output", str(output), *ARGS)
    return output, code, summary


def test_job_reads_s3_and_writes_local(local_run):
    output, code, summary = local_run
    assert code == 0
    assert summary["failed"] == 0 and summary["done"] == len(VIDEOS) + len(IMAGES), summary
    assert summary["input"] == f"s3://{BUCKET}/in"
    table = check_output(str(output))
    assert summary["frames"] == len(table) and summary["faces"] == int(table[schema.REASON].isna().sum())
    assert storage.exists(str(output / "preprocess.yaml"))
    assert "stride: 4" in (output / "preprocess.yaml").read_text()


def test_bad_inputs_become_failures(ray_local, tmp_path):
    good = need_shared("videos", "unlabeled", "pyfeat_single_face.mp4")
    dev = need_shared("videos", "labeled", "tw_TW07.mp4")
    (tmp_path / "zero.mp4").write_bytes(b"")
    (tmp_path / "truncated.mp4").write_bytes(dev.read_bytes()[: dev.stat().st_size // 2])
    (tmp_path / "text.mp4").write_text("this is a text file, not a video\n" * 10)
    (tmp_path / "bad_header.txt").write_text("Neutral,Happy,Sad\n" + "0\n" * 72)
    (tmp_path / "short.txt").write_text(labels.EXPR_HEADER + "\n" + "1\n" * 70)
    rows = [("good", str(good), ""), ("zero", "zero.mp4", ""), ("truncated", "truncated.mp4", ""),
            ("text", "text.mp4", ""), ("missing", "nowhere/missing.mp4", ""),
            ("bad_header", str(good), "bad_header.txt"), ("short_labels", str(good), "short.txt"),
            ("dup", str(good), ""), ("dup", str(dev), "")]
    with open(tmp_path / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("video_id", "uri", "label_uri"), *rows])
    output = tmp_path / "out"
    code, summary = run_job("--input", str(tmp_path / "manifest.csv"), "--output", str(output),
                            "--allow-root", str(good.parent), "--allow-root", str(dev.parent),
                            "--max-frames", "8", "--strict", "--worker-cpus", "0.5", "--num-workers", "1")
    assert code == 1
    failures = {r[schema.VIDEO_ID]: r[schema.ERROR] for r in shards.read_failures(str(output)).to_pylist()}
    expected = {
        "zero": "empty file (0 bytes)",
        "truncated": "truncated video: no frame index",
        "text": "not a video container",
        "missing": "no such file",
        "bad_header": "wrong header",
        "short_labels": "70 labels for 72 frames",
        "dup": "duplicate video_id 'dup'",
    }
    assert set(failures) == set(expected)
    for video_id, message in expected.items():
        assert message in failures[video_id], (video_id, failures[video_id])
    assert summary["failed"] == len(expected) and summary["done"] == 1
    table = shards.read_table(str(output), "faces", schema.FACES_SCHEMA)
    assert set(table.column(schema.VIDEO_ID).to_pylist()) == {"good"} and table.num_rows == 8
    assert not any(shards.is_done(str(output), "faces", v) for v in expected)


def test_resume_after_a_crash_mid_video(local_run, tmp_path):
    original, _, _ = local_run
    output = tmp_path / "out"
    shutil.copytree(original, output)
    before = shards.read_table(str(output), "faces", schema.FACES_SCHEMA).to_pandas()
    # crash mid-video: the done marker was never written and the second part is missing
    storage.delete(shards.done_uri(str(output), "faces", "tw_TW01"))
    storage.delete(shards.part_uri(str(output), "faces", "tw_TW01", 1))
    storage.delete(str(output / "summary.json"))
    code, summary = run_job("--input", str(local_run_inputs(original)), "--output", str(output), *ARGS)
    assert code == 0
    status = {r["video_id"]: r["status"] for r in summary["items_rows"]}
    assert status.pop("tw_TW01") == "done"
    assert set(status.values()) == {"skipped"}, status
    after = check_output(str(output))
    key = [schema.VIDEO_ID, schema.FRAME_INDEX]
    assert len(after) == len(before)
    merged = before.merge(after, on=key, suffixes=("", "_after"))
    assert len(merged) == len(before)
    assert (merged[schema.LABEL] == merged[schema.LABEL + "_after"]).all()


def local_run_inputs(output: Path) -> str:
    return storage.read_json(str(output / "summary.json"))["input"]


def test_config_yaml_flags_and_validation(tmp_path):
    from fer_ray import config
    from fer_ray.jobs.preprocess import PreprocessConfig

    path = tmp_path / "preprocess.yaml"
    path.write_text("output: out\nstride: 2\ndetector:\n  detect_size: 160\n  min_score: 0.95\n")
    cfg = config.load(PreprocessConfig, str(path), overrides={"stride": 3, "max_frames": None})
    assert (cfg.stride, cfg.detector.detect_size, cfg.detector.min_score, cfg.max_frames) == (3, 160, 0.95, None)
    for bad, message in [({"stride": 0}, "stride"), ({"face_size": 8}, "face_size"),
                         ({"detector": {"device": "tpu"}}, "device"), ({"strides": 2}, "unknown key")]:
        with pytest.raises(ValueError, match=message):
            config.load(PreprocessConfig, {"output": "out", **bad})
    with pytest.raises(ValueError, match="output is required"):
        config.load(PreprocessConfig, {})


def test_stage_resumes_and_redoes_when_settings_change(tmp_path):
    """Without Ray: same settings -> skipped; other frame selection -> redone; a failure is cleared. The
    driver's check before any actor starts (skip_finished) skips exactly what the stage skips."""
    from fer_ray import inputs
    from fer_ray.preprocess import FacesConfig, PreprocessStage, skip_finished

    clip = need_shared("videos", "unlabeled", "pyfeat_single_face.mp4")
    output = str(tmp_path / "out")
    item = inputs.work_item("clip", str(tmp_path / "clip.mp4"))
    config = FacesConfig(max_frames=6, chunk_size=4)
    stage = PreprocessStage(config, output)
    assert skip_finished([item], config, output) == ([item], [])
    assert stage.run_item(item)["status"] == "failed"  # not there yet
    assert skip_finished([item], config, output) == ([item], [])  # a failure is retried
    assert storage.exists(shards.failure_uri(output, "clip"))
    shutil.copyfile(clip, tmp_path / "clip.mp4")
    first = stage.run_item(item)
    assert (first["status"], first["frames"], first["faces"]) == ("done", 6, 6)
    # where its seconds went: every phase ran, and together they are within the item's own seconds
    phases = [first[f"{p}_seconds"] for p in ("decode", "detect", "align", "write")]
    assert all(p > 0 for p in phases) and sum(phases) <= first["seconds"] + 1e-3, first
    assert not storage.exists(shards.failure_uri(output, "clip"))
    pending, finished = skip_finished([item], config, output)
    skipped = stage.run_item(item)
    assert skipped["status"] == "skipped" and skipped["detect_seconds"] == 0.0
    same = ("video_id", "kind", "status", "frames", "faces", "error", "tracks")
    assert pending == [] and [{k: r[k] for k in same} for r in finished] == [{k: skipped[k] for k in same}]
    wider_config = FacesConfig(max_frames=6, stride=2, chunk_size=4)
    assert skip_finished([item], wider_config, output) == ([item], [])  # other settings: redone
    wider = PreprocessStage(wider_config, output)
    again = wider.run_item(item)
    assert again["status"] == "done"
    rows = shards.read_table(output, "faces", schema.FACES_SCHEMA)
    assert rows.column(schema.FRAME_INDEX).to_pylist() == [0, 2, 4, 6, 8, 10]
    batch = {k: [v] for k, v in item.items()}
    summary = wider(batch)
    assert summary["status"] == ["skipped"] and summary["video_id"] == ["clip"]


def test_unreadable_image_fails_alone(tmp_path):
    """Without Ray: a broken image in a batch is its own failure record; the rest of the batch is done."""
    from fer_ray import inputs
    from fer_ray.preprocess import FacesConfig, PreprocessStage

    write_image_set(tmp_path / "ckplus48", "ckplus48")
    item = inputs.discover(str(tmp_path / "ckplus48" / "labels.csv")).items[0]
    (tmp_path / "broken.png").write_text("not an image")
    item[inputs.MEMBERS].insert(2, {schema.VIDEO_ID: "ckplus48/broken", schema.URI: str(tmp_path / "broken.png"),
                                    schema.LABEL: 1, schema.SUBJECT: None})
    output = str(tmp_path / "out")
    row = PreprocessStage(FacesConfig(chunk_size=2), output).run_item(item)
    assert (row["status"], row["frames"], row["faces"]) == ("done", 5, 5)
    assert "1 of 6 images unreadable" in row["error"]
    failures = shards.read_failures(output).to_pylist()
    assert [f[schema.VIDEO_ID] for f in failures] == ["ckplus48/broken"] and "not an image" in failures[0][schema.ERROR]
    table = shards.read_table(output, "faces", schema.FACES_SCHEMA)
    assert table.num_rows == 5 and table.column(schema.REASON).null_count == 5


def test_split_decode_matches_fused(local_run, good_inputs, tmp_path):
    """--decode-workers: CPU decode actors feed the detect actors; the same rows as the fused run, and bad videos
    still become failure records. (What a rerun skips is decided on the driver before either path runs:
    test_resume_after_a_crash_mid_video.)"""
    original, _, _ = local_run
    (tmp_path / "zero.mp4").write_bytes(b"")
    bad = need_shared("videos", "labeled", "tw_TW07.mp4")
    (tmp_path / "truncated.mp4").write_bytes(bad.read_bytes()[: bad.stat().st_size // 3])
    inputs_dir = tmp_path / "inputs"
    shutil.copytree(good_inputs, inputs_dir, symlinks=True)
    for name in ("zero.mp4", "truncated.mp4"):
        shutil.move(tmp_path / name, inputs_dir / name)
    output = tmp_path / "split"
    argv = ["--input", str(inputs_dir), "--output", str(output), *ARGS, "--decode-workers", "1"]
    code, summary = run_job(*argv)
    assert code == 0 and summary["done"] == len(VIDEOS) + len(IMAGES), summary
    errors = {f["video_id"]: f["error"] for f in summary["failures"]}
    assert "empty file" in errors.pop("zero") and "truncated video: no frame index" in errors.pop("truncated")
    assert not errors
    assert {r[schema.VIDEO_ID] for r in shards.read_failures(str(output)).to_pylist()} == {"zero", "truncated"}
    key = [schema.VIDEO_ID, schema.FRAME_INDEX]
    fused = check_output(str(original)).sort_values(key).reset_index(drop=True)
    split = check_output(str(output)).sort_values(key).reset_index(drop=True)
    assert len(split) == len(fused)
    for column in (*key, schema.LABEL, schema.FACE, schema.REASON, schema.TIMESTAMP, schema.NUM_FRAMES):
        assert split[column].equals(fused[column]), column
    marker = shards.done_markers(str(output), "faces")["tw_TW01"]
    assert marker["frames"] == MAX_FRAMES and len(marker["parts"]) == 2  # 45 frames in chunks of 32


def test_command_line_is_quiet_by_default(tmp_path):
    """`python jobs/preprocess.py` prints our lines (a progress bar, the table, the summary), not Ray's:
    no Ray Data progress reports, no worker output; those stay in Ray's session logs (--verbose)."""
    import subprocess
    import sys

    (tmp_path / "in").mkdir()
    shutil.copyfile(need_shared("videos", "unlabeled", "pyfeat_single_face.mp4"), tmp_path / "in" / "clip.mp4")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    for name in ("RAY_ADDRESS", "TQDM_DISABLE"):  # a local Ray, and the bar a user sees
        env.pop(name, None)
    done = subprocess.run([sys.executable, str(root / "jobs" / "preprocess.py"), "--input", str(tmp_path / "in"),
                           "--output", str(tmp_path / "out"), "--max-frames", "4", "--num-workers", "1"],
                          capture_output=True, text=True, env=env, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "1 items: 1 done" in output and "preprocess: 100%" in output  # ours: summary and progress bar
    for noise in ("streaming_executor", "logging_progress", "Started a local Ray instance", "pid="):
        assert noise not in output, (noise, output[-3000:])
    assert len(output.splitlines()) <= 20, output
