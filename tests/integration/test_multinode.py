"""Jobs as `ray job submit --working-dir . -- python jobs/...` on a real 3-node Ray cluster on 127.0.0.1
(tests/cluster.py: a CPU-less head plus two 2-CPU worker nodes, each its own `ray start`, temp dir and ports):
preprocess -> annotate, then the command lines of cluster/README.md section 2, read from the file (preprocess ->
train_all -> annotate -> evaluate -> export, GPU flags mapped to CPU), reading videos from and writing to S3
(the moto server). Checks that the work really spread over
both worker nodes (state API: node ids of the jobs' tasks and actors) and that the outputs are complete and
identical to a single-node run of the same jobs (the session's in-process local Ray).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fer_ray import schema, shards, storage
from fer_ray.infer.postprocess import PREDICTIONS, submission_uri
from tests.cluster import job_command, shared_cluster, worker_names
from tests.helpers import load_job, upload_videos, write_untrained_models

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]

VIDEOS = {
    "tw_TW01": "labeled/tw_TW01.mp4",
    "tw_TW07": "labeled/tw_TW07.mp4",
    "pyfeat_single_face": "unlabeled/pyfeat_single_face.mp4",
    "pyfeat_no_face": "unlabeled/pyfeat_no_face.mp4",
}
FRAMES = ["--stride", "10", "--max-frames", "12"]  # settings that change outputs: the same in both runs
BUCKET = "multinode"


@pytest.fixture(scope="module")
def bucket(s3_server):
    upload_videos(BUCKET, VIDEOS)
    write_untrained_models(f"s3://{BUCKET}/models")
    return f"s3://{BUCKET}"


@pytest.fixture(scope="module")
def multi(bucket):
    """Both jobs on the cluster; one preprocess actor (1.5 of 2 CPUs) fits a worker node, so the pool of two
    must use both; annotate's logits actors likewise (config file: worker_cpus 1.5)."""
    cluster = shared_cluster()
    out = f"{bucket}/multi"
    pre = cluster.run(job_command("preprocess.py", "--input", f"{bucket}/videos/", "--output", f"{out}/pre",
                                  *FRAMES, "--num-workers", "2", "--worker-cpus", "1.5", "--strict"), timeout=400)
    storage.write_text(f"{bucket}/annotate-multi.yaml", "worker_cpus: 1.5\nnum_workers: 2\nbatch_size: 16\n")
    ann = cluster.run(job_command("annotate.py", "--config", f"{bucket}/annotate-multi.yaml", "--input",
                                  f"{out}/pre", "--models", f"{bucket}/models", "--output", f"{out}/ann",
                                  "--strict"), timeout=400)
    return {"cluster": cluster, "pre": pre, "ann": ann, "out": out, "workers": worker_names(cluster),
            "pre_work": cluster.placements(pre.job_id), "ann_work": cluster.placements(ann.job_id)}


@pytest.fixture(scope="module")
def single(bucket, ray_local):
    """The same two jobs, in this process, on the session's single-node local Ray."""
    out = f"{bucket}/single"
    assert load_job("preprocess").main(["--input", f"{bucket}/videos/", "--output", f"{out}/pre", *FRAMES,
                                        "--num-workers", "2", "--worker-cpus", "0.5", "--strict"]) == 0
    assert load_job("annotate").main(["--input", f"{out}/pre", "--models", f"{bucket}/models",
                                      "--output", f"{out}/ann", "--strict"]) == 0
    return out


def test_jobs_succeed_on_three_nodes(multi):
    for name in ("pre", "ann"):
        result = multi[name]
        assert result.status == "SUCCEEDED", result.logs[-4000:]
    nodes = multi["cluster"].node_ids()
    assert len(nodes) == 3 and len(set(nodes.values())) == 3  # head + 2 workers, distinct node ids
    print(f"preprocess job {multi['pre'].seconds:.0f}s, annotate job {multi['ann'].seconds:.0f}s")


def _nodes(work: list[dict], name_part: str) -> set[str]:
    return {w["node"] for w in work if name_part in w["name"]}


def test_work_spread_over_both_worker_nodes(multi):
    workers = set(multi["workers"])
    pre, ann = multi["pre_work"], multi["ann_work"]
    print("preprocess:", sorted({(w["kind"], w["name"], w["node"]) for w in pre}))
    print("annotate:", sorted({(w["kind"], w["name"], w["node"]) for w in ann}))
    assert _nodes(pre, "PreprocessStage") == workers  # the detector actors: one on each worker node
    assert {w["node"] for w in ann} == workers  # annotate's tasks and actors used both nodes
    assert _nodes(ann, "LogitsStage") <= workers and _nodes(ann, "LogitsStage")
    # the head has no CPUs: no stage ran there (only Ray Data's 0-CPU bookkeeping actors and the drivers)
    assert "head" not in {w["node"] for w in pre + ann if "MapBatches" in w["name"] or "Shuffle" in w["name"]}


def _faces(output: str) -> pd.DataFrame:
    table = shards.read_table(output, "faces", schema.FACES_SCHEMA).to_pandas()
    return table.sort_values([schema.VIDEO_ID, schema.FRAME_INDEX]).reset_index(drop=True)


def _predictions(output: str) -> pd.DataFrame:
    table = storage.read_parquet_many(shards.complete_parts(output, PREDICTIONS)).to_pandas()
    return table.sort_values([schema.VIDEO_ID, schema.FRAME_INDEX]).reset_index(drop=True)


def test_outputs_complete_and_identical_to_single_node(multi, single):
    multi_out = multi["out"]
    for stage, table in (("pre", "faces"), ("ann", PREDICTIONS)):
        assert set(shards.done_markers(f"{multi_out}/{stage}", table)) == set(VIDEOS)
        assert set(shards.done_markers(f"{single}/{stage}", table)) == set(VIDEOS)
    assert shards.read_failures(f"{multi_out}/pre").num_rows == 0
    a, b = _faces(f"{multi_out}/pre"), _faces(f"{single}/pre")
    exact = [schema.VIDEO_ID, schema.FRAME_INDEX, schema.TIMESTAMP, schema.LABEL, schema.REASON,
             schema.NUM_FRAMES, schema.FACE]
    pd.testing.assert_frame_equal(a[exact], b[exact])
    found = a[schema.REASON].isna()
    assert found.sum() > 0
    assert np.allclose(np.stack(a.loc[found, schema.BBOX]), np.stack(b.loc[found, schema.BBOX]))

    p, q = _predictions(f"{multi_out}/ann"), _predictions(f"{single}/ann")
    assert not p.duplicated([schema.VIDEO_ID, schema.FRAME_INDEX]).any()
    for video_id, rows in p.groupby(schema.VIDEO_ID):
        num_frames = int(a.loc[a[schema.VIDEO_ID] == video_id, schema.NUM_FRAMES].iloc[0])
        assert rows[schema.FRAME_INDEX].tolist() == list(range(num_frames)), video_id
    same = [schema.VIDEO_ID, schema.FRAME_INDEX, schema.LABEL, schema.LABEL_NAME, schema.FACE_FOUND, schema.FILLED]
    pd.testing.assert_frame_equal(p[same], q[same])
    assert np.allclose(np.stack(p[schema.PROBS]), np.stack(q[schema.PROBS]), atol=1e-5)
    for video_id in VIDEOS:
        assert storage.read_bytes(submission_uri(f"{multi_out}/ann", video_id)) == \
            storage.read_bytes(submission_uri(f"{single}/ann", video_id)), video_id


# ---------------------------------------------------------------------- cluster/README.md, as documented

README_BUCKET = "fer-ray-data"  # the README's bucket, created on the moto server: its URIs run unchanged
LABELLED = ("tw_TW01", "tw_TW07")
# The loopback cluster is two 2-CPU worker nodes and no GPU, so some documented values cannot run as written.
# Each mapping below is deliberate; every other flag and value (URIs included) is the README's.
SMALL = ["--stride", "10", "--max-frames", "40"]  # added: 40 frames per video (both labelled videos then
#                                                   hold Negative frames, so the negative net has data)


def cpu_equivalent(job: str, args: list[str]) -> list[str]:
    """The README's argv for `job`, with GPU flags replaced by their CPU equivalents and worker counts cut
    to what two 2-CPU nodes hold."""
    out, i = [], 0
    while i < len(args):
        flag, value = args[i], args[i + 1] if i + 1 < len(args) else None
        if flag == "--device" and value == "cuda":  # no GPU here: MTCNN and alignment on CPU
            out += ["--device", "cpu"]
        elif flag in ("--worker-gpus", "--detect-gpus"):  # GPU shares: CPU actors instead ...
            if job == "preprocess":  # ... of 1 CPU each for the detector actors (annotate keeps its default)
                out += ["--worker-cpus", "1"]
        elif flag == "--num-workers":  # 8 (preprocess) / 4 (annotate) actors per pool -> what 4 CPUs hold
            out += [flag, "2" if job == "preprocess" else "1"]
        elif flag == "--decode-workers":  # 16 decode actors -> 1 (0.5 CPU)
            out += [flag, "1"]
        elif flag == "--config" and job == "train_all":
            # configs/cfc_sp.yaml (IR152, Swin-S, HRNet, RepVGG at full size, pretrained weights from S3) does not
            # train on 2 CPUs: the smoke config's CFC-SP stand-ins do, one coarse net plus the negative net
            # (what annotate's default cfc_sp system needs).
            out += [flag, "configs/smoke.yaml", "--models", "coarse_iresnet,negative_repvgg"]
        else:
            out.append(flag)
            i += 1
            continue
        i += 2
    if job in ("preprocess", "annotate"):
        out += SMALL
    return out


@pytest.fixture(scope="module")
def readme_bucket(s3_server):
    import boto3

    from tests.conftest import need_shared

    upload_videos(README_BUCKET, VIDEOS)  # s3://fer-ray-data/videos/ (with each labelled video's EXPR txt)
    client = boto3.client("s3")
    for video_id in LABELLED:  # s3://fer-ray-data/labels/: the raw label input evaluate reads
        client.upload_file(str(need_shared("videos", VIDEOS[video_id]).with_suffix(".txt")), README_BUCKET,
                           f"labels/{video_id}.txt")
    return f"s3://{README_BUCKET}"


@pytest.mark.timeout(2400)  # five jobs in a row, two of them training: more than one job's 900 s default
def test_readme_commands_run_on_the_cluster(readme_bucket):
    """Section 2 of cluster/README.md, read from the file, submitted in order with `ray job submit` semantics:
    preprocess -> train_all -> annotate -> evaluate -> export, each reading the previous one's output."""
    from tests.cluster import readme_jobs

    cluster = shared_cluster()
    flow = [j for j in readme_jobs() if j.section == "2" and j.submitted]
    assert [j.job for j in flow] == ["preprocess", "train_all", "annotate", "evaluate", "export"]
    results = {}
    for line in flow:
        argv = cpu_equivalent(line.job, line.args)
        result = cluster.run(job_command(f"{line.job}.py", *argv), timeout=900)
        print(f"{line.job}: {result.seconds:.0f}s  {' '.join(argv)}")
        assert result.status == "SUCCEEDED", f"{line.job} {argv}:\n{result.logs[-4000:]}"
        results[line.job] = result
    args = {line.job: line.args for line in flow}

    def value(job, flag):
        return args[job][args[job].index(flag) + 1].rstrip("/")

    faces, models, annotations = value("preprocess", "--output"), value("train_all", "--output"), \
        value("annotate", "--output")
    assert set(shards.done_markers(faces, "faces")) == set(VIDEOS)
    index = storage.read_json(f"{models}/models.json")  # what train_all wrote is what annotate read
    assert set(index["models"]) == {"coarse_iresnet", "negative_repvgg"}
    predictions = _predictions(annotations)
    assert set(shards.done_markers(annotations, PREDICTIONS)) == set(VIDEOS)
    assert set(predictions[schema.MODEL_VERSION]) and (predictions[schema.SYSTEM] == "cfc_sp").all()
    assert storage.exists(f"{value('evaluate', '--output')}/metrics.json")
    exported = storage.list_files(value("export", "--output"))
    assert {storage.stem(uri) for uri in exported} >= set(VIDEOS), exported

    # Where training ran: Ray Train pins its 0-CPU PlacementGroupCleaner to the driver's node (the head, under
    # `ray job submit`); everything that computes (the train workers, the data tasks, the trials and their
    # controllers) is on worker nodes.
    workers = set(worker_names(cluster))
    work = cluster.placements(results["train_all"].job_id)
    computing = [w for w in work if not w["name"].startswith("PlacementGroupCleaner")]
    assert {w["node"] for w in computing} <= workers
    assert {w["node"] for w in work if w["name"] == "RayTrainWorker"} & workers
