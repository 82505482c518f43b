"""Annotation cost: Smooth Predicting at scale, the annotate job end to end with per-stage rates, GPU logits.

    python benchmarks/annotate.py [--parts sp e2e] [--videos 2] [--max-frames 120] [--stride 1] \
        [--frames 2800000] [--window 256] [--out bench_annotate.json]
    python benchmarks/annotate.py --parts gpu [--compile] [--gpu-batches 30]      # on a CUDA machine

Parts:
- sp:  fer_ray.infer.smoothing.smooth at --window on --frames frames of CFC-SP scores (5 coarse + 4 negative
       columns, float64 as the ensemble produces them, one `smooth` call per task as predict_video makes them),
       as one video and as videos of --video-frames frames, on ONE CPU core (the process is pinned to one).
       Beside it the direct O(n*w) `smooth_reference`, timed on --reference-frames frames and extrapolated
       linearly to --frames (marked "extrapolated"). Target: under 1 s for 2.8M frames.
- e2e: `fer_ray.jobs.annotate.run` (system cfc_sp) on --videos labelled dev videos with untrained smoke
       models (fer_ray.models.smoke.write_untrained_models) on a local Ray instance, timed from the call to its return
       (actor start-up and model loading included). Then, in this process on the same frames of the same run,
       each stage timed directly with one torch thread (as the job's actors run): decode (fer_ray.video),
       detect+align+JPEG (FaceDetector/FaceTracker/align_batch/encode_face as PreprocessStage uses them),
       logits (LogitsStage on batches of --batch-size rows of the faces table the run wrote), and per-video
       post-processing: SP+cascade+fill compute only, and the whole VideoPostprocess call (compute + Parquet,
       submission txt and done-marker writes). Reports the post-processing share of the end-to-end time
       (target under 1%).
- gpu: CFC-SP logits frames/s with the real-size models (iresnet152 112, swin_s 224, hrnet_w18 128,
       repvgg_a2 112; untrained weights) through LogitsStage on CUDA (bf16 autocast, channels_last), batch
       --gpu-batch, optionally torch.compile: model time on inputs already on the GPU, and the whole stage
       call (JPEG decode + resize + copy + models). Skipped with a message when CUDA is absent.
Prints a table per part and writes everything (with the machine's description) as JSON to --out.
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

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402

from fer_ray.runtime import machine_info  # noqa: E402

REAL_CFC_SP = (  # (run name, arch, task): the CFC-SP models at their published input sizes
    ("coarse_iresnet152", "iresnet152", "coarse"),
    ("coarse_swin_s", "swin_s", "coarse"),
    ("coarse_hrnet_w18", "hrnet_w18", "coarse"),
    ("negative_repvgg_a2", "repvgg_a2", "negative"),
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", nargs="+", choices=["sp", "e2e", "gpu"], default=["sp", "e2e"])
    parser.add_argument("--gpu", action="store_true", help="also run the gpu part")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="the shared data folder")
    # sp
    parser.add_argument("--frames", type=int, default=2_800_000, help="sp: frames in total")
    parser.add_argument("--video-frames", type=int, default=2_800, help="sp: frames per video in the many-videos case")
    parser.add_argument("--reference-frames", type=int, default=20_000, help="sp: frames smooth_reference runs on")
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="sp: best of this many runs")
    # e2e
    parser.add_argument("--videos", type=int, default=2, help="e2e: labelled dev videos")
    parser.add_argument("--max-frames", type=int, default=120, help="e2e: decoded frames per video (0: all)")
    parser.add_argument("--stride", type=int, default=1, help="e2e: decode every N-th frame")
    parser.add_argument("--batch-size", type=int, default=128, help="e2e: logits batch rows")
    parser.add_argument("--num-cpus", type=int, default=None, help="e2e: CPUs of the local Ray instance")
    # gpu
    parser.add_argument("--gpu-batch", type=int, default=256)
    parser.add_argument("--gpu-batches", type=int, default=30, help="gpu: timed batches (after 3 warm-up)")
    parser.add_argument("--compile", action="store_true", help="gpu: torch.compile each model")
    parser.add_argument("--gpu-device", default="cuda", help="gpu: device (cpu only to check the code path)")
    parser.add_argument("--gpu-smoke", action="store_true", help="gpu: smoke models instead of the real sizes")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.gpu and "gpu" not in args.parts:
        args.parts.append("gpu")
    return args


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


# ------------------------------------------------------------------------------------------------ sp


def bench_sp(args) -> dict:
    """SP on one pinned core: one long video, many short ones, and the O(n*w) reference (extrapolated)."""
    from fer_ray import labels
    from fer_ray.infer.smoothing import smooth, smooth_reference

    saved = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    core = min(saved) if saved else None
    if saved:
        os.sched_setaffinity(0, {core})
    try:
        rng = np.random.default_rng(0)
        n, w = args.frames, args.window
        coarse = rng.dirichlet(np.ones(len(labels.COARSE_CLASSES)), size=n)  # float64, like ensemble_probs
        negative = rng.dirichlet(np.ones(len(labels.NEGATIVE_CLASSES)), size=n)
        columns = coarse.shape[1] + negative.shape[1]

        def one_video():
            smooth(coarse, w)
            smooth(negative, w)

        size = args.video_frames
        bounds = list(range(0, n, size))

        def many_videos():
            for lo in bounds:
                smooth(coarse[lo:lo + size], w)
                smooth(negative[lo:lo + size], w)

        one = _best(one_video, args.repeats)
        many = _best(many_videos, args.repeats)
        m = min(args.reference_frames, n)
        ref = _best(lambda: (smooth_reference(coarse[:m], w), smooth_reference(negative[:m], w)), 1)
        check = np.abs(smooth(coarse[:m], w) - smooth_reference(coarse[:m], w)).max()
    finally:
        if saved:
            os.sched_setaffinity(0, saved)
    rows = [
        {"case": f"smooth, 1 video x {n} frames", "frames": n, "seconds": round(one, 4), "measured": True},
        {"case": f"smooth, {len(bounds)} videos x {size} frames", "frames": n, "seconds": round(many, 4),
         "measured": True},
        {"case": f"smooth_reference O(n*w), {m} frames", "frames": m, "seconds": round(ref, 4), "measured": True},
        {"case": f"smooth_reference O(n*w), {n} frames (extrapolated x{n / m:g})", "frames": n,
         "seconds": round(ref * n / m, 2), "measured": False},
    ]
    for row in rows:
        row["frames_per_second"] = round(row["frames"] / row["seconds"]) if row["seconds"] > 0 else None
    print(f"\n[sp] window {w}, {columns} columns ({coarse.shape[1]} coarse + {negative.shape[1]} negative, float64), "
          f"one core (cpu {core}), best of {args.repeats}")
    print(f"{'case':<58} {'seconds':>10} {'frames/s':>13}")
    for row in rows:
        print(f"{row['case']:<58} {row['seconds']:>10.4f} {row['frames_per_second']:>13,}")
    worst = max(one, many)
    print(f"target < 1 s for {n} frames: {'met' if worst < 1.0 else 'NOT met'} ({worst:.3f} s); "
          f"max |smooth - reference| = {check:.2e}; speed-up over the reference {ref * n / m / one:,.0f}x")
    return {"window": w, "columns": columns, "core": core, "repeats": args.repeats, "rows": rows,
            "target_seconds": 1.0, "target_met": bool(worst < 1.0), "max_abs_difference": float(check)}


# ------------------------------------------------------------------------------------------------ e2e


def _videos(args) -> list[Path]:
    videos = sorted(Path(args.data, "videos", "labeled").glob("*.mp4"))[: args.videos]
    if not videos:
        raise SystemExit(f"no labelled videos under {args.data}/videos/labeled")
    return videos


def _decode_and_detect(videos, stride: int, max_frames: int | None, track_every: int) -> dict:
    """Decode, then detect+align+encode the same frames (timed separately), one torch thread."""
    import torch

    from fer_ray.faces import FaceDetector, FaceTracker, align_batch, encode_face
    from fer_ray.jobs.preprocess import PreprocessConfig
    from fer_ray.preprocess import DetectorConfig
    from fer_ray.video import open_video

    pre = PreprocessConfig(output="unused")
    det = DetectorConfig()
    detector = FaceDetector(device=det.device, min_face_size=det.min_face_size, detect_size=det.detect_size,
                            thresholds=det.thresholds, min_score=det.min_score)
    decode = detect = 0.0
    frames = faces = 0
    with torch.inference_mode():
        for path in videos:
            tracker = FaceTracker(detector, every=track_every)
            with open_video(str(path)) as video:
                chunks = video.chunks(pre.chunk_size, stride, max_frames)
                while True:
                    start = time.perf_counter()
                    chunk = next(chunks, None)
                    decode += time.perf_counter() - start
                    if chunk is None:
                        break
                    start = time.perf_counter()
                    found = tracker.process(chunk.frames)
                    have = [i for i, d in enumerate(found) if d is not None]
                    if have:
                        marks = torch.from_numpy(np.stack([found[i].landmarks for i in have]).astype(np.float32))
                        crops = align_batch(torch.from_numpy(chunk.frames[have]), marks, pre.face_size).numpy()
                        for crop in crops:
                            encode_face(crop, quality=pre.jpeg_quality)
                    detect += time.perf_counter() - start
                    frames += len(chunk)
                    faces += len(have)
    return {"decode": (frames, decode), "detect_align": (frames, detect), "faces": faces}


def _logits_and_post(run: str, models: str, video_ids: list[str], batch_size: int, window: int) -> dict:
    """LogitsStage over the faces table the run wrote, then VideoPostprocess per video (compute / whole call)."""
    import torch

    from fer_ray import schema, shards, storage
    from fer_ray.infer import systems
    from fer_ray.infer.logits import LogitsStage
    from fer_ray.infer.postprocess import VideoPostprocess, _sorted_unique, full_timestamps

    index = systems.read_index(models)
    entries = systems.select(systems.entries(index, models), "cfc_sp")
    stage = LogitsStage(entries, device="cpu", threads=1)
    columns = [schema.VIDEO_ID, schema.FRAME_INDEX, schema.TIMESTAMP, schema.FACE, schema.NUM_FRAMES]
    logits_s = post_compute_s = post_total_s = 0.0
    rows = out_frames = 0
    with tempfile.TemporaryDirectory(prefix="bench-post-") as post_out:
        post = VideoPostprocess(post_out, entries, "cfc_sp", window, version="bench")
        torch.set_num_threads(1)
        for video_id in video_ids:
            table = storage.read_parquet_many(shards.complete_parts(run, schema.FACES_TABLE, [video_id]), columns=columns)
            parts = []
            for lo in range(0, table.num_rows, batch_size):
                batch = {c: table.column(c).slice(lo, batch_size).to_numpy(zero_copy_only=False) for c in columns}
                start = time.perf_counter()
                parts.append(stage(batch))
                logits_s += time.perf_counter() - start
                rows += len(batch[schema.FRAME_INDEX])
            video = {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}
            start = time.perf_counter()  # compute only: what VideoPostprocess.__call__ does before writing
            batch = _sorted_unique(video)
            frames = batch[schema.FRAME_INDEX]
            num_frames = int(max(int(np.max(batch[schema.NUM_FRAMES])), int(frames.max()) + 1))
            face = np.asarray(batch[schema.FACE_FOUND], dtype=bool)
            result = post._predict(frames, post._scores(batch, face), num_frames)
            full_timestamps(frames, np.asarray(batch[schema.TIMESTAMP], dtype=np.float64), num_frames)
            post_compute_s += time.perf_counter() - start
            assert len(result["label"]) == num_frames
            start = time.perf_counter()
            summary = post(video)
            post_total_s += time.perf_counter() - start
            out_frames += int(summary["frames"][0])
    return {"logits": (rows, logits_s), "post_compute": (out_frames, post_compute_s),
            "post_total": (out_frames, post_total_s)}


def bench_e2e(args) -> dict:
    import ray
    import torch

    from fer_ray import schema
    from fer_ray.jobs import annotate
    from fer_ray.models.smoke import write_untrained_models

    videos = _videos(args)
    max_frames = args.max_frames or None
    with tempfile.TemporaryDirectory(prefix="bench-annotate-") as tmp:
        models = os.path.join(tmp, "models")
        write_untrained_models(models)
        manifest = os.path.join(tmp, "videos.csv")
        with open(manifest, "w") as handle:
            handle.write(f"{schema.VIDEO_ID},{schema.URI},{schema.LABEL_URI}\n")
            for path in videos:
                handle.write(f"{path.stem},{path},{path.with_suffix('.txt')}\n")
        run = os.path.join(tmp, "run")
        config = annotate.load_config({"input": manifest, "models": models, "output": run, "system": "cfc_sp",
                                       "window": args.window, "stride": args.stride, "max_frames": max_frames,
                                       "batch_size": args.batch_size})
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
        try:
            cpus = ray.cluster_resources().get("CPU")
            start = time.perf_counter()
            summary = annotate.run(config)
            e2e = time.perf_counter() - start
        finally:
            ray.shutdown()
        if summary["videos_failed"] or summary["videos_annotated"] != len(videos):
            raise RuntimeError(f"annotate run incomplete: {summary['failures']}")
        torch.set_num_threads(1)
        stages = _decode_and_detect(videos, args.stride, max_frames, config.preprocess.track_every)
        stages.update(_logits_and_post(run, models, [p.stem for p in videos], args.batch_size, args.window))
    decoded = stages["decode"][0]
    annotated = int(summary["frames_annotated"])
    table = [{"stage": "end to end (annotate.run, Ray)", "frames": decoded, "seconds": e2e,
              "note": f"decoded frames; {annotated} frames annotated (all frames of the videos)"}]
    names = {"decode": "decode (decord, chunks)", "detect_align": "detect+align+JPEG (MTCNN, tracker)",
             "logits": "logits (LogitsStage, cfc_sp smoke)", "post_compute": "SP+cascade+fill (compute only)",
             "post_total": "post-processing incl. writes"}
    for key, name in names.items():
        frames, seconds = stages[key]
        table.append({"stage": name, "frames": frames, "seconds": seconds,
                      "note": "all frames of the videos" if key.startswith("post") else "decoded frames"})
    for row in table:
        row["seconds"] = round(row["seconds"], 4)
        row["frames_per_second"] = round(row["frames"] / row["seconds"], 1) if row["seconds"] > 0 else None
    share = stages["post_total"][1] / e2e
    share_compute = stages["post_compute"][1] / e2e
    # without Ray's start-up and scheduling (which dominate small runs): the share of the summed stage times
    stage_sum = sum(stages[k][1] for k in ("decode", "detect_align", "logits", "post_total"))
    share_of_stages = stages["post_total"][1] / stage_sum
    print(f"\n[e2e] {len(videos)} videos ({', '.join(p.stem for p in videos)}), max_frames {max_frames}, "
          f"stride {args.stride}, window {args.window}; local Ray with {cpus:g} CPUs; stages: 1 torch thread")
    print(f"{'stage':<38} {'frames':>8} {'seconds':>9} {'frames/s':>10}  note")
    for row in table:
        print(f"{row['stage']:<38} {row['frames']:>8} {row['seconds']:>9.3f} {row['frames_per_second']:>10}  "
              f"{row['note']}")
    print(f"post-processing share of end to end: {100 * share:.3f}% with writes, {100 * share_compute:.3f}% "
          f"compute only (target < 1%: {'met' if share < 0.01 else 'NOT met'}); "
          f"{100 * share_of_stages:.3f}% of the summed stage times ({stage_sum:.2f} s)")
    if max_frames:
        print(f"note: post-processing covers all {annotated} frames of the videos, the other stages the "
              f"{decoded} decoded ones (--max-frames {max_frames}), so its share is overstated here")
    return {"videos": [p.name for p in videos], "max_frames": max_frames, "stride": args.stride,
            "window": args.window, "ray_cpus": cpus, "frames_decoded": decoded, "frames_annotated": annotated,
            "faces": stages["faces"], "rows": table, "post_share": round(share, 5),
            "post_compute_share": round(share_compute, 5), "post_share_of_stage_sum": round(share_of_stages, 5),
            "stage_sum_seconds": round(stage_sum, 4), "target_share": 0.01, "target_met": bool(share < 0.01)}


# ------------------------------------------------------------------------------------------------ gpu


def bench_gpu(args) -> dict:
    import torch

    from fer_ray.faces import encode_face
    from fer_ray.infer import systems
    from fer_ray.infer.logits import LogitsStage
    from fer_ray.models.smoke import SMOKE_MODELS, write_untrained_models

    if args.gpu_device.startswith("cuda") and not torch.cuda.is_available():
        message = "no CUDA device visible to torch: gpu part skipped (run with --parts gpu on a GPU machine)"
        print(f"\n[gpu] {message}")
        return {"skipped": message}
    specs = tuple(m for m in SMOKE_MODELS if m[2] in ("coarse", "negative")) if args.gpu_smoke else REAL_CFC_SP
    cuda = args.gpu_device.startswith("cuda")
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        index = write_untrained_models(tmp, models=specs)
        entries = systems.entries(index, tmp)
        stage = LogitsStage(entries, device=args.gpu_device, threads=max(1, (os.cpu_count() or 2) // 2))
    if args.compile:
        stage.models = {k: torch.compile(m) for k, m in stage.models.items()}
    rng = np.random.default_rng(0)
    faces = [encode_face(rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)) for _ in range(16)]
    face_column = np.empty(args.gpu_batch, dtype=object)
    face_column[:] = [faces[i % len(faces)] for i in range(args.gpu_batch)]
    batch = {"face": face_column, "frame_index": np.arange(args.gpu_batch)}
    images = torch.from_numpy(rng.integers(0, 255, (args.gpu_batch, 3, 112, 112), dtype=np.uint8))

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def timed(fn, count: int) -> float:
        for _ in range(3):
            fn()
        sync()
        start = time.perf_counter()
        for _ in range(count):
            fn()
        sync()
        return time.perf_counter() - start

    with torch.inference_mode():
        inputs = stage._inputs(images)  # per model, resized per data config, on the device, channels_last on CUDA
        per_model = {}
        for entry in entries:
            seconds = timed(lambda e=entry: stage._run(e, inputs[e.key]), args.gpu_batches)
            per_model[entry.name] = round(args.gpu_batches * args.gpu_batch / seconds, 1)
        models_s = timed(lambda: [stage._run(e, inputs[e.key]) for e in entries], args.gpu_batches)
        whole_s = timed(lambda: stage(batch), args.gpu_batches)
    frames = args.gpu_batches * args.gpu_batch
    result = {"device": torch.cuda.get_device_name(0) if cuda else args.gpu_device,
              "models": [f"{e.arch} {e.input_size}" for e in entries], "batch": args.gpu_batch,
              "batches": args.gpu_batches, "compile": args.compile, "bf16_autocast": cuda, "channels_last": cuda,
              "per_model_frames_per_second": per_model,
              "cfc_sp_models_frames_per_second": round(frames / models_s, 1),
              "stage_call_frames_per_second": round(frames / whole_s, 1),
              "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None}
    print(f"\n[gpu] {result['device']}: {', '.join(result['models'])}; batch {args.gpu_batch}, "
          f"compile={args.compile}, bf16 autocast={cuda}, channels_last={cuda}")
    for name, fps in per_model.items():
        print(f"  {name:<28} {fps:>12,.1f} frames/s")
    print(f"  {'all 4 (CFC-SP logits)':<28} {result['cfc_sp_models_frames_per_second']:>12,.1f} frames/s "
          f"(inputs already on the device)")
    print(f"  {'LogitsStage call':<28} {result['stage_call_frames_per_second']:>12,.1f} frames/s "
          f"(JPEG decode + resize + copy + models)")
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    report = {"benchmark": "annotate", "machine": machine_info(), "command": " ".join([Path(__file__).name, *sys.argv[1:]])}
    print(f"machine: {report['machine']['cpus']} CPUs ({report['machine']['cpu_model']}), load average "
          f"{report['machine']['load_average_at_start']}, cuda {report['machine']['cuda']}")
    parts = {"sp": bench_sp, "e2e": bench_e2e, "gpu": bench_gpu}
    for name in ("sp", "e2e", "gpu"):
        if name in args.parts:
            report[name] = parts[name](args)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
