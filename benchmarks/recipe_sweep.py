"""The image benchmark's recipe on one GPU: how far more epochs, a wider FerCNN or other settings take issue
#13's three image figures (photos, CK+, fer2013), which the 2-core CPU affords only at 8-14 epochs.

    python benchmarks/recipe_sweep.py --faces <images.py --output> [--variants cpu14,e30,...] [--out sweep.json]
    python benchmarks/recipe_sweep.py --faces <...> --device cpu --quick    # the same code on CPU, toy sizes

Reads what a `benchmarks/images.py` run left: its preprocessed training faces (<faces>/faces), the three
held-out sets (<faces>/score/<set>) and its train config (<faces>/train_config.yaml, model `expr_cnn`). Each
variant changes that model's spec (VARIANTS) and trains with fer_ray's own Trainer (model, optimiser,
schedule, balanced label-smoothed loss, bf16 autocast on CUDA) on the same faces train_all trained on (its
subject split), every epoch resampled as the training job does (data.resample: class factors x source
weights) and augmented by the Trainer's own batch transform (augment.BatchAugment), here on the device the
faces are held on. Held-out faces get the eval transform, as annotate.
Scored at CURVE epochs with images.py's own scoring (arg-max over each set's classes, bootstrap intervals).
Test-set figures are never used to pick an epoch: a variant's figure is its last epoch's. Variants run as
parallel processes on the one device. Writes <out> (JSON) and <out>.png (the curves). Not part of `make test`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' own helpers

from images import TARGETS, score  # noqa: E402

from fer_ray import config as config_mod  # noqa: E402
from fer_ray import schema, shards, storage  # noqa: E402
from fer_ray.train import augment as transforms  # noqa: E402
from fer_ray.train import data, sampler  # noqa: E402
from fer_ray.train.config import TrainConfig, spec_from_dict, spec_to_dict  # noqa: E402
from fer_ray.train.loop import Trainer  # noqa: E402

WIDE = {"model_kwargs": {"widths": [64, 96, 192, 384]}}
# name -> changes to images.py's expr_cnn spec. cpu14 is images.py's run 4 (14 epochs on the 2-core CPU)
VARIANTS = {
    "cpu14": {"epochs": 14},
    "cpu14_seed1": {"epochs": 14, "seed": 1},
    "lr4e-3": {"epochs": 14, "lr": 0.004},
    "bs64": {"epochs": 14, "batch_size": 64},
    "photos8": {"epochs": 14, "source_weights": {"fer2013": 1, "ckplus48": 2, "taiwanese_dev_train": 8}},
    "e30": {"epochs": 30},
    "e60": {"epochs": 60},
    "wide_e30": {"epochs": 30, **WIDE},
    "wide_e60": {"epochs": 60, **WIDE},
}
CURVE = (1, 2, 4, 8, 14, 20, 30, 45, 60, 80, 100)


def load_spec(faces: Path, variant: dict, quick: bool):
    """images.py's trained model spec with `variant`'s changes (seed: the split's and the model's)."""
    cfg = config_mod.load(TrainConfig, str(faces / "train_config.yaml"))
    raw = {k: v for k, v in variant.items() if k != "seed"}
    spec = spec_from_dict({**spec_to_dict(cfg.spec("expr_cnn")), **raw})
    if quick:
        spec.epochs = min(spec.epochs, 2)
    spec.validate()
    return cfg, spec, variant.get("seed", cfg.seed)


def training_faces(faces: Path, cfg: TrainConfig, spec, limit: int | None):
    """(uint8 faces (N,3,S,S), task labels, video ids, class counts) of train_all's training side."""
    uri = str(faces / "faces")
    summary = data.label_summary([uri])
    train_ids, _ = data.split_videos(summary, cfg.val_split, cfg.val_fraction, cfg.seed)
    counts = data.class_counts(summary, spec.task, train_ids, spec.ignored_labels).tolist()
    table = shards.read_table(uri, schema.FACES_TABLE, schema.FACES_SCHEMA,
                              columns=[schema.VIDEO_ID, schema.FACE, schema.LABEL, schema.REASON])
    keep = set(train_ids)
    rows = table.to_pydict()
    chosen = [i for i, v in enumerate(rows[schema.VIDEO_ID]) if v in keep][:limit]
    rows = {k: [v[i] for i in chosen] for k, v in rows.items()}
    rows[schema.LABEL] = np.asarray(rows[schema.LABEL])
    idx, task_y = data.usable_rows(rows, spec.task, spec.ignored_labels)
    images = torch.stack([data.decode_face(rows[schema.FACE][i], spec.input_size) for i in idx.tolist()])
    return images, task_y, [rows[schema.VIDEO_ID][i] for i in idx.tolist()], counts


def held_out(faces: Path, spec, limit: int | None) -> dict[str, tuple]:
    """set -> (ABAW labels, eval-transformed faces or None where the set has no face, groups)."""
    tf = transforms.eval_transform(spec.input_size, arch=spec.arch)
    sets = {}
    for name in TARGETS:
        table = shards.read_table(str(faces / "score" / name), schema.FACES_TABLE, schema.FACES_SCHEMA,
                                  columns=[schema.FACE, schema.LABEL, schema.SUBJECT]).slice(0, limit)
        x = [tf(data.decode_face(f, spec.input_size)) if f else None for f in table.column(schema.FACE).to_pylist()]
        groups = [s or f"face{i}" for i, s in enumerate(table.column(schema.SUBJECT).to_pylist())]
        sets[name] = (np.asarray(table.column(schema.LABEL).to_pylist(), dtype=np.int64), x, groups)
    return sets


def device_batches(images, task_y, video_ids, trainer: Trainer, epoch: int, seed: int):
    """The epoch's resampled rows in batches, augmented on the faces' device by the Trainer's own transform."""
    spec = trainer.spec
    rng = sampler.epoch_rng(seed, epoch, 99)
    order, y = data.resample(np.arange(len(task_y)), task_y, video_ids, trainer.factors, spec.source_weights, rng)
    order, y = torch.as_tensor(order, device=images.device), torch.as_tensor(y, device=images.device)
    for start in range(0, len(order), spec.batch_size):
        yield trainer.train_tf(images[order[start:start + spec.batch_size]]), y[start:start + spec.batch_size]


@torch.inference_mode()
def logits_of(trainer: Trainer, x: list) -> np.ndarray:
    """8-class logits of each face (NaN where the set has none), as annotate's LogitsStage gives them."""
    model, out = trainer.deployed.eval(), np.full((len(x), 8), np.nan, dtype=np.float32)
    found = [i for i, face in enumerate(x) if face is not None]
    for start in range(0, len(found), 1024):
        pick = found[start:start + 1024]
        batch = torch.stack([x[i] for i in pick]).to(trainer.device)
        out[pick] = trainer.forward(batch, model).float().cpu().numpy()
    return out


def run_variant(args, name: str) -> dict:
    """Train one variant, scoring the held-out sets at CURVE epochs and the last; after each scoring its
    result so far is written to --out (a child stopped at the deadline leaves its curve)."""
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // max(1, len(args.variants))))
    cfg, spec, seed = load_spec(Path(args.faces), VARIANTS[name], args.quick)
    limit = 256 if args.quick else None
    images, task_y, video_ids, counts = training_faces(Path(args.faces), cfg, spec, limit)
    sets = held_out(Path(args.faces), spec, 64 if args.quick else None)
    trainer = Trainer(spec, args.device, counts, seed=seed)
    images = images.to(trainer.device)
    curve, start = [], time.perf_counter()
    for epoch in range(spec.epochs):
        stats = trainer.train_epoch(device_batches(images, task_y, video_ids, trainer, epoch, seed))
        if epoch + 1 in CURVE or epoch + 1 == spec.epochs:
            scores = {s: score(truth, logits_of(trainer, x), groups) for s, (truth, x, groups) in sets.items()}
            curve.append({"epoch": epoch + 1, "seconds": time.perf_counter() - start, **stats, "scores": scores})
            print(f"{name} epoch {epoch + 1}: loss {stats['train_loss']:.3f}, " + ", ".join(
                f"{s} {TARGETS[s][0]} {r[TARGETS[s][0]]:.3f}" for s, r in scores.items()), flush=True)
            result = {"variant": name, "changes": VARIANTS[name], "epochs": spec.epochs, "train_faces": len(task_y),
                      "class_counts": counts, "device": str(trainer.device), "curve": curve,
                      "final": curve[-1]["scores"], "finished": epoch + 1 == spec.epochs}
            storage.write_text(args.out, json.dumps(result, default=float))
    return result


def plot(results: dict, target: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4))
    FigureCanvasAgg(fig)
    for ax, (name, (metric, bar)) in zip(fig.subplots(1, len(TARGETS)), TARGETS.items()):
        for variant, r in results.items():
            ax.plot([p["epoch"] for p in r["curve"]], [p["scores"][name][metric] for p in r["curve"]],
                    marker="o", ms=3, label=variant)
        ax.axhline(bar, color="k", ls="--", lw=1, label=f"target {bar}")
        ax.set(title=f"{name}: {metric}", xlabel="epoch", xscale="log")
    fig.axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(target, dpi=100)


def print_table(results: dict) -> None:
    print("\n| variant | epochs | " + " | ".join(f"{s} {m} [95 % CI]" for s, (m, _) in TARGETS.items()) + " | s |")
    print("|---|---:|" + "---|" * len(TARGETS) + "---:|")
    for variant, r in results.items():
        last = r["curve"][-1]
        cells = [f"{v[m]:.3f} [{v[m + '_ci'][0]:.3f}, {v[m + '_ci'][1]:.3f}]"
                 for (s, (m, _)), v in zip(TARGETS.items(), (r["final"][s] for s in TARGETS))]
        stopped = "" if r["finished"] else f" of {r['epochs']} (stopped)"
        print(f"| {variant} | {last['epoch']}{stopped} | " + " | ".join(cells) + f" | {last['seconds']:.0f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces", required=True, help="a benchmarks/images.py --output folder")
    parser.add_argument("--variants", type=lambda s: s.split(","), default=list(VARIANTS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="256 training faces, 64 per set, 2 epochs")
    parser.add_argument("--out", default="sweep.json")
    parser.add_argument("--deadline", type=float, default=3600,
                        help="seconds; variants still training then are stopped, their curves kept so far")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child process: this variant, JSON to --out
    args = parser.parse_args(argv)
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; valid: {', '.join(VARIANTS)}")
    if not (Path(args.faces) / "train_config.yaml").exists():
        raise SystemExit(f"{args.faces} is not a benchmarks/images.py output (no train_config.yaml)")
    if args.one:
        run_variant(args, args.one)
        return 0
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        children = {v: subprocess.Popen([sys.executable, __file__, "--faces", args.faces, "--device", args.device,
                                         "--variants", ",".join(args.variants), "--one", v,
                                         "--out", f"{tmp}/{v}.json", *(["--quick"] if args.quick else [])])
                    for v in args.variants}
        while any(p.poll() is None for p in children.values()) and time.perf_counter() - start < args.deadline:
            time.sleep(1)
        for p in children.values():
            if p.poll() is None:
                p.kill()
        failed = [v for v, p in children.items() if p.wait() != 0]
        results = {v: json.loads(Path(f"{tmp}/{v}.json").read_text()) for v in args.variants
                   if Path(f"{tmp}/{v}.json").exists()}
    print_table(results)
    print(f"\n{len(results)} variants in {time.perf_counter() - start:.0f} s on {args.device}"
          + (f"; failed: {failed}" if failed else ""))
    storage.write_text(args.out, json.dumps({"command": " ".join(sys.argv), "results": results}, indent=1,
                                            default=float))
    plot(results, f"{args.out}.png")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
