"""bf16 against float32 training on a CPU, controlled: the same rows, recipe and seeds, only the precision differs.

    python benchmarks/precision.py --faces <accuracy.py output>/faces --fer2013 10000 --epochs 5 --seeds 0 1

Takes an accuracy.py run's preprocessed faces (FER geometry, 48 px), holds out a seeded 15 % of its fer2013
faces (independent photos of strangers: a random split is a fair test for a comparison), trains the accuracy
config's expr_cnn recipe (configs/accuracy_fer.yaml) on the rest with `train_local` (no Ray), once per
precision and seed, two processes at a time with one thread each, and scores the held-out faces as
benchmarks/images.py scores a set (arg-max over the set's own 7 classes; accuracy and macro-F1 with 95 %
intervals from resampling the faces; the majority-class and chance figures of the same faces), and the
bf16 - float32 difference of each seed's pair.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' own helpers

from images import score  # noqa: E402  the photo benchmark's scoring: one way to score a face set

HELD_OUT_SHARE = 0.15


def load_rows(faces: str, fer2013: int, seed: int = 0) -> tuple[dict, dict]:
    """(train, test) column dicts: every non-fer2013 face and a sample of fer2013 in train, HELD_OUT_SHARE of
    fer2013 in test."""
    from fer_ray import schema, shards
    from fer_ray.train import data

    table = shards.read_table(faces, "faces", schema.FACES_SCHEMA, columns=data.TRAIN_COLUMNS).to_pydict()
    ids = np.asarray(table[schema.VIDEO_ID])
    is_fer = np.char.startswith(ids.astype(str), "fer2013/")
    rng = np.random.default_rng(seed)
    fer = rng.permutation(np.flatnonzero(is_fer))
    n_test = int(round(HELD_OUT_SHARE * fer.size))
    test, fer_train = fer[:n_test], fer[n_test:n_test + fer2013]
    train = np.sort(np.concatenate([np.flatnonzero(~is_fer), fer_train]))

    def pick(rows):
        return {k: [v[i] for i in rows] for k, v in table.items()}
    return pick(train), pick(np.sort(test))


def expr_spec(epochs: int, precision: str):
    import yaml

    from fer_ray.train.config import spec_from_dict

    raw = yaml.safe_load((ROOT / "configs" / "accuracy_fer.yaml").read_text())
    spec = next(m for m in raw["models"] if m["name"] == "expr_cnn")
    return spec_from_dict({**spec, "epochs": epochs, "precision": precision})


def run_one(args: tuple) -> dict:
    faces, fer2013, epochs, precision, seed = args
    import torch

    torch.set_num_threads(1)
    from fer_ray import schema
    from fer_ray.train import data
    from fer_ray.train.loop import train_local

    train, test = load_rows(faces, fer2013)
    spec = expr_spec(epochs, precision)
    start = time.perf_counter()
    model, history = train_local(spec, train, test, seed=seed, device="cpu")
    seconds = time.perf_counter() - start
    batches = data.frame_batches(data.iter_row_chunks(test, 512), "expr", model_transform(spec), 512,
                                 ignore=spec.ignored_labels, size=spec.input_size)
    truth, logits = [], []
    with torch.inference_mode():
        for x, y in batches:  # float32 inference, as annotate runs it
            logits.append(model(x).float().numpy())
            truth.append(y.numpy())
    truth = np.concatenate(truth)
    if truth.size != len(test[schema.VIDEO_ID]):
        raise RuntimeError("the held-out batches dropped faces: their labels no longer line up")
    return {"precision": precision, "seed": seed, "epochs": epochs, "train_seconds": seconds,
            "train_images": int(sum(r["train_images"] for r in history)),
            **score(truth, np.concatenate(logits), list(test[schema.VIDEO_ID]))}


def model_transform(spec):
    from fer_ray.train import augment

    return augment.eval_transform(spec.input_size, arch=spec.arch)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", required=True, help="an accuracy.py output's faces folder")
    parser.add_argument("--fer2013", type=int, default=10000, help="fer2013 training faces (default 10,000)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", default="precision.json")
    args = parser.parse_args(argv)
    jobs = [(args.faces, args.fer2013, args.epochs, p, s) for s in args.seeds for p in ("float32", "bfloat16")]
    start = time.perf_counter()
    with mp.get_context("spawn").Pool(2) as pool:
        runs = pool.map(run_one, jobs, chunksize=1)
    print(f"{len(runs)} runs in {(time.perf_counter() - start) / 60:.1f} min; held-out fer2013 faces: "
          f"{runs[0]['faces']}")
    print(f"{'precision':10s} {'seed':>4s} {'train s':>8s} {'img/s':>6s} {'accuracy [95 %]':>24s} {'macro-F1 [95 %]':>24s}")
    for run in runs:
        print(f"{run['precision']:10s} {run['seed']:4d} {run['train_seconds']:8.0f} "
              f"{run['train_images'] / run['train_seconds']:6.0f} "
              f"{run['accuracy']:.3f} [{run['accuracy_ci'][0]:.3f}, {run['accuracy_ci'][1]:.3f}]   "
              f"{run['macro_f1']:.3f} [{run['macro_f1_ci'][0]:.3f}, {run['macro_f1_ci'][1]:.3f}]")
    ref = runs[0]
    print(f"majority class / chance on the same faces: macro-F1 {ref['majority_f1']:.3f} / {ref['chance_f1']:.3f}, "
          f"accuracy {ref['majority_accuracy']:.3f} / {ref['chance_accuracy']:.3f}")
    for seed in args.seeds:
        pair = {r["precision"]: r for r in runs if r["seed"] == seed}
        print(f"seed {seed}: bf16 - float32 accuracy {pair['bfloat16']['accuracy'] - pair['float32']['accuracy']:+.3f}, "
              f"macro-F1 {pair['bfloat16']['macro_f1'] - pair['float32']['macro_f1']:+.3f}")
    Path(args.out).write_text(json.dumps(runs, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
