"""The command lines of cluster/README.md section 2, read from the file, as `ray job submit --working-dir .
-- python jobs/...` on a real 3-node Ray cluster on 127.0.0.1 (tests/cluster.py: a CPU-less head plus two
2-CPU worker nodes, each its own `ray start`, temp dir and ports): preprocess -> train_all -> annotate ->
evaluate -> export, GPU flags mapped to CPU, reading videos from and writing to S3 (the moto server) under
the README's own bucket. Part way through the annotate job a worker node is SIGKILLed (a lost machine) once
some of its logits work has finished, and a replacement node joins (like an autoscaler). Checks that each
job read what the one before wrote, that the work really spread over both worker nodes (state API: node ids
of the jobs' tasks and actors), that the annotate job finished despite the lost node and a rerun skips every
video, and that the outputs are complete and identical to a single-node run of the same jobs (the session's
in-process local Ray). One flow serves all four checks: the cluster jobs are the expensive part of this
module. (Killing a training worker belongs to the train_all tests.)
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from fer_ray import schema, shards, storage
from fer_ray.infer.postprocess import PREDICTIONS, submission_uri
from tests.cluster import job_command, node_killer, shared_cluster, worker_names
from tests.helpers import check_complete, load_job, upload_videos

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]

VIDEOS = {
    "tw_TW01": "labeled/tw_TW01.mp4",
    "tw_TW07": "labeled/tw_TW07.mp4",
    "pyfeat_single_face": "unlabeled/pyfeat_single_face.mp4",
    "pyfeat_no_face": "unlabeled/pyfeat_no_face.mp4",
}


def _nodes(work: list[dict], name_part: str) -> set[str]:
    return {w["node"] for w in work if name_part in w["name"]}


def _faces(output: str) -> pd.DataFrame:
    table = shards.read_table(output, "faces", schema.FACES_SCHEMA).to_pandas()
    return table.sort_values([schema.VIDEO_ID, schema.FRAME_INDEX]).reset_index(drop=True)


def _predictions(output: str) -> pd.DataFrame:
    table = storage.read_parquet_many(shards.complete_parts(output, PREDICTIONS)).to_pandas()
    return table.sort_values([schema.VIDEO_ID, schema.FRAME_INDEX]).reset_index(drop=True)


# ---------------------------------------------------------------------- cluster/README.md, as documented

README_BUCKET = "fer-ray-data"  # the README's bucket, created on the moto server: its URIs run unchanged
LABELLED = ("tw_TW01", "tw_TW07")
# The loopback cluster is two 2-CPU worker nodes and no GPU, so some documented values cannot run as written.
# Each mapping below is deliberate; every other flag and value (URIs included) is the README's.
SMALL = ["--stride", "10", "--max-frames", "40"]  # added: 40 frames per video (both labelled videos then
#                                                   hold Negative frames, so the negative net has data)


# written by the fixture: 1.5 CPUs per logits actor, and small batches, so many logits tasks (the node killed
# mid-annotation dies with work done, in flight and still queued); the single-node run uses the same batches
ANNOTATE_CPU_CONFIG = f"s3://{README_BUCKET}/annotate-cpu.yaml"
ANNOTATE_LOCAL_CONFIG = f"s3://{README_BUCKET}/annotate-local.yaml"


def cpu_equivalent(job: str, args: list[str]) -> list[str]:
    """The README's argv for `job`, with GPU flags replaced by their CPU equivalents and worker counts cut
    to what two 2-CPU nodes hold. GPU shares become 1.5 CPUs per actor, so two actors of a pool cannot share
    a node."""
    out, i = [], 0
    while i < len(args):
        flag, value = args[i], args[i + 1] if i + 1 < len(args) else None
        if flag == "--device" and value == "cuda":  # no GPU here: MTCNN and alignment on CPU
            out += ["--device", "cpu"]
        elif flag == "--worker-gpus":  # GPU shares -> 1.5 CPUs per actor (detector / logits actors)
            out += ["--worker-cpus", "1.5"] if job == "preprocess" else ["--config", ANNOTATE_CPU_CONFIG]
        elif flag == "--detect-gpus":  # annotate's detector actors: their CPU default (1 each)
            pass
        elif flag == "--num-workers":  # 8 (preprocess) / 4 (annotate) actors per pool -> one per worker node
            out += [flag, "2"]
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


def _value(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1].rstrip("/")


# preprocess -> train_all -> annotate -> (evaluate, export): evaluate and export both read only annotate's output
FLOW_WAVES = (("preprocess",), ("train_all",), ("annotate",), ("evaluate", "export"))


@pytest.fixture(scope="module")
def readme_flow(s3_server):
    """Section 2 of cluster/README.md, read from the file, submitted in order with `ray job submit` semantics;
    each job's result and where its work ran."""
    import boto3

    from tests.cluster import readme_jobs
    from tests.conftest import need_shared

    upload_videos(README_BUCKET, VIDEOS)  # s3://fer-ray-data/videos/ (with each labelled video's EXPR txt)
    client = boto3.client("s3")
    for video_id in LABELLED:  # s3://fer-ray-data/labels/: the raw label input evaluate reads
        client.upload_file(str(need_shared("videos", VIDEOS[video_id]).with_suffix(".txt")), README_BUCKET,
                           f"labels/{video_id}.txt")
    storage.write_text(ANNOTATE_CPU_CONFIG, "worker_cpus: 1.5\nbatch_size: 8\n")
    storage.write_text(ANNOTATE_LOCAL_CONFIG, "batch_size: 8\n")
    cluster = shared_cluster()
    flow = [j for j in readme_jobs() if j.section == "2" and j.submitted]
    assert [j.job for j in flow] == [job for wave in FLOW_WAVES for job in wave]
    results, argvs, killed, summaries = {}, {}, {}, {}
    workers = set(worker_names(cluster))  # before the kill
    for wave in FLOW_WAVES:  # each wave's jobs read only what earlier waves wrote: submitted side by side
        lines = [line for line in flow if line.job in wave]
        submitted, start = {}, time.monotonic()
        for line in lines:
            argvs[line.job] = cpu_equivalent(line.job, line.args)
            submitted[line.job] = cluster.submit(job_command(f"{line.job}.py", *argvs[line.job]))
        if "evaluate" in wave:  # beside the readers of annotate's output: annotate again, which skips every video
            submitted["annotate rerun"] = cluster.submit(job_command("annotate.py", *argvs["annotate"]))
        for job, job_id in submitted.items():
            on_poll = None
            if job == "annotate":  # a worker node dies part way through
                on_poll, killed = node_killer(cluster, job_id, _value(argvs["annotate"], "--output"))
            result = results[job] = cluster.wait(job_id, timeout=900, poll=0.5, on_poll=on_poll)
            print(f"{job}: done {time.monotonic() - start:.0f}s after its wave started  {' '.join(argvs.get(job, []))}")
            assert result.status == "SUCCEEDED", f"{job} {argvs.get(job)}:\n{result.logs[-4000:]}"
            if job.startswith("annotate"):  # the rerun rewrites it
                summaries[job] = storage.read_json(f"{_value(argvs['annotate'], '--output')}/summary.json")
    print(f"kill: {killed}")
    return {"cluster": cluster, "results": results, "argv": argvs, "args": {j.job: j.args for j in flow},
            "workers": workers, "killed": killed, "summaries": summaries,
            "work": {job: cluster.placements(results[job].job_id) for job in ("preprocess", "train_all", "annotate")}}


@pytest.mark.timeout(2400)  # five jobs in a row, two of them training: more than one job's 900 s default
def test_readme_commands_run_on_the_cluster(readme_flow):
    """Each job read what the one before it wrote: preprocess -> train_all -> annotate -> evaluate -> export."""
    args = readme_flow["args"]
    faces, models = _value(args["preprocess"], "--output"), _value(args["train_all"], "--output")
    annotations = _value(args["annotate"], "--output")
    assert set(shards.done_markers(faces, "faces")) == set(VIDEOS)
    index = storage.read_json(f"{models}/models.json")  # what train_all wrote is what annotate read
    assert set(index["models"]) == {"coarse_iresnet", "negative_repvgg"}
    predictions = _predictions(annotations)
    assert set(shards.done_markers(annotations, PREDICTIONS)) == set(VIDEOS)
    assert set(predictions[schema.MODEL_VERSION]) and (predictions[schema.SYSTEM] == "cfc_sp").all()
    assert storage.exists(f"{_value(args['evaluate'], '--output')}/metrics.json")
    exported = storage.list_files(_value(args["export"], "--output"))
    assert {storage.stem(uri) for uri in exported} >= set(VIDEOS), exported
    nodes = readme_flow["cluster"].node_ids()
    assert len(nodes) == 3 and len(set(nodes.values())) == 3  # head + 2 workers (one a replacement), distinct ids


def test_annotate_finished_after_losing_a_node_and_a_rerun_skips_everything(readme_flow):
    """The node killed once some logits work had finished: the job still succeeded with every video
    annotated (test_outputs_identical_to_a_single_node_run: every frame exactly once, as on one node), every
    done marker's parts exist, and annotating again skips every video."""
    killed, summaries = readme_flow["killed"], readme_flow["summaries"]
    assert killed, "the annotate job ended before any logits task finished: nothing was killed"
    assert killed["done_before"] < len(VIDEOS), killed  # part way: videos were still unannotated
    assert killed["node"] in readme_flow["workers"]
    first = summaries["annotate"]
    assert first["videos_failed"] == 0 and first["videos_annotated"] == len(VIDEOS), first
    assert set(check_complete(_value(readme_flow["args"]["annotate"], "--output"), PREDICTIONS)) == set(VIDEOS)
    again = summaries["annotate rerun"]
    assert again["videos_annotated"] == 0 and again["videos_skipped"] == len(VIDEOS), again


STAGES = ("DecodeStage", "DetectStage", "PreprocessStage", "LogitsStage", "SafeVideoPostprocess")


def test_work_spread_over_both_worker_nodes(readme_flow):
    """Every stage actor of preprocess and annotate, and everything that computes in train_all, ran on the
    worker nodes, never on the CPU-less head, and the flow used both worker nodes. (Which node a given actor
    lands on is Ray's choice: an actor pool may start its second actor after the work is done.) `workers`:
    the two there were before the kill, and the replacement."""
    work = readme_flow["work"]
    workers = readme_flow["workers"] | set(readme_flow["killed"].get("replacement", ()))
    pre, ann = work["preprocess"], work["annotate"]
    print("preprocess:", sorted({(w["kind"], w["name"], w["node"]) for w in pre}))
    print("annotate:", sorted({(w["kind"], w["name"], w["node"]) for w in ann}))
    stage_nodes = {w["node"] for w in pre + ann if any(stage in w["name"] for stage in STAGES)}
    assert _nodes(pre, "DetectStage") and _nodes(ann, "LogitsStage") and stage_nodes <= workers
    # the head has no CPUs: no stage ran there (only Ray Data's 0-CPU bookkeeping actors and the drivers)
    assert "head" not in {w["node"] for w in pre + ann if "MapBatches" in w["name"] or "Shuffle" in w["name"]}
    # Training: Ray Train pins its 0-CPU PlacementGroupCleaner to the driver's node (the head, under
    # `ray job submit`); everything that computes (the train workers, the data tasks, the trials and their
    # controllers) is on worker nodes.
    computing = [w for w in work["train_all"] if not w["name"].startswith("PlacementGroupCleaner")]
    assert {w["node"] for w in computing} <= workers
    assert {w["node"] for w in work["train_all"] if w["name"] == "RayTrainWorker"} & workers
    assert stage_nodes | {w["node"] for w in computing} >= readme_flow["workers"]


def test_outputs_identical_to_a_single_node_run(readme_flow, ray_local):
    """The same preprocess and annotate argv, in this process on the session's single-node local Ray (worker
    shares that fit 2 CPUs; they do not change outputs): the same faces and the same predictions."""
    args, argv = readme_flow["args"], readme_flow["argv"]
    faces, annotations = _value(args["preprocess"], "--output"), _value(args["annotate"], "--output")
    single = f"s3://{README_BUCKET}/single"

    def local(job: str, output: str, **replace: str) -> list[str]:
        out, i = [], 0
        while i < len(argv[job]):
            flag = argv[job][i]
            value = {"--output": output, "--num-workers": "1", "--worker-cpus": "0.5", **replace}.get(flag)
            out += [flag, value if value is not None else argv[job][i + 1]] if i + 1 < len(argv[job]) else [flag]
            i += 2
        return [ANNOTATE_LOCAL_CONFIG if a == ANNOTATE_CPU_CONFIG else a for a in out]

    assert load_job("preprocess").main(local("preprocess", f"{single}/faces") + ["--strict"]) == 0
    assert load_job("annotate").main(local("annotate", f"{single}/annotations", **{"--input": f"{single}/faces"})
                                     + ["--strict"]) == 0
    assert shards.read_failures(faces).num_rows == 0
    a, b = _faces(faces), _faces(f"{single}/faces")
    exact = [schema.VIDEO_ID, schema.FRAME_INDEX, schema.TIMESTAMP, schema.LABEL, schema.REASON,
             schema.NUM_FRAMES, schema.FACE]
    pd.testing.assert_frame_equal(a[exact], b[exact])
    found = a[schema.REASON].isna()
    assert found.sum() > 0
    assert np.allclose(np.stack(a.loc[found, schema.BBOX]), np.stack(b.loc[found, schema.BBOX]))

    p, q = _predictions(annotations), _predictions(f"{single}/annotations")
    assert not p.duplicated([schema.VIDEO_ID, schema.FRAME_INDEX]).any()
    for video_id, rows in p.groupby(schema.VIDEO_ID):
        num_frames = int(a.loc[a[schema.VIDEO_ID] == video_id, schema.NUM_FRAMES].iloc[0])
        assert rows[schema.FRAME_INDEX].tolist() == list(range(num_frames)), video_id
    same = [schema.VIDEO_ID, schema.FRAME_INDEX, schema.LABEL, schema.LABEL_NAME, schema.FACE_FOUND, schema.FILLED]
    pd.testing.assert_frame_equal(p[same], q[same])
    assert np.allclose(np.stack(p[schema.PROBS]), np.stack(q[schema.PROBS]), atol=1e-5)
    for video_id in VIDEOS:
        assert storage.read_bytes(submission_uri(annotations, video_id)) == \
            storage.read_bytes(submission_uri(f"{single}/annotations", video_id)), video_id
