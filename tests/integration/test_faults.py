"""Faults during real cluster jobs: S3 failing requests (tests/s3proxy.py: a deterministic failing proxy on
127.0.0.1 in front of the moto server): 5xx answers, connections reset mid-body, answers slower than the
client timeout, uploads cut halfway, a read that never succeeds.

Whatever fails, a run never reports success with objects missing (every done marker's parts exist, a
failed video has a failure row and no done marker, --strict exits 1), and a rerun after the failure yields
the same final outputs as a clean run (the reference: the same jobs on the session's in-process local Ray).
A worker node killed part way through annotation is test_multinode's (its README flow's annotate job);
killing a training worker belongs to the train_all tests.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fer_ray import schema, shards, storage
from fer_ray.infer.postprocess import PREDICTIONS, submission_uri
from tests import golden
from tests.cluster import TERMINAL, job_command, shared_cluster
from tests.conftest import need_shared
from tests.helpers import check_complete, count_frames, expected_frames
from tests.s3proxy import FailingS3Proxy, Fault

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]

BUCKET, VIDEOS, FRAMES = golden.BUCKET, golden.VIDEOS, golden.FRAMES


@pytest.fixture(scope="module")
def reference(dev_reference):
    """The inputs on S3 and the clean outputs of both jobs (in-process local Ray): s3://reference/ref/{pre,ann},
    shared with test_golden (tests/integration/conftest.py)."""
    return dev_reference


@pytest.fixture(scope="module")
def cluster(s3_server):
    return shared_cluster()


def annotate_cmd(base: str, faces: str, output: str) -> str:
    return job_command("annotate.py", "--config", f"{base}/annotate.yaml", "--input", faces,
                       "--models", f"{base}/models", "--output", output, "--strict")


def preprocess_cmd(base: str, output: str, workers: int = 2) -> str:
    return job_command("preprocess.py", "--input", f"{base}/videos/", "--output", output, *FRAMES,
                       "--num-workers", str(workers), "--worker-cpus", "1", "--strict")


# ------------------------------------------------------------------------- checks


def faces_frame(output: str) -> pd.DataFrame:
    table = shards.read_table(output, "faces", schema.FACES_SCHEMA).to_pandas()
    columns = [schema.VIDEO_ID, schema.FRAME_INDEX, schema.TIMESTAMP, schema.LABEL, schema.REASON, schema.FACE]
    return table[columns].sort_values(columns[:2]).reset_index(drop=True)


def predictions_frame(output: str) -> pd.DataFrame:
    table = storage.read_parquet_many(shards.complete_parts(output, PREDICTIONS)).to_pandas()
    return table.sort_values([schema.VIDEO_ID, schema.FRAME_INDEX]).reset_index(drop=True)


def _only(frame: pd.DataFrame, videos: set[str]) -> pd.DataFrame:
    return frame[frame[schema.VIDEO_ID].isin(videos)].reset_index(drop=True)


def assert_same_faces(output: str, reference: str, videos: set[str] = frozenset(VIDEOS)) -> None:
    """`videos` complete (and no other), every decoded frame exactly once, counted against PyAV's reading of
    the source videos (not against another run of the same code), then equal to the reference run."""
    assert set(check_complete(output, "faces")) == set(videos)
    got = faces_frame(output)
    stride, max_frames = int(FRAMES[1]), int(FRAMES[3])
    for video_id in videos:
        want = expected_frames(need_shared("videos", VIDEOS[video_id]), stride=stride, max_frames=max_frames)
        assert sorted(got.loc[got[schema.VIDEO_ID] == video_id, schema.FRAME_INDEX]) == want, video_id
    pd.testing.assert_frame_equal(_only(got, videos), _only(faces_frame(reference), videos))


def assert_same_predictions(output: str, reference: str, videos: set[str] = frozenset(VIDEOS)) -> None:
    """`videos` complete (and no other), every frame exactly once, labels and submission files equal to the
    reference run."""
    assert set(check_complete(output, PREDICTIONS)) == set(videos)
    got, want = _only(predictions_frame(output), videos), _only(predictions_frame(reference), videos)
    for video_id in videos:  # one row per frame of the source video, as PyAV counts them
        rows = got[got[schema.VIDEO_ID] == video_id]
        frames = count_frames(need_shared("videos", VIDEOS[video_id]))
        assert rows[schema.FRAME_INDEX].tolist() == list(range(frames)), video_id
    same = [schema.VIDEO_ID, schema.FRAME_INDEX, schema.LABEL, schema.FACE_FOUND, schema.FILLED]
    pd.testing.assert_frame_equal(got[same], want[same])
    assert np.allclose(np.stack(got[schema.PROBS]), np.stack(want[schema.PROBS]), atol=1e-5)
    for video_id in videos:
        assert storage.read_bytes(submission_uri(output, video_id)) == \
            storage.read_bytes(submission_uri(reference, video_id)), video_id


# ------------------------------------------------------------------------- S3 errors


def test_s3_faults_are_retried_or_reported_and_a_rerun_heals(reference, cluster, s3_server):
    """One preprocess and one annotate run through the failing proxy, then each again with S3 healthy as soon
    as its faulty run has ended and been checked (the healthy preprocess beside the faulty annotate's retries).

    Transient faults, retried: every 14th request fails (503 SlowDown / 500 InternalError alternately); a
    video download and face-part reads reset mid-body, one download answered slower than the client
    timeout, part and prediction uploads cut halfway. The videos they hit complete and equal the clean run.
    Lasting faults, reported: a face-part write and a prediction write that fail on every attempt, and a
    video whose download is reset every time. Those videos get a failure row with the read's or write's own
    reason (never the file's bytes), summary.json lists them, --strict exits 1, and no done marker claims
    them. The healthy rerun redoes exactly them and yields the reference outputs."""
    base = reference
    pre_out, ann_out = f"{base}/s3/pre", f"{base}/s3/ann"
    transient = [
        # resets once per object: Ray Data's Parquet reads have only the S3 client's 3 tries, and an unlucky
        # 14th request on the last of them would turn a transient fault into a lasting one
        Fault("reset", "GET", rf"^/{BUCKET}/videos/tw_TW07\.mp4", times=1),
        Fault("slow", "GET", rf"^/{BUCKET}/videos/tw_TW11\.mp4", times=1, delay=15),
        Fault("cut", "PUT", rf"^/{BUCKET}/s3/pre/faces/tw_TW(07|11)/", times=2),
        Fault("reset", "GET", rf"^/{BUCKET}/ref/pre/faces/tw_TW(07|11)/part-", times=1),
        Fault("reset", "GET", rf"^/{BUCKET}/ref/pre/faces/tw_TW01/part-", times=1),
        Fault("cut", "PUT", rf"^/{BUCKET}/s3/ann/predictions/tw_TW(01|11)/", times=2),
    ]
    broken = [(m, rf"^/{BUCKET}/s3/pre/faces/tw_TW01/part-00000") for m in ("PUT", "POST")] + \
             [(m, rf"^/{BUCKET}/s3/ann/predictions/tw_TW07/") for m in ("PUT", "POST")]
    unreadable = Fault("reset", "GET", rf"^/{BUCKET}/videos/pyfeat_single_face\.mp4", times=None)
    failing = {"tw_TW01", "pyfeat_single_face"}
    # every 14th, not 7th: each injected fault costs a retry backoff that is idle time (7th: ~98 failed
    # requests, annotate done ~45 s after preprocess; 14th: ~64 and ~30 s), and 500/503 still both occur
    jobs = {}
    try:
        with FailingS3Proxy(s3_server, every=14, always=broken, faults=[*transient, unreadable]) as proxy:
            # 3 attempts, each of them retried 3 times by the S3 client (storage.py): 9 tries get a transient
            # fault through, and a lasting one fails within seconds instead of minutes (8 x 8 with backoff)
            env = {"AWS_ENDPOINT_URL": proxy.url, "FER_RAY_S3_TIMEOUT_S": "5", "FER_RAY_S3_MAX_ATTEMPTS": "3"}
            # side by side: the annotate run reads the reference faces, not this preprocess run's, and most
            # of each job's time is retries waiting on the proxy's faults
            jobs["pre"] = cluster.submit(preprocess_cmd(base, pre_out), env)
            jobs["ann"] = cluster.submit(annotate_cmd(base, f"{base}/ref/pre", ann_out), env)
            pre = cluster.wait(jobs["pre"], timeout=400)
            check_failed_preprocess(pre, pre_out, base, failing)
            # the healthy preprocess rerun (S3 directly, not the proxy) starts beside the faulty annotate
            # run's retries: it writes only pre_out, which that run never reads. One detector actor for the
            # two videos it redoes: a second would take CPU from that annotate run to start.
            jobs["healed pre"] = cluster.submit(preprocess_cmd(base, pre_out, workers=1))
            ann = cluster.wait(jobs["ann"], timeout=400)
        methods = {m for m, _, _ in proxy.failed}
        print(f"through the proxy: preprocess {pre.seconds:.0f}s, annotate done {ann.seconds:.0f}s after it")
        print(f"proxy: {proxy.requests} requests, {len(proxy.failed)} failed ({sorted(methods)}), "
              f"faults {[(f.kind, f.path, f.hits) for f in transient + [unreadable]]}")
        assert len(proxy.failed) >= 10 and {"GET"} <= methods and methods & {"PUT", "POST"}
        assert [f.hits for f in transient] == [f.times for f in transient], "a fault was never injected"
        assert unreadable.hits >= 3, "the unreadable video was not read on every attempt"
        assert {500, 503, "reset", "slow", "cut"} <= proxy.kinds()

        assert ann.status == "FAILED" and "Traceback" not in ann.logs, ann.logs[-4000:]  # --strict: one failed
        summary = storage.read_json(storage.join(ann_out, "summary.json"))
        assert summary["videos_failed"] == 1 and [f["video_id"] for f in summary["failures"]] == ["tw_TW07"]
        assert "tw_TW07" not in summary["videos"]
        assert_same_predictions(ann_out, f"{base}/ref/ann", videos=set(VIDEOS) - {"tw_TW07"})
        # the healthy annotate rerun reads the reference faces, as its first run did
        jobs["healed ann"] = cluster.submit(annotate_cmd(base, f"{base}/ref/pre", ann_out))

        healed_pre = cluster.wait(jobs["healed pre"], timeout=400)
        print(f"healthy reruns: preprocess done {healed_pre.seconds:.0f}s after the faulty annotate")
        assert healed_pre.status == "SUCCEEDED", healed_pre.logs[-4000:]
        assert shards.read_failures(pre_out).num_rows == 0
        assert_same_faces(pre_out, f"{base}/ref/pre")
        healed_ann = cluster.wait(jobs["healed ann"], timeout=400)
        print(f"healthy reruns: annotate done {healed_ann.seconds:.0f}s after that")
        assert healed_ann.status == "SUCCEEDED", healed_ann.logs[-4000:]
        summary = storage.read_json(storage.join(ann_out, "summary.json"))
        assert summary["videos_annotated"] == 1 and summary["videos_skipped"] == len(VIDEOS) - 1, summary
        assert summary["videos_failed"] == 0
        assert_same_predictions(ann_out, f"{base}/ref/ann")
    finally:  # a failed check must not leave a job running into the next test's
        for job in jobs.values():
            if cluster.status(job) not in TERMINAL:
                cluster.client.stop_job(job)


def check_failed_preprocess(pre, pre_out: str, base: str, failing: set[str]) -> None:
    """The faulty preprocess run: --strict exits 1 without a traceback, the failing videos have failure rows
    with the read's own reason (never the file's bytes), the rest equal the clean run."""
    assert pre.status == "FAILED" and "Traceback" not in pre.logs, pre.logs[-4000:]
    failures = {r[schema.VIDEO_ID]: r for r in shards.read_failures(pre_out).to_pylist()}
    assert set(failures) == failing and failures["tw_TW01"][schema.ERROR], failures
    reason = failures["pyfeat_single_face"][schema.ERROR]
    assert "NETWORK_CONNECTION" in reason, reason  # the read's own reason ...
    head = storage.read_bytes(f"{base}/videos/pyfeat_single_face.mp4")[:64]
    assert "ftyp" not in reason and head.decode("latin-1") not in reason  # ... never the file's bytes
    summary = storage.read_json(storage.join(pre_out, "summary.json"))
    assert summary["failed"] == 2 and {f["video_id"] for f in summary["failures"]} == failing
    assert_same_faces(pre_out, f"{base}/ref/pre", videos=set(VIDEOS) - failing)
