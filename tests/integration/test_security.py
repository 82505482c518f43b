"""Secrets and exposure: preprocess -> annotate as cluster jobs against moto S3 with the fake credentials.

The credentials reach the nodes the way an instance role or a Kubernetes secret would: in the environment of
the Ray processes, never on a command line, in a config file or in the job's runtime_env. Then the key id
and the secret must appear nowhere the project writes or Ray records: no output object, no log file of any
node's Ray session (logs of every job the test session ran on this cluster), no job output, not
summary.json or a failure row, not the job records of the job server. Video ids with `..` and `/` become
sanitised object keys under the output prefix. The dashboard and job server listen on 127.0.0.1 only, and
refuse requests without the cluster's token.
"""

from __future__ import annotations

import csv
import io

import boto3
import pytest

from fer_ray import schema, shards, storage
from fer_ray.infer.postprocess import PREDICTIONS
from tests.cluster import job_command, shared_cluster
from tests.conftest import FAKE_KEY_ID, FAKE_SECRET, need_shared
from tests.helpers import write_untrained_models

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]

BUCKET = "security"
UNSAFE = {"../../escape": "an id climbing out of the output", "nested/id": "an id with a slash",
          "/absolute": "an absolute id", "ok..dots": "dots", "..": "just dots"}
SECRETS = (FAKE_KEY_ID.encode(), FAKE_SECRET.encode())


@pytest.fixture(scope="module")
def run(s3_server):
    import os

    assert os.environ["AWS_ACCESS_KEY_ID"] == FAKE_KEY_ID and os.environ["AWS_SECRET_ACCESS_KEY"] == FAKE_SECRET
    cluster = shared_cluster()
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    video = need_shared("videos", "unlabeled", "pyfeat_single_face.mp4")
    client.upload_file(str(video), BUCKET, "in/clip.mp4")
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["video_id", "uri"])
    writer.writerows([(video_id, "clip.mp4") for video_id in UNSAFE] + [("missing", "nowhere.mp4")])
    client.put_object(Bucket=BUCKET, Key="in/manifest.csv", Body=text.getvalue().encode())
    write_untrained_models(f"s3://{BUCKET}/models")
    out = f"s3://{BUCKET}/out"
    pre = cluster.run(job_command("preprocess.py", "--input", f"s3://{BUCKET}/in/manifest.csv", "--output",
                                  f"{out}/pre", "--max-frames", "4", "--num-workers", "2", "--worker-cpus", "1"),
                      timeout=300)
    ann = cluster.run(job_command("annotate.py", "--input", f"{out}/pre", "--models", f"s3://{BUCKET}/models",
                                  "--output", f"{out}/ann", "--window", "4"), timeout=300)
    return {"cluster": cluster, "pre": pre, "ann": ann, "out": out}


def _keys(client, bucket: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_jobs_ran(run):
    assert run["pre"].status == "SUCCEEDED", run["pre"].logs[-3000:]
    assert run["ann"].status == "SUCCEEDED", run["ann"].logs[-3000:]
    assert set(shards.done_markers(f"{run['out']}/ann", PREDICTIONS)) == set(UNSAFE)


def test_no_credentials_in_outputs_logs_or_job_records(run):
    client = boto3.client("s3")
    leaks = []
    for bucket in [b["Name"] for b in client.list_buckets()["Buckets"]]:  # every object of the session
        for key in _keys(client, bucket):
            body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            leaks += [f"s3://{bucket}/{key}" for s in SECRETS if s in body or s in key.encode()]
    files = run["cluster"].session_log_files()
    assert len(files) > 20 and any("job-driver" in f.name for f in files)
    for path in files:
        data = path.read_bytes()
        leaks += [str(path) for s in SECRETS if s in data]
    for result in (run["pre"], run["ann"]):
        leaks += [f"job {result.job_id} output" for s in SECRETS if s.decode() in result.logs]
    for path in ("/api/jobs/", "/api/v0/actors?detail=true", "/api/v0/nodes?detail=true"):
        status, body = run["cluster"].get(path)
        assert status == 200
        leaks += [f"dashboard {path}" for s in SECRETS if s.decode() in str(body)]
    for stage in ("pre", "ann"):
        summary = storage.read_bytes(f"{run['out']}/{stage}/summary.json")
        failures = shards.read_failures(f"{run['out']}/{stage}").to_pylist()
        leaks += [f"{stage} summary.json/failures" for s in SECRETS if s in summary or s.decode() in str(failures)]
    failures = shards.read_failures(f"{run['out']}/pre").to_pylist()
    assert [f[schema.VIDEO_ID] for f in failures] == ["missing"]  # a failure row exists (and is clean)
    assert not leaks, f"credentials found in: {sorted(set(leaks))[:20]}"


def test_unsafe_ids_become_sanitised_keys_under_the_output(run):
    keys = _keys(boto3.client("s3"), BUCKET)
    written = [k for k in keys if not k.startswith(("in/", "models/"))]
    assert written and all(k.startswith("out/") for k in written), written
    for key in written:
        parts = key.split("/")
        assert ".." not in parts and "" not in parts and "." not in parts, key
    for video_id in UNSAFE:
        safe = storage.safe_key(video_id)
        assert "/" not in safe and ".." not in safe
        assert f"out/pre/faces/_done/{safe}.json" in keys and f"out/ann/submission/{safe}.txt" in keys
        assert f"out/ann/predictions/{safe}/part-00000.parquet" in keys
    assert len({storage.safe_key(v) for v in UNSAFE}) == len(UNSAFE)  # distinct ids never share a key
    rows = storage.read_parquet_many(shards.complete_parts(f"{run['out']}/ann", PREDICTIONS))
    assert set(rows.column(schema.VIDEO_ID).to_pylist()) == set(UNSAFE)  # the ids themselves are kept as data


def test_dashboard_and_job_server_bind_to_loopback_only(run):
    cluster = run["cluster"]
    listening = cluster.listening()
    dashboard = [(ip, port) for ip, port, _ in listening if port == cluster.dashboard_port]
    assert dashboard and all(ip == "127.0.0.1" for ip, _ in dashboard), dashboard
    wide = sorted({(ip, port) for ip, port, _ in listening if ip in ("0.0.0.0", "*", "::")})
    print("other sockets of the cluster bound to all interfaces (GCS, raylets, object managers, metrics):", wide)
    status, _ = cluster.get("/api/jobs/", auth=False)  # the job server wants the cluster's token
    assert status in (401, 403)
    assert cluster.get("/api/jobs/")[0] == 200
