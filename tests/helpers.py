"""Test helpers that build real inputs: model checkpoints with a models.json index, videos on S3."""

from __future__ import annotations

from fer_ray.models.smoke import SMOKE_MODELS, write_untrained_models  # noqa: F401 - the library's, re-exported


def load_job(name: str):
    """jobs/<name>.py as a module, to call its main(argv) in-process (jobs/ holds scripts, not a package)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "jobs" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"fer_ray_job_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses in the script look their module up by name
    spec.loader.exec_module(module)
    return module


def photo_set(folder, pick) -> None:
    """A user's own labelled photos: the taiwanese_dev photos that `pick(rows)` chooses from its labels.csv
    rows, copied under <folder>/images with a labels.csv (path, label, subject) beside them."""
    import csv
    import shutil

    from fer_ray import storage
    from tests.conftest import need_shared

    source = need_shared("images", "taiwanese_dev")
    rows = pick(list(csv.DictReader(open(source / "labels.csv", newline=""))))
    (folder / "images").mkdir(parents=True)
    with open(folder / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "subject"])
        writer.writeheader()
        for row in rows:
            name = storage.basename(row["path"])
            shutil.copy(source / row["path"], folder / "images" / name)
            writer.writerow({"path": f"images/{name}", "label": row["label"], "subject": row["subject"]})


def upload_videos(bucket: str, videos: dict[str, str]) -> None:
    """Shared dev videos (video_id -> file path under shared/data/videos) and their EXPR txt files
    into s3://<bucket>/videos/ on the test S3 server."""
    import boto3

    from tests.conftest import need_shared

    client = boto3.client("s3")
    client.create_bucket(Bucket=bucket)
    for video_id, rel in videos.items():
        path = need_shared("videos", rel)
        client.upload_file(str(path), bucket, f"videos/{video_id}{path.suffix}")
        if path.with_suffix(".txt").exists():
            client.upload_file(str(path.with_suffix(".txt")), bucket, f"videos/{video_id}.txt")


def count_frames(path) -> int:
    """Frames of a video file counted by PyAV from its packets: a reference independent of decord (which
    the pipeline decodes with) and of anything the pipeline wrote."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(1 for packet in container.demux(stream) if packet.size)


def expected_frames(path, stride: int = 1, max_frames: int | None = None) -> list[int]:
    """The frame indices a job with --stride / --max-frames must write for a video: every stride-th of the
    frames PyAV counts, the first max_frames of them (written out here, not taken from fer_ray)."""
    indices = list(range(0, count_frames(path), stride))
    return indices if max_frames is None else indices[:max_frames]


def check_complete(output: str, table: str) -> dict[str, dict]:
    """Never success with missing objects: every part a done marker lists exists; returns the markers."""
    from fer_ray import shards, storage

    markers = shards.done_markers(output, table)
    for video_id, marker in markers.items():
        for part in marker["parts"]:
            assert storage.exists(storage.join(output, table, part)), (video_id, part)
    return markers


def stage_actors() -> int:
    """Stage actors (Ray Data's "MapWorker(MapBatches(LogitsStage))", ...) the session's Ray has started so
    far: the GCS actor table, dead ones included."""
    from ray._private import state

    return sum(a.get("ActorClassName", "").startswith("MapWorker(") for a in state.actors().values())
