"""A seeded, untrained model set of every kind the three systems use, at smoke sizes.

`write_untrained_models(uri)` writes checkpoints and a models.json exactly as jobs/train_all.py does, so
annotate, the benchmarks and the tests can run the whole inference path without training first (the
predictions are meaningless: it checks the plumbing, not accuracy).
"""

from __future__ import annotations

from fer_ray import labels, schema, storage
from fer_ray.models.registry import create_model, input_size, model_kind, save_checkpoint

__all__ = ["SMOKE_MODELS", "write_untrained_models"]

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
    """Seeded, untrained checkpoints of `models` and their models.json under `uri`; returns the index."""
    import torch

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
    storage.write_json(storage.join(uri, schema.MODELS_INDEX), index)
    return index
