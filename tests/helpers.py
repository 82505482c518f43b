"""Test helpers that build real inputs: model checkpoints with a models.json index, videos on S3."""

from __future__ import annotations

import torch

from fer_ray import labels, storage
from fer_ray.models import create_model, input_size, model_kind, save_checkpoint

# (run name, arch, task): one of each kind the three systems use, smoke sizes.
SMOKE_MODELS = (
    ("coarse_iresnet", "iresnet_tiny", "coarse"),
    ("coarse_swin", "swin_tiny_smoke", "coarse"),
    ("coarse_hrnet", "hrnet_smoke", "coarse"),
    ("negative_repvgg", "repvgg_smoke", "negative"),
    ("baseline", "resnet_smoke", "expr"),
    ("mao_frame", "resnet_smoke", "expr"),
    ("mao_gru", "mao_cnn_gru_smoke", "expr"),
    ("prl", "prl_fusion_smoke", "expr"),
)


def write_untrained_models(uri: str, models=SMOKE_MODELS, seed: int = 0) -> dict:
    """Seeded, untrained smoke checkpoints and a models.json as jobs/train_all.py writes them.

    Inference does not care whether weights were trained: this checks the pipeline, not accuracy.
    """
    torch.manual_seed(seed)
    entries = {}
    for name, arch, task in models:
        classes = len(labels.TASK_CLASSES[task])
        model = create_model(arch, classes).eval()
        meta = {"name": arch, "task": task, "num_classes": classes, "input_size": input_size(arch),
                "kind": model_kind(arch), "config": {}, "metrics": {}}
        save_checkpoint(storage.join(uri, name, "checkpoint.pt"), model, meta)
        entries[name] = {"arch": arch, "task": task, "input_size": input_size(arch), "kind": model_kind(arch),
                         "num_classes": classes, "checkpoint": f"{name}/checkpoint.pt", "metrics": {}}
    index = {"version": f"untrained-seed{seed}", "models": entries}
    storage.write_json(storage.join(uri, "models.json"), index)
    return index


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
