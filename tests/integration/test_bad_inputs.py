"""Bad inputs through the real jobs: `ray job submit -- python jobs/preprocess.py` over tests/corpus.py's corpus
(then jobs/annotate.py over the good ones) on the test session's local multi-node cluster.

Every bad file becomes a clear failure row (failures/<key>.json and summary.json), every good one completes,
nothing crashes or hangs (the job is stopped and the test fails past a bound; every item reports its seconds),
and no file is written outside <output>/ (the whole pytest temp tree is listed before and after).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from fer_ray import schema, shards, storage
from fer_ray.infer.postprocess import PREDICTIONS, submission_uri
from tests.cluster import job_command, shared_cluster
from tests.corpus import ENTRIES, GOOD_FRAMES, LONG_FRAMES, build_corpus
from tests.helpers import write_untrained_models

pytestmark = pytest.mark.slow

JOB_TIMEOUT = 420  # whole preprocess job; a hang fails the test and the job is stopped
ITEM_SECONDS = 240  # any one item (the 600-frame video is the slowest by far)

ACCEPTED = {  # video_id -> frames (every decoded frame is a row)
    "good": GOOD_FRAMES, "good_small": GOOD_FRAMES, "valid_avi": 10, "valid_mkv": 10, "mkv_named_mp4": 10,
    "wide_real": 3, "variable_frame_rate": GOOD_FRAMES, "rotated_90": 10, "grayscale": 10,
    "long_no_face": LONG_FRAMES, "spaces_and_unicode": 10, "labels_good": GOOD_FRAMES,
    "other": GOOD_FRAMES,  # from the corpus's manifest_duplicate_ids.csv
}
REASONS = {entry.name: entry.reason for entry in ENTRIES if entry.reason}
# video_id -> the entry's own reason (tests/corpus.py): each bad input names its specific problem
FAILED = {name: reason for name, reason in REASONS.items() if not name.startswith("manifest_")}
FAILED["clip"] = REASONS["manifest_duplicate_ids"]  # the duplicated id of the corpus's manifest
UNSAFE_IDS = ("../../escape", "nested/id", "..", "/absolute")


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def corpus_run(s3_server, tmp_path_factory):
    """Build the corpus, write one manifest naming every entry, run preprocess and annotate as cluster jobs."""
    cluster = shared_cluster()
    base = tmp_path_factory.getbasetemp()
    root = tmp_path_factory.mktemp("bad inputs ✓")  # a space and a non-ASCII character in every path
    paths = build_corpus(root / "corpus")
    rows = [(name, str(paths[name].relative_to(root / "corpus")), "") for name in ACCEPTED
            if name not in ("labels_good", "other")]
    rows += [(name, str(paths[name].relative_to(root / "corpus")), "") for name in FAILED
             if not name.startswith("labels_") and name != "clip"]
    rows += [(name, "good.mp4", paths[name].name) for name in FAILED if name.startswith("labels_")]
    rows.append(("labels_good", "good.mp4", "labels_good.txt"))
    for manifest in ("manifest_duplicate_ids", "manifest_unsafe_ids"):  # the corpus's own manifests' rows
        with open(paths[manifest], newline="", encoding="utf-8") as handle:
            rows += [(r["video_id"], r["uri"], r["label_uri"]) for r in csv.DictReader(handle)]
    manifest = root / "corpus" / "all.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("video_id", "uri", "label_uri"), *rows])
    # annotate reads videos itself (decode -> detect -> align into <annotated>/faces): every accepted video but the
    # 600-frame one (its 19 face shards would only add Ray Data task overhead) and one bad file
    good = root / "corpus" / "good.csv"
    with open(good, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("video_id", "uri", "label_uri")] + [
            r for r in rows if (r[0] in ACCEPTED or r[0] in UNSAFE_IDS) and r[0] != "long_no_face"
        ] + [("zero_byte", "zero_byte.mp4", "")])
    models = root / "models"
    write_untrained_models(str(models))
    output = root / "out"
    before = _tree(base)

    # side by side: annotate reads the videos itself, never the preprocess run's output. Its pools have one
    # actor each (a second costs ~7 s of CPU start-up for a few frames; spreading work is test_multinode's)
    pre, ann = cluster.run_side_by_side([
        job_command("preprocess.py", "--input", manifest, "--output", output, "--strict", "--num-workers", "2",
                    "--worker-cpus", "1"),
        job_command("annotate.py", "--input", good, "--models", models, "--output", root / "annotated",
                    "--window", "16", "--num-workers", "1")], timeout=[JOB_TIMEOUT, 300])
    after = _tree(base)
    return {"root": root, "output": output, "pre": pre, "ann": ann,
            "new_files": after - before, "base": base, "manifest_rows": rows}


def test_preprocess_reports_every_bad_input_and_completes_the_rest(corpus_run):
    pre, output = corpus_run["pre"], str(corpus_run["output"])
    # --strict: the job itself ends with exit status 1 because inputs failed; it did not crash
    assert pre.status == "FAILED" and "Traceback" not in pre.logs, pre.logs[-3000:]
    summary = storage.read_json(storage.join(output, "summary.json"))
    failures = {r[schema.VIDEO_ID]: r for r in shards.read_failures(output).to_pylist()}
    assert set(FAILED) <= set(failures), sorted(failures)
    for video_id, text in FAILED.items():
        error = failures[video_id][schema.ERROR]
        assert text in error, (video_id, failures[video_id])
        assert not [r for r in FAILED.values() if r != text and r in error], (video_id, error)  # its own only
        assert not shards.is_done(output, "faces", video_id)
        assert f"FAILED {video_id}" in pre.logs  # the job's table names it
    summary_failures = {f["video_id"]: f["error"] for f in summary["failures"]}
    assert summary_failures == {v: r[schema.ERROR] for v, r in failures.items()}
    assert summary["failed"] == len(failures)
    markers = shards.done_markers(output, "faces")
    for video_id, frames in ACCEPTED.items():
        assert video_id in markers, (video_id, failures.get(video_id))
        assert markers[video_id]["frames"] == frames, video_id
        assert markers[video_id]["faces"] == 0  # the corpus draws shapes, never faces
    table = shards.read_table(output, "faces", schema.FACES_SCHEMA).to_pandas()
    assert not table.duplicated([schema.VIDEO_ID, schema.FRAME_INDEX]).any()
    counts = table.groupby(schema.VIDEO_ID).size().to_dict()
    for video_id, frames in ACCEPTED.items():
        assert counts[video_id] == frames, video_id
    assert (table[schema.REASON] == schema.REASON_NO_FACE).all()
    vfr = table[table[schema.VIDEO_ID] == "variable_frame_rate"].sort_values(schema.FRAME_INDEX)
    gaps = vfr[schema.TIMESTAMP].diff().dropna().round(3)
    assert gaps.nunique() > 3 and (gaps > 0).all()  # irregular stream timestamps, not index / fps
    labelled = table[table[schema.VIDEO_ID] == "labels_good"].sort_values(schema.FRAME_INDEX)
    assert labelled[schema.LABEL].tolist() == [i % 8 for i in range(GOOD_FRAMES)]


def test_unsafe_ids_never_leave_the_output(corpus_run):
    output = corpus_run["output"]
    failures = {r[schema.VIDEO_ID] for r in shards.read_failures(str(output)).to_pylist()}
    markers = shards.done_markers(str(output), "faces")
    for video_id in UNSAFE_IDS:  # rejected, or done under a sanitised key
        assert video_id in failures or video_id in markers, video_id
        if video_id in markers:
            key = storage.safe_key(video_id)
            assert "/" not in key and ".." not in key and key not in (".", "")
            assert shards.done_uri(str(output), "faces", video_id).startswith(str(output) + "/faces/_done/")
    outside = sorted(f for f in corpus_run["new_files"]
                     if not f.startswith(str(output.relative_to(corpus_run["base"])) + "/")
                     and not f.startswith(str((corpus_run["root"] / "annotated").relative_to(corpus_run["base"])) + "/"))
    assert outside == [], f"files written outside the outputs: {outside[:20]}"
    for path in output.rglob("*"):  # every written path is a plain, sanitised name under the output
        assert path.resolve().is_relative_to(output.resolve()) and ".." not in path.relative_to(output).parts


def test_bounded_time_per_item(corpus_run):
    summary = storage.read_json(storage.join(str(corpus_run["output"]), "summary.json"))
    slow = {r["video_id"]: r["seconds"] for r in summary["items_rows"] if r["seconds"] > ITEM_SECONDS}
    assert not slow, slow
    fast_failures = [r for r in summary["items_rows"] if r["status"] == "failed" and r["seconds"] > 30]
    assert not fast_failures, fast_failures  # a bad file fails fast: header checks before decoding
    print(f"preprocess job: {corpus_run['pre'].seconds:.0f}s; slowest items:",
          sorted(((r["seconds"], r["video_id"]) for r in summary["items_rows"]), reverse=True)[:3])


def test_annotate_the_good_ones(corpus_run):
    ann, annotated = corpus_run["ann"], str(corpus_run["root"] / "annotated")
    assert ann.status == "SUCCEEDED", ann.logs[-3000:]
    summary = storage.read_json(storage.join(annotated, "summary.json"))
    markers = shards.done_markers(annotated, PREDICTIONS)
    preprocessed = shards.done_markers(str(corpus_run["output"]), "faces")
    expected_ids = set(preprocessed) - {"long_no_face"}
    assert set(markers) == expected_ids, sorted(set(markers) ^ expected_ids)
    assert [f["video_id"] for f in summary["failures"]] == ["zero_byte"]  # a bad file: a row, not a crash
    for video_id in markers:
        rows = storage.read_parquet_many(shards.complete_parts(annotated, PREDICTIONS, [video_id])).to_pandas()
        expected = preprocessed[video_id]["num_frames"]  # the same frames the preprocess job found
        assert rows[schema.FRAME_INDEX].tolist() == list(range(expected)), video_id
        assert not rows[schema.FACE_FOUND].any()
        lines = storage.read_bytes(submission_uri(annotated, video_id)).decode().splitlines()
        assert len(lines) == expected + 1, video_id
    print("annotate job:", json.dumps({k: summary[k] for k in ("videos_annotated", "frames_annotated", "seconds")}))
