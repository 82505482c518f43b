"""Secrets and exposure: cluster jobs against moto S3 with the fake credentials (this module's annotate of
videos, and every job the session ran on the cluster before it: the README flow, the fault runs).

The credentials reach the nodes the way an instance role or a Kubernetes secret would: in the environment of
the Ray processes, never on a command line, in a config file or in the job's runtime_env. Then the key id
and the secret must appear nowhere the project writes or Ray records: no output object, no log file of any
node's Ray session (logs of every job the test session ran on this cluster), no job output, not
summary.json or a failure row, not the job records of the job server. Video ids with `..` and `/` become
sanitised object keys under the output prefix. The dashboard and job server listen on 127.0.0.1 only, and
refuse requests without the cluster's token. A manifest whose label files point at a file full of secret-looking
variables (outside the input folder, or inside it but not a label file) gets failure rows with specific reasons,
and nothing of that file appears in any output, job log or Ray session log.
"""

from __future__ import annotations

import csv
import io
import shutil
import uuid
from pathlib import Path

import boto3
import pytest

from fer_ray import labels, schema, shards, storage
from fer_ray.infer.postprocess import PREDICTIONS
from tests.cluster import job_command, shared_cluster
from tests.conftest import FAKE_KEY_ID, FAKE_SECRET, need_shared
from tests.helpers import write_untrained_models

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]

BUCKET = "security"
UNSAFE = {"../../escape": "an id climbing out of the output", "nested/id": "an id with a slash",
          "/absolute": "an absolute id", "ok..dots": "dots", "..": "just dots"}
SECRETS = (FAKE_KEY_ID.encode(), FAKE_SECRET.encode())


def _annotate_job() -> tuple[str, str]:
    """Videos on S3 under unsafe ids (and one missing) to annotate; returns (the job's command, its output)."""
    import os

    assert os.environ["AWS_ACCESS_KEY_ID"] == FAKE_KEY_ID and os.environ["AWS_SECRET_ACCESS_KEY"] == FAKE_SECRET
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
    # one job: annotate reads the videos itself (decode -> detect -> align into <out>/faces, the preprocess
    # stages), then predicts. The preprocess job's own S3 runs are the multi-node and fault tests' jobs, which
    # ran on this cluster with the same credentials before this module (tests/conftest.py orders it last), and
    # whose objects and logs the scans below read too.
    command = job_command("annotate.py", "--input", f"s3://{BUCKET}/in/manifest.csv", "--models",
                          f"s3://{BUCKET}/models", "--output", out, "--window", "4", "--max-frames", "4",
                          "--num-workers", "1")
    return command, out


@pytest.fixture(scope="module")
def jobs(s3_server, tmp_path_factory):
    """The module's two cluster jobs, side by side (neither reads what the other writes): the annotate of
    unsafe ids on S3 and the preprocess of label files full of secrets (below)."""
    cluster = shared_cluster()
    (annotate, out), (secret, secret_output) = _annotate_job(), _secret_preprocess_job(tmp_path_factory)
    ann, secret_result = cluster.run_side_by_side([annotate, secret], timeout=300)
    return {"cluster": cluster, "ann": ann, "out": out, "secret": secret_result, "secret_output": secret_output}


@pytest.fixture(scope="module")
def run(jobs):
    return {"cluster": jobs["cluster"], "ann": jobs["ann"], "out": jobs["out"]}


def _keys(client, bucket: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_jobs_ran(run):
    assert run["ann"].status == "SUCCEEDED", run["ann"].logs[-3000:]
    assert set(shards.done_markers(run["out"], PREDICTIONS)) == set(UNSAFE)
    assert set(shards.done_markers(run["out"], "faces")) == set(UNSAFE)


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
    for job in run["cluster"].client.list_jobs():  # every job this cluster ran, this module's and earlier ones
        logs = run["cluster"].client.get_job_logs(job.submission_id)
        leaks += [f"job {job.submission_id} output" for s in SECRETS if s.decode() in logs]
    for path in ("/api/jobs/", "/api/v0/actors?detail=true", "/api/v0/nodes?detail=true"):
        status, body = run["cluster"].get(path)
        assert status == 200
        leaks += [f"dashboard {path}" for s in SECRETS if s.decode() in str(body)]
    summary = storage.read_bytes(f"{run['out']}/summary.json")
    failures = shards.read_failures(run["out"]).to_pylist()
    leaks += ["summary.json/failures" for s in SECRETS if s in summary or s.decode() in str(failures)]
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
        assert f"out/faces/_done/{safe}.json" in keys and f"out/submission/{safe}.txt" in keys
        assert f"out/predictions/{safe}/part-00000.parquet" in keys
    assert len({storage.safe_key(v) for v in UNSAFE}) == len(UNSAFE)  # distinct ids never share a key
    rows = storage.read_parquet_many(shards.complete_parts(run["out"], PREDICTIONS))
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


# ------------------------------------------------------------------------- inputs cannot read what they should not

SECRET_MARKER = f"FERRAYSECRET{uuid.uuid4().hex}"  # unique per run: found anywhere means it leaked
SECRET_FILE = (f"AWS_SECRET_ACCESS_KEY={SECRET_MARKER}\nAWS_ACCESS_KEY_ID=AKIA{SECRET_MARKER[-16:]}\n"
               f"password={SECRET_MARKER}\n-----BEGIN RSA PRIVATE KEY-----\n{SECRET_MARKER}\n"
               "-----END RSA PRIVATE KEY-----\n")  # the marker on line 1: a quoted header would leak it
LABEL_CASES = {  # video_id -> (label_uri in the manifest, the specific reason its failure row gives)
    "outside": ("../private/env.txt", "label file is outside the allowed input roots"),
    "inside_not_labels": ("env.txt", ":1: wrong header"),
    "inside_secret_line": ("secret_line.txt", ":3: not an integer"),
}


def _files_mentioning(root: Path, marker: str) -> list[str]:
    """Files under root holding the marker: raw bytes, and Parquet decoded (its pages may be compressed)."""
    import pyarrow.parquet as pq

    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.suffix == ".parquet":
            data += str(pq.read_table(path).to_pylist()).encode()
        if marker.encode() in data:
            found.append(str(path))
    return found


def _secret_preprocess_job(tmp_path_factory) -> tuple[str, Path]:
    """A manifest whose label files point at a file full of secret-looking variables: once outside the input
    folder, once inside it (not a label file at all), once a label file with a secret on one line; returns
    (the preprocess job's command, its output)."""
    root = tmp_path_factory.mktemp("secrets")
    (root / "in").mkdir()
    (root / "private").mkdir()
    shutil.copyfile(need_shared("videos", "unlabeled", "pyfeat_single_face.mp4"), root / "in" / "clip.mp4")
    (root / "private" / "env.txt").write_text(SECRET_FILE)
    (root / "in" / "env.txt").write_text(SECRET_FILE)
    (root / "in" / "secret_line.txt").write_text(f"{labels.EXPR_HEADER}\n0\npassword={SECRET_MARKER}\n")
    with open(root / "in" / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("video_id", "uri", "label_uri"), ("plain", "clip.mp4", "")]
                                     + [(v, "clip.mp4", label) for v, (label, _) in LABEL_CASES.items()])
    output = root / "out"
    command = job_command("preprocess.py", "--input", root / "in" / "manifest.csv", "--output", output,
                          "--max-frames", "4", "--num-workers", "1", "--worker-cpus", "1")
    return command, output


@pytest.fixture(scope="module")
def secret_run(jobs):
    return {"cluster": jobs["cluster"], "result": jobs["secret"], "output": jobs["secret_output"]}


def test_label_files_full_of_secrets_are_refused_and_never_quoted(secret_run):
    result, output = secret_run["result"], secret_run["output"]
    assert result.status == "SUCCEEDED", result.logs[-3000:]  # the job finishes the rest
    assert set(shards.done_markers(str(output), "faces")) == {"plain"}
    failures = {r[schema.VIDEO_ID]: r[schema.ERROR] for r in shards.read_failures(str(output)).to_pylist()}
    assert set(failures) == set(LABEL_CASES)
    for video_id, (_, reason) in LABEL_CASES.items():
        assert reason in failures[video_id], (video_id, failures[video_id])
    summary = (output / "summary.json").read_text()
    assert all(video_id in summary for video_id in LABEL_CASES)
    leaks = _files_mentioning(output, SECRET_MARKER)  # every output file: JSON, YAML, Parquet
    leaks += ["job output"] if SECRET_MARKER in result.logs else []  # the driver's stdout, stderr and logging
    leaks += _files_mentioning(secret_run["cluster"].root, SECRET_MARKER)  # every node's Ray session logs
    assert not leaks, f"the secret file's contents leaked into: {leaks[:20]}"
