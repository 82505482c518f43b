"""A training worker killed part way through train_all: the trial resumes from its last checkpoint.

jobs/train_all.py runs in-process on the session Ray (one smoke model, several short epochs). Once the
first epoch's checkpoint is on storage, the test finds the live Ray Train worker actor through the Ray
state API (class RayTrainWorker) and SIGKILLs its process. Ray Train (FailureConfig.max_failures) starts a
new worker group; fer_ray/train/loop.py loads model, optimiser, scheduler, epoch counter and per-epoch
history from `ray.train.get_checkpoint()`. The checks:

- the job exits 0 and writes checkpoint.pt, metrics.csv, summary.json and models.json;
- the killed actor is dead and a replacement worker ran (so the kill really forced a restart);
- metrics.csv has every epoch exactly once, in order;
- the epochs finished before the kill keep their original (pre-kill) timestamps, i.e. they were not
  retrained, and the later epochs all started after the kill: the run continued from the checkpoint.
  A restart from scratch would rewrite the whole history with post-kill timestamps.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import yaml

from fer_ray import storage
from tests.helpers import load_job
from tests.integration.test_train_all import SMOKE, _ckplus_videos, write_face_shards

pytestmark = pytest.mark.slow

MODEL = "expr_baseline"
EPOCHS = 6


def _train_workers() -> dict[str, dict]:
    """actor_id -> {pid, state} of every RayTrainWorker actor (Ray Train's worker class) in the session's Ray.

    Read from the GCS actor table: `ray.util.state.list_actors` needs the dashboard's API server, which the
    session cluster does not start (and on this shared machine 127.0.0.1:8265 may be someone else's Ray).
    """
    from ray._private import state

    return {actor_id: {"pid": a.get("Pid"), "state": a.get("State")}
            for actor_id, a in state.actors().items() if a.get("ActorClassName") == "RayTrainWorker"}


def _checkpoints(ray_dir: Path) -> list[str]:
    """Epoch checkpoints of MODEL that Ray Train's controller has registered (its snapshot under <output>/_ray).

    Not the epoch-* folders: a worker writes its checkpoint folder before the controller takes the report,
    and a worker killed in between legitimately restarts from the checkpoint before that one.
    """
    names: list[str] = []
    for snapshot in ray_dir.glob(f"train-*-{MODEL}/checkpoint_manager_snapshot.json"):
        try:
            results = json.loads(snapshot.read_text())["checkpoint_results"]
        except (OSError, ValueError, KeyError):  # being rewritten
            continue
        names += [r["checkpoint_dir_name"] for r in results]
    return sorted(names)


def test_killed_train_worker_resumes_from_last_checkpoint(ray_local, tmp_path):
    faces, output = tmp_path / "faces", tmp_path / "models"
    write_face_shards(str(faces), _ckplus_videos(max_subjects=8))
    raw = yaml.safe_load(SMOKE.read_text())
    raw["models"] = [m for m in raw["models"] if m["name"] == MODEL]
    raw["models"][0].update(epochs=EPOCHS, max_steps_per_epoch=3, max_val_steps=2, batch_size=8, num_workers=1)
    raw.update(max_failures=2, max_concurrent_trials=1)
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(raw))

    before = set(_train_workers())
    outcome: dict = {}

    def run_job():
        try:
            outcome["rc"] = load_job("train_all").main(
                ["--config", str(config), "--faces", str(faces), "--output", str(output)])
        except BaseException as exc:  # reported by the main thread
            outcome["error"] = exc

    job = threading.Thread(target=run_job, name="train_all", daemon=True)
    t0 = time.time()
    job.start()

    # wait for the first epoch's checkpoint on storage, then kill the worker that is training the next epoch
    ray_dir = output / "_ray"
    deadline = time.time() + 300
    while not _checkpoints(ray_dir):
        assert job.is_alive(), f"train_all ended before the first checkpoint: {outcome}"
        assert time.time() < deadline, "no epoch checkpoint within 300 s"
        time.sleep(0.2)
    alive = {a: w for a, w in _train_workers().items() if a not in before and w["state"] == "ALIVE"}
    assert len(alive) == 1, f"expected one live RayTrainWorker, got {alive}"
    (victim, worker), = alive.items()
    done_before_kill = _checkpoints(ray_dir)
    assert f"epoch-{EPOCHS - 1:04d}" not in done_before_kill, "training finished before the kill"
    os.kill(worker["pid"], signal.SIGKILL)
    killed_at = time.time()

    job.join(timeout=600)
    assert not job.is_alive(), "train_all did not finish within 600 s of the kill"
    assert "error" not in outcome, outcome
    assert outcome["rc"] == 0
    seconds = time.time() - t0

    # the kill forced a restart: the victim is dead and another worker process ran after it
    workers = _train_workers()
    assert workers[victim]["state"] == "DEAD"
    replacements = {a: w for a, w in workers.items() if a not in before and a != victim}
    assert replacements and all(w["pid"] != worker["pid"] for w in replacements.values()), workers

    # outputs of a successful run
    model_dir = storage.join(str(output), MODEL)
    for name in ("checkpoint.pt", "metrics.csv", "summary.json", "config.yaml"):
        assert storage.exists(storage.join(model_dir, name)), name
    index = storage.read_json(storage.join(str(output), "models.json"))
    assert index["models"][MODEL]["epochs"] == EPOCHS

    # every epoch once; the pre-kill epochs kept from the checkpoint, the rest trained after the kill
    rows = list(csv.DictReader(io.StringIO(storage.read_bytes(storage.join(model_dir, "metrics.csv")).decode())))
    assert [int(r["epoch"]) for r in rows] == list(range(EPOCHS))
    before_kill = [int(r["epoch"]) for r in rows if float(r["epoch_end"]) < killed_at]
    after_kill = [int(r["epoch"]) for r in rows if float(r["epoch_start"]) > killed_at]
    assert before_kill and after_kill, (killed_at, rows)
    assert before_kill + after_kill == list(range(EPOCHS)), (
        f"epochs {before_kill} ended before the kill at {killed_at:.1f}, {after_kill} started after it: "
        "the restarted worker did not continue from the checkpoint")
    # it resumed from the newest checkpoint there was when the worker died (at least the one seen)
    assert after_kill[0] >= len(done_before_kill), (done_before_kill, after_kill)
    print(f"killed pid {worker['pid']} after {done_before_kill}; epochs {before_kill} kept, "
          f"{after_kill} after the kill; {seconds:.0f} s")
