"""Which training images transfer to the labelled dev videos: one small CNN, several training sets, one table.

    python benchmarks/domain.py [--data ../shared/data] [--output domain_out] [--steps 1200] [--threads 1]

The accuracy benchmark's first run trained on 91 % grey 48-px crops (fer2013, ckplus48) and 9 % colour
taiwanese_dev photos, and no model transferred to the videos (which are made of taiwanese_dev photos of
held-out performers). This script measures that choice in isolation, without Ray Train: the same
resnet_smoke (widths 32-256, 64 px, CFC-SP augmentations, class-balanced sampling, AdamW one-cycle, label
smoothing 0.1) trained for --steps batches of 32 on each training set, scored by 8-class macro-F1 on every
3rd frame of the 7 labelled videos. Variants:
  taiwanese colour     the 510 photos of the 12 performers without a labelled video
  all colour, tw 50 %  + 4,000 fer2013 + 981 ckplus48, taiwanese photos drawn for half of every batch
  all grey             every source converted to grey (train and test), natural mix
Faces come from the real preprocess job (run here, resumable under --output). Prints the table and writes
<output>/domain.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' own helpers

from cli_jobs import run_job  # noqa: E402

from fer_ray import labels, schema, shards, storage  # noqa: E402
from fer_ray.evaluate import metrics  # noqa: E402
from fer_ray.jobs.demo import DemoConfig, write_inputs  # noqa: E402
from fer_ray.runtime import init_ray, machine_info, setup_logging  # noqa: E402
from fer_ray.train import augment  # noqa: E402
from fer_ray.train.config import AugmentConfig  # noqa: E402
from fer_ray.train.data import decode_face  # noqa: E402

SIZE = 64
TAIWANESE = "taiwanese_dev_train"
VARIANTS = {  # name -> (sources, grey, share of each batch drawn from the taiwanese photos or None)
    "taiwanese colour": ((TAIWANESE,), False, None),
    "all colour, tw 50 %": ((TAIWANESE, "ckplus48", "fer2013"), False, 0.5),
    "all grey": ((TAIWANESE, "ckplus48", "fer2013"), True, None),
}


def prepare(data: str, out: str, fer2013: int) -> tuple[str, str]:
    """Run the preprocess job for the training images and the labelled videos (every 3rd frame)."""
    held_out = sorted(p.stem for p in Path(data, "videos", "labeled").glob("*.mp4"))
    cfg = DemoConfig(data=data, output=out, videos=held_out, validation_videos=[])
    cfg.validate()
    train_csv, manifest, _ = write_inputs(cfg)
    faces, video_faces = storage.join(out, "faces"), storage.join(out, "video_faces")
    init_ray()
    run_job("preprocess", ["--input", train_csv, "--output", faces, "--allow-root", data])
    run_job("preprocess", ["--input", f"{data}/images/ckplus48/labels.csv", "--output", faces])
    run_job("preprocess", ["--input", f"{data}/images/fer2013/labels.csv", "--output", faces,
                           "--limit", str(fer2013), "--split", "train"])
    run_job("preprocess", ["--input", manifest, "--allow-root", data, "--output", video_faces, "--stride", "3", "--track-every", "5"])
    return faces, video_faces


def load_faces(uri: str) -> dict[str, np.ndarray | torch.Tensor]:
    """Every face with a label: uint8 (N, 3, SIZE, SIZE), labels, source (video id before '/'), video, frame."""
    table = storage.read_parquet_many(shards.complete_parts(uri, schema.FACES_TABLE),
                                      columns=[schema.VIDEO_ID, schema.FRAME_INDEX, schema.FACE, schema.LABEL])
    rows = table.to_pydict()
    keep = [i for i, (face, y) in enumerate(zip(rows[schema.FACE], rows[schema.LABEL])) if face and y >= 0]
    videos = np.asarray([rows[schema.VIDEO_ID][i] for i in keep])
    return {"x": torch.stack([decode_face(rows[schema.FACE][i], SIZE) for i in keep]),
            "y": np.asarray([rows[schema.LABEL][i] for i in keep], dtype=np.int64),
            "source": np.asarray([v.split("/", 1)[0].split("_batch")[0] for v in videos]),
            "video": videos, "frame": np.asarray([rows[schema.FRAME_INDEX][i] for i in keep])}


def grey(x: torch.Tensor) -> torch.Tensor:
    return x.float().mean(dim=-3, keepdim=True).expand_as(x).round().to(torch.uint8)


def sample_weights(y: np.ndarray, source: np.ndarray, tw_share: float | None) -> np.ndarray:
    """Class-balanced (1 / sqrt(count)) draw probabilities, then the taiwanese photos scaled to tw_share."""
    w = 1.0 / np.sqrt(np.bincount(y, minlength=labels.NUM_CLASSES)[y].astype(np.float64))
    if tw_share is not None:
        tw = source == TAIWANESE
        w = np.where(tw, w / w[tw].sum() * tw_share, w / w[~tw].sum() * (1.0 - tw_share))
    return w / w.sum()


def train_and_score(train: dict, test: dict, tw_share: float | None, steps: int, seed: int = 0) -> dict:
    from fer_ray.models import create_model

    rng, _ = np.random.default_rng(seed), torch.manual_seed(seed)
    net = create_model("resnet_smoke", labels.NUM_CLASSES, channels=[32, 64, 128, 256], stem_width=32)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)
    tf, ev = augment.train_transform(SIZE, AugmentConfig()), augment.eval_transform(SIZE)
    p = sample_weights(train["y"], train["source"], tw_share)
    start = time.perf_counter()
    for _ in range(steps):
        index = rng.choice(len(p), 32, p=p)
        loss = F.cross_entropy(net(tf(torch.stack([train["x"][i] for i in index]))),
                               torch.as_tensor(train["y"][index]), label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    net.eval()
    with torch.inference_mode():
        pred = torch.cat([net(ev(test["x"][i:i + 256])).argmax(1) for i in range(0, len(test["y"]), 256)]).numpy()
    per_class = metrics.per_class(test["y"], pred)["f1"]
    return {"macro_f1": metrics.macro_f1(test["y"], pred), "accuracy": metrics.accuracy(test["y"], pred),
            "per_class_f1": dict(zip(labels.ABAW_CLASSES, map(float, per_class))),
            "train_faces": int(len(train["y"])), "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--output", default="domain_out")
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--fer2013-limit", dest="fer2013_limit", type=int, default=4000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    host = machine_info()
    faces, video_faces = prepare(str(Path(args.data).resolve()), args.output, args.fer2013_limit)
    pool, test = load_faces(faces), load_faces(video_faces)
    results = {}
    for name in args.variants:
        sources, to_grey, tw_share = VARIANTS[name]
        keep = np.isin(pool["source"], sources)
        train = {k: v[keep] if isinstance(v, np.ndarray) else v[torch.from_numpy(keep)] for k, v in pool.items()}
        scored = dict(test)
        if to_grey:
            train["x"], scored["x"] = grey(train["x"]), grey(test["x"])
        results[name] = train_and_score(train, scored, tw_share, args.steps)
        print(f"{name:<22} faces {results[name]['train_faces']:>5}  macro-F1 {results[name]['macro_f1']:.4f}  "
              f"acc {results[name]['accuracy']:.3f}  ({results[name]['seconds']:.0f} s)", flush=True)
    print(f"\nscored on {len(test['y'])} frames (every 3rd) of {len(set(test['video']))} labelled videos; "
          f"{args.steps} steps of 32; machine: {host['cpus']} CPUs, {host['cpu_model']}")
    target = storage.join(args.output, "domain.json")
    storage.write_text(target, json.dumps({"command": " ".join(sys.argv), "machine": host, "steps": args.steps,
                                           "results": results}, indent=2))
    print(f"results: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
