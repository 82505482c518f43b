"""Training throughput (images/s) per model: the fer_ray.train.loop.Trainer step on synthetic batches.

    python benchmarks/train.py                       # CPU: smoke variants + real sizes at a small batch
    python benchmarks/train.py --models resnet_smoke,iresnet152 --batch 8 --steps 5
    python benchmarks/train.py --gpu --batch 128     # CUDA: bf16 autocast + channels_last, share of bf16 peak
    python benchmarks/train.py --models fer_cnn --batch 128 --precision bfloat16  # CPU bf16 against float32

Measures forward + loss + backward + optimiser step (the data pipeline is excluded: inputs are random
normalised tensors already on the device). FLOPs per image come from torch's FlopCounterMode on one
training step (matmul/conv FLOPs, fwd + bwd), so "TFLOP/s" and "% peak" are model FLOPs utilisation.
For clip/sequence models an "image" is one frame (a 9-frame clip counts 9).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from fer_ray.train.config import PRECISIONS  # noqa: E402

SMOKE = ["iresnet_tiny", "swin_tiny_smoke", "hrnet_smoke", "repvgg_smoke", "resnet_smoke",
         "mao_cnn_gru_smoke", "prl_fusion_smoke"]
REAL = ["iresnet152", "swin_s", "hrnet_w18", "repvgg_b1", "resnet50", "regnety_016", "mao_cnn_gru", "prl_fusion"]
# Dense bf16 tensor-core peak (TFLOP/s) by device-name substring.
BF16_PEAK = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0, "L4": 121.0}


def peak_tflops(name: str) -> float | None:
    for key, value in BF16_PEAK.items():
        if key in name:
            return value
    return None


def bench(arch: str, batch: int, steps: int, warmup: int, device: str, precision: str = "auto") -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from fer_ray.train.config import AugmentConfig, ModelSpec
    from fer_ray.train.loop import Trainer

    spec = ModelSpec(name=arch, arch=arch, task="expr", batch_size=batch, augment=AugmentConfig(enabled=False),
                     precision=precision)
    spec.validate()
    trainer = Trainer(spec, device)
    t = spec.clip_length if spec.kind != "frame" else 1
    shape = (batch, 3, spec.input_size, spec.input_size) if t == 1 else (batch, t, 3, spec.input_size, spec.input_size)
    x = torch.randn(shape)
    y = torch.randint(0, spec.num_classes, (batch,) if spec.kind != "sequence" else (batch, t))
    batches = [(x, y)]
    with FlopCounterMode(display=False) as counter:
        trainer.train_epoch(batches, 1)
    flops_per_image = counter.get_total_flops() / (batch * t)
    trainer.train_epoch(batches * warmup, warmup)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    trainer.train_epoch(batches * steps, steps)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    images_per_s = batch * t * steps / seconds
    return {"model": arch, "precision": trainer.precision, "kind": spec.kind, "size": spec.input_size, "batch": batch, "frames": t,
            "images_per_s": images_per_s, "gflop_per_image": flops_per_image / 1e9,
            "tflops": images_per_s * flops_per_image / 1e12,
            "params_m": sum(p.numel() for p in trainer.core.parameters()) / 1e6}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", help="comma-separated registry names (default: smoke + real)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 8 CPU, 64 GPU)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--gpu", action="store_true", help="CUDA (bf16 autocast, channels_last)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="the train config's precision (auto: bf16 on CUDA, float32 on a CPU)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if args.gpu else "cpu"
    if args.gpu and not torch.cuda.is_available():
        print("--gpu: no CUDA device", file=sys.stderr)
        return 2
    if args.gpu:
        torch.backends.cudnn.benchmark = True
    names = args.models.split(",") if args.models else SMOKE + REAL
    batch = args.batch or (64 if args.gpu else 8)
    device_name = torch.cuda.get_device_name() if args.gpu else f"CPU x{torch.get_num_threads()} threads"
    peak = peak_tflops(device_name) if args.gpu else None
    print(f"device: {device_name}; precision {args.precision}; batch {batch}")
    header = f"{'model':28s} {'kind':8s} {'size':>4s} {'frames':>6s} {'Mparams':>8s} {'GFLOP/img':>9s} " \
             f"{'img/s':>9s} {'TFLOP/s':>8s}" + (f" {'%peak':>6s}" if peak else "")
    print(header)
    print("-" * len(header))
    for name in names:
        try:
            r = bench(name, batch, args.steps, args.warmup, device, args.precision)
        except Exception as exc:  # one model failing (e.g. out of memory) must not hide the others
            print(f"{name:28s} failed: {type(exc).__name__}: {str(exc)[:120]}")
            if device == "cuda":
                torch.cuda.empty_cache()
            continue
        line = (f"{r['model']:28s} {r['kind']:8s} {r['size']:4d} {r['frames']:6d} {r['params_m']:8.2f} "
                f"{r['gflop_per_image']:9.2f} {r['images_per_s']:9.1f} {r['tflops']:8.3f}")
        if peak:
            line += f" {100 * r['tflops'] / peak:6.1f}"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
