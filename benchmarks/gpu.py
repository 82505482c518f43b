"""GPU throughput in one command: preprocessing (decode -> MTCNN detect/track -> batched align) and CFC-SP logits.

    python benchmarks/gpu.py [--height 720] [--frames 600] [--track-every 5] [--batch 256] [--batches 30] \
        [--compile] [--out gpu.json]
    python benchmarks/gpu.py --device cpu --quick      # the same code paths on CPU at toy sizes (CI-checkable)

Prints one table (what, frames/s, target, note) and writes it with the machine's description as JSON (--out).
Without CUDA and without `--device cpu` it prints why every row is skipped and exits 0.

Rows:
- preprocess/decode: decord decoding of the test video (CPU, chunks of --chunk frames), frames/s.
- preprocess/detect+align: `FaceTracker` (full MTCNN every --track-every frames, O-net refinement between)
  and `align_batch` on --device over frames already in memory, batch --chunk; this is the GPU's share.
- preprocess/stage: `PreprocessStage.run_item` end to end on one actor (decode + detect + align + JPEG +
  Parquet part writes), detector on --device. Target >= 1,000 frames/s on one H100 at 480p-720p.
- preprocess/ray job: --ray-videos copies of the clip through `fer_ray.jobs.preprocess.run_items` with CPU decode
  actors (--decode-workers) feeding --detectors detector actors that share the device; frames/s after
  actor start-up (a one-video warm-up run first).
- logits/<model>: each CFC-SP model at its published input size (iresnet152 112, swin_s 224, hrnet_w18 128,
  repvgg_a2 112; untrained weights) on --batch faces already on the device: frames/s, GFLOP/frame from torch's
  FlopCounterMode, TFLOP/s and the share of the device's dense bf16 peak (bf16 autocast, channels_last).
- logits/CFC-SP ensemble: all four models per batch (target >= 4,000 frames/s on one H100).
- logits/LogitsStage call: the whole annotate stage call (JPEG decode + copy + resize on the device + models).

The test video is built once (not timed): the first --frames frames of a labelled dev video (256x256) scaled
to --height and centred on a 16:9 canvas, so faces keep their share of the frame height as in 720p footage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # local Ray binds 127.0.0.1 only
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402

from benchmarks.annotate import REAL_CFC_SP  # noqa: E402
from benchmarks.train import peak_tflops  # noqa: E402
from fer_ray.models.smoke import SMOKE_MODELS  # noqa: E402
from fer_ray.runtime import machine_info  # noqa: E402

SMOKE_CFC_SP = tuple(m for m in SMOKE_MODELS if m[2] in ("coarse", "negative"))
PREPROCESS_TARGET, LOGITS_TARGET = 1000.0, 4000.0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda[:n], or cpu to check the code paths")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--video", default="tw_TW01", help="labelled dev video the test clip is made from")
    parser.add_argument("--height", type=int, default=720, help="test clip height (16:9 canvas)")
    parser.add_argument("--frames", type=int, default=600, help="test clip frames")
    parser.add_argument("--chunk", type=int, default=64, help="frames per decode / detect batch")
    parser.add_argument("--track-every", type=int, default=5, help="full detection every k frames")
    parser.add_argument("--detect-size", type=int, default=320, help="longest side the detector sees")
    parser.add_argument("--ray-videos", type=int,
                        help="preprocess/ray job row: copies of the clip through jobs/preprocess's pipeline "
                             "(default 8, 0 with --quick: skip)")
    parser.add_argument("--decode-workers", type=int, default=0,
                        help="ray job row: CPU decode actors (default: CPUs - 2, at least 1)")
    parser.add_argument("--detectors", type=int, default=2, help="ray job row: detector actors sharing the GPU")
    parser.add_argument("--batch", type=int, default=256, help="faces per logits batch")
    parser.add_argument("--batches", type=int, default=30, help="timed logits batches (after 3 warm-up)")
    parser.add_argument("--compile", action="store_true", help="torch.compile each logits model")
    parser.add_argument("--smoke", action="store_true", help="smoke-size models instead of the real ones")
    parser.add_argument("--quick", action="store_true",
                        help="toy sizes (240p, 48 frames, batch 16, 2 batches, smoke models): checks the paths")
    parser.add_argument("--parts", nargs="+", choices=["preprocess", "logits"], default=["preprocess", "logits"])
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.height, args.frames, args.chunk, args.batch, args.batches, args.smoke = 240, 48, 16, 16, 2, True
    if args.ray_videos is None:
        args.ray_videos = 0 if args.quick else 8
    return args


def cuda_missing(device: str) -> str | None:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        return "no CUDA device visible to torch (use a GPU machine, or --device cpu to check the code paths)"
    return None


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------- preprocess


def make_clip(args, folder: Path) -> Path:
    """The test clip: dev video frames scaled to --height, centred on a 16:9 black canvas (H.264, 30 fps)."""
    import av
    import torch
    import torch.nn.functional as F

    from fer_ray.video import read_frames

    source = Path(args.data, "videos", "labeled", f"{args.video}.mp4")
    if not source.exists():
        raise FileNotFoundError(f"{source} not found: the preprocess rows need ../shared/data (see --data)")
    frames = read_frames(str(source), max_frames=args.frames).frames
    height = args.height - args.height % 2
    width = (height * 16 // 9) // 2 * 2
    path = folder / f"{args.video}_{height}p.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30, options={"crf": "18", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in frames:
            big = F.interpolate(torch.from_numpy(frame).permute(2, 0, 1)[None].float(), size=(height, height),
                                mode="bilinear", align_corners=False)[0].clamp(0, 255).byte().permute(1, 2, 0)
            canvas = np.zeros((height, width, 3), dtype=np.uint8)
            left = (width - height) // 2
            canvas[:, left:left + height] = big.numpy()
            container.mux(stream.encode(av.VideoFrame.from_ndarray(canvas, format="rgb24")))
        container.mux(stream.encode())
    return path


def bench_preprocess(args) -> list[dict]:
    import torch

    from fer_ray.faces import FaceDetector, FaceTracker, align_batch
    from fer_ray.jobs.preprocess import PreprocessConfig
    from fer_ray.preprocess import DetectorConfig, PreprocessStage
    from fer_ray.video import open_video

    rows = []
    threads = max(1, (os.cpu_count() or 2) // 2)  # as one preprocessing actor of two per node would have
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        clip = make_clip(args, Path(tmp))
        with open_video(str(clip)) as video:
            start = time.perf_counter()
            frames = np.concatenate([c.frames for c in video.chunks(args.chunk)])
            decode_s = time.perf_counter() - start
        n, h, w = frames.shape[:3]
        rows.append(row("preprocess/decode", n / decode_s, None, f"decord, CPU, {w}x{h}, {n} frames"))

        detector = FaceDetector(device=args.device, detect_size=args.detect_size)
        FaceTracker(detector, every=args.track_every).process(frames[:args.chunk])  # warm-up
        sync(args.device)
        start = time.perf_counter()
        tracker, found = FaceTracker(detector, every=args.track_every), 0
        for at in range(0, n, args.chunk):
            batch = frames[at:at + args.chunk]  # as PreprocessStage: numpy frames in, crops back on the host
            faces = tracker.process(batch)
            have = [i for i, f in enumerate(faces) if f is not None]
            found += len(have)
            if have:
                marks = torch.from_numpy(np.stack([faces[i].landmarks for i in have])).to(args.device)
                align_batch(torch.from_numpy(batch[have]).to(args.device), marks, 112).cpu()
        sync(args.device)
        detect_s = time.perf_counter() - start
        rows.append(row("preprocess/detect+align", n / detect_s, PREPROCESS_TARGET,
                        f"{args.device}, track every {args.track_every}, detect at {args.detect_size} px, "
                        f"{tracker.full_detections} full detections, faces in {found}/{n} frames"))

        config = PreprocessConfig(output=str(Path(tmp, "out")), track_every=args.track_every,
                                  chunk_size=args.chunk, worker_gpus=1.0 if args.device.startswith("cuda") else 0.0,
                                  worker_cpus=float(threads),
                                  detector=DetectorConfig(device=args.device, detect_size=args.detect_size))
        stage = PreprocessStage(config, config.output)
        start = time.perf_counter()
        with torch.inference_mode():
            summary = stage.run_item({"video_id": "clip", "uri": str(clip), "kind": "video"})
        stage_s = time.perf_counter() - start
        if summary["status"] != "done":
            raise RuntimeError(f"PreprocessStage failed on the test clip: {summary['error']}")
        rows.append(row("preprocess/stage", summary["frames"] / stage_s, PREPROCESS_TARGET,
                        f"one actor: decode + detect + align + JPEG + Parquet, {summary['faces']} faces"))
        if args.ray_videos > 0:
            rows.append(bench_ray_job(args, clip, Path(tmp), config))
    return rows


def bench_ray_job(args, clip: Path, folder: Path, base) -> dict:
    """--ray-videos copies of the clip through fer_ray.jobs.preprocess.run_items on a local Ray instance: CPU decode
    actors feeding --detectors detector actors that share the device (as jobs/preprocess.py --decode-workers)."""
    import dataclasses

    import ray

    from fer_ray import inputs
    from fer_ray.jobs.preprocess import run_items

    cpus = os.cpu_count() or 2
    decoders = args.decode_workers or max(1, cpus - 2)
    gpus = 1.0 / args.detectors if args.device.startswith("cuda") else 0.0
    config = dataclasses.replace(base, output=str(folder / "ray"), decode_workers=decoders, decode_cpus=1.0,
                                 num_workers=args.detectors, worker_cpus=1.0, worker_gpus=gpus)
    items = [inputs.work_item(f"clip{k:03d}", str(clip)) for k in range(args.ray_videos)]
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    try:
        run_items(items[:1], config, str(folder / "warm"))  # actor start-up
        start = time.perf_counter()
        results = run_items(items, config, config.output)
        seconds = time.perf_counter() - start
    finally:
        ray.shutdown()
    frames = sum(int(r["frames"]) for r in results if r["status"] == "done")
    return row("preprocess/ray job", frames / seconds, PREPROCESS_TARGET,
               f"{args.ray_videos} videos, {decoders} CPU decode actors -> {args.detectors} detector actors "
               f"({gpus:g} GPU each), {sum(r['status'] == 'done' for r in results)} done")


# ------------------------------------------------------------------------------------------- logits


def flops_per_frame(model, inputs) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(inputs[:2])
    return counter.get_total_flops() / 2


def bench_logits(args) -> list[dict]:
    import torch

    from fer_ray.faces import encode_face
    from fer_ray.infer import systems
    from fer_ray.infer.logits import LogitsStage
    from fer_ray.models.smoke import write_untrained_models

    cuda = args.device.startswith("cuda")
    peak = peak_tflops(torch.cuda.get_device_name(0)) if cuda else None
    specs = SMOKE_CFC_SP if args.smoke else REAL_CFC_SP
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        entries = systems.entries(write_untrained_models(tmp, models=specs), tmp)
        stage = LogitsStage(entries, device=args.device, threads=max(1, (os.cpu_count() or 2) // 2))
    flops = {}
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 255, (args.batch, 3, 112, 112), dtype=np.uint8))
    with torch.inference_mode():
        inputs = stage._inputs(images)  # per model, resized per data config, on the device, channels_last on CUDA
        for entry in entries:
            flops[entry.key] = flops_per_frame(stage.models[entry.key], inputs[entry.key])
    if args.compile:
        stage.models = {k: torch.compile(m) for k, m in stage.models.items()}

    def timed(fn) -> float:
        for _ in range(3):
            fn()
        sync(args.device)
        start = time.perf_counter()
        for _ in range(args.batches):
            fn()
        sync(args.device)
        return args.batches * args.batch / (time.perf_counter() - start)

    def utilisation(fps: float, gflop: float) -> str:
        tflops = fps * gflop / 1e3
        share = f", {100 * tflops / peak:.1f}% of bf16 peak {peak:.0f}" if peak else ""
        return f"{gflop:.2f} GFLOP/frame, {tflops:.2f} TFLOP/s{share}"

    rows = []
    faces = [encode_face(rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)) for _ in range(16)]
    column = np.empty(args.batch, dtype=object)
    column[:] = [faces[i % len(faces)] for i in range(args.batch)]
    batch = {"face": column, "frame_index": np.arange(args.batch)}
    with torch.inference_mode():
        for entry in entries:
            fps = timed(lambda e=entry: stage._run(e, inputs[e.key]))
            gflop = flops[entry.key] / 1e9
            rows.append(row(f"logits/{entry.arch} {entry.input_size}", fps, None, utilisation(fps, gflop)))
        fps = timed(lambda: [stage._run(e, inputs[e.key]) for e in entries])
        total = sum(flops.values()) / 1e9
        rows.append(row("logits/CFC-SP ensemble", fps, LOGITS_TARGET,
                        f"batch {args.batch}, compile={args.compile}, {utilisation(fps, total)}"))
        fps = timed(lambda: stage(batch))
        rows.append(row("logits/LogitsStage call", fps, LOGITS_TARGET, "JPEG decode + copy + resize + models"))
    if cuda:
        rows[-1]["note"] += f"; peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
    return rows


# ------------------------------------------------------------------------------------------- table


def row(what: str, fps: float | None, target: float | None, note: str) -> dict:
    met = None if fps is None or target is None else bool(fps >= target)
    return {"what": what, "frames_per_s": None if fps is None else round(fps, 1), "target": target,
            "met": met, "note": note}


def print_table(rows: list[dict]) -> None:
    print(f"{'what':<30} {'frames/s':>11} {'target':>8} {'met':>5}  note")
    for r in rows:
        fps = "-" if r["frames_per_s"] is None else f"{r['frames_per_s']:,.1f}"
        target = "-" if r["target"] is None else f"{r['target']:,.0f}"
        met = "-" if r["met"] is None else ("yes" if r["met"] else "no")
        print(f"{r['what']:<30} {fps:>11} {target:>8} {met:>5}  {r['note']}")


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    machine = machine_info()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA"
    print(f"machine: {machine['cpus']} CPUs ({machine['cpu_model']}), {device}; device under test: {args.device}")
    if args.device.startswith("cuda") and args.quick:
        print("(--quick on CUDA: toy sizes, not the targets' conditions)")
    skipped = cuda_missing(args.device)
    rows: list[dict] = []
    parts = {"preprocess": bench_preprocess, "logits": bench_logits}
    for name in args.parts:
        if skipped:
            rows.append(row(f"{name}/*", None, None, f"skipped: {skipped}"))
            continue
        try:
            rows += parts[name](args)
        except FileNotFoundError as exc:
            rows.append(row(f"{name}/*", None, None, f"skipped: {exc}"))
    print_table(rows)
    if args.out:
        Path(args.out).write_text(json.dumps({"benchmark": "gpu", "command": " ".join(sys.argv),
                                              "args": vars(args), "machine": machine, "gpu": device,
                                              "rows": rows}, indent=2))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
