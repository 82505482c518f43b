"""Preprocessing throughput: the Ray job (fer_ray.jobs.preprocess.run_items) against a plain sequential loop.

    python benchmarks/preprocess.py --data ../shared/data [--videos 4] [--max-frames 300] \
        [--loop-frames 300] [--track-every 1 5] [--out bench_preprocess.json]

Both sides process the same frames of the same dev videos in the same run, one after the other:
- sequential: one process, all cores to torch; per frame: decord -> facenet-pytorch MTCNN at full
  resolution -> the largest face -> align_face -> JPEG. This is the loop research code usually runs.
- ray: the preprocessing job's pipeline (actor pool of PreprocessStage, one torch thread per actor,
  chunked decoding, batched MTCNN, batched alignment, Parquet shards), timed from the dataset's creation
  to its last summary row, actor start-up and model loading included; one row per --track-every value.
  Each Ray row also says where the time went: before the first item started (actor start-up, model
  loading), the items' own phases (decode, detect, align + JPEG, Parquet write: the stage's PhaseClock,
  summed over the actors), the actors' idle share, and after the last item ended.
Frames/s are per run, so the loop may take fewer frames per video (--loop-frames) than the job (--max-frames,
enough frames that the job's start-up is amortised): the ratio is still measured in one run.
Prints a table and the speed-up, writes the figures (with the machine's description) as JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from fer_ray.runtime import machine_info

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="the shared data folder")
    parser.add_argument("--videos", type=int, default=4, help="labelled dev videos to use")
    parser.add_argument("--max-frames", type=int, default=300, help="frames per video (the Ray job)")
    parser.add_argument("--loop-frames", type=int, default=None,
                        help="frames per video for the sequential loop (default: --max-frames)")
    parser.add_argument("--track-every", type=int, nargs="+", default=[1, 5],
                        help="ray runs: full detection every K frames (1 = every frame, like the loop)")
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--worker-cpus", type=float, default=1.0)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    return parser.parse_args(argv)


def sequential(videos: list[Path], max_frames: int, face_size: int = 112) -> dict:
    """The plain loop: decord frame by frame -> MTCNN (full resolution) -> align_face -> JPEG."""
    import decord
    import numpy as np
    import torch
    from facenet_pytorch import MTCNN

    from fer_ray.faces import align_face, encode_face

    torch.set_num_threads(os.cpu_count() or 1)
    mtcnn = MTCNN(keep_all=True, device="cpu")
    frames = faces = 0
    start = time.perf_counter()
    for path in videos:
        reader = decord.VideoReader(str(path))
        for index in range(min(max_frames, len(reader))):
            frame = reader[index].asnumpy()
            boxes, probs, points = mtcnn.detect(frame, landmarks=True)
            frames += 1
            if boxes is None:
                continue
            keep = [i for i, p in enumerate(probs) if p is not None and p >= 0.9]
            if not keep:
                continue
            areas = [(boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1]) for i in keep]
            best = keep[int(np.argmax(areas))]
            encode_face(align_face(frame, points[best], face_size))
            faces += 1
    seconds = time.perf_counter() - start
    return {"name": "sequential loop", "track_every": 1, "frames": frames, "faces": faces,
            "seconds": round(seconds, 2), "frames_per_second": round(frames / seconds, 2)}


def ray_job(videos: list[Path], max_frames: int, track_every: int, workers: int, cpus: float) -> dict:
    from fer_ray import inputs
    from fer_ray.jobs.preprocess import PreprocessConfig, run_items

    with tempfile.TemporaryDirectory(prefix="bench-preprocess-") as output:
        cfg = PreprocessConfig(output=output, max_frames=max_frames, track_every=track_every,
                               num_workers=workers, worker_cpus=cpus)
        cfg.validate()
        items = [inputs.work_item(p.stem, str(p), str(p.with_suffix(".txt"))) for p in videos]
        started = time.time()
        start = time.perf_counter()
        rows = run_items(items, cfg, cfg.output)
        seconds = time.perf_counter() - start
    failed = [r for r in rows if r["status"] != "done"]
    if failed:
        raise RuntimeError(f"benchmark items failed: {failed}")
    frames = sum(int(r["frames"]) for r in rows)
    return {"name": f"ray job ({workers} actors x {cpus:g} CPU)", "track_every": track_every, "frames": frames,
            "faces": sum(int(r["faces"]) for r in rows), "seconds": round(seconds, 2),
            "frames_per_second": round(frames / seconds, 2),
            "busy_seconds": round(sum(float(r["seconds"]) for r in rows), 2),
            "breakdown": breakdown(rows, started, seconds, min(workers, len(items)))}


def breakdown(rows: list[dict], started: float, seconds: float, actors: int) -> dict:
    """Where the job's wall time went, from the summary rows' start times and phase seconds."""
    from fer_ray.preprocess.items import PHASES

    first = min(float(r["started_at"]) for r in rows) - started
    last_end = max(float(r["started_at"]) + float(r["seconds"]) for r in rows) - started
    phases = {p: round(sum(float(r[f"{p}_seconds"]) for r in rows), 2) for p in PHASES}
    busy = sum(float(r["seconds"]) for r in rows)
    phases["other"] = round(busy - sum(phases.values()), 2)  # markers, fingerprints, label files
    return {"before_first_item_s": round(first, 2), "after_last_item_s": round(seconds - last_end, 2),
            "item_phases_s": phases, "busy_s": round(busy, 2),
            "actor_busy_share": round(busy / (actors * seconds), 3) if seconds > 0 else 0.0}


def print_breakdown(row: dict) -> None:
    b = row["breakdown"]
    phases = ", ".join(f"{name} {value:.1f}" for name, value in b["item_phases_s"].items())
    print(f"  {row['name']}, track_every={row['track_every']}: {row['seconds']:.1f} s wall; "
          f"{b['before_first_item_s']:.1f} s before the first item started (actor start-up, model loading), "
          f"{b['after_last_item_s']:.1f} s after the last one ended")
    print(f"    item seconds summed over actors: {phases} = {b['busy_s']:.1f} s; "
          f"actors busy {100 * b['actor_busy_share']:.0f} % of the wall time")


def main(argv=None) -> int:
    args = parse_args(argv)
    labelled = sorted(Path(args.data, "videos", "labeled").glob("*.mp4"))[: args.videos]
    if not labelled:
        print(f"no labelled videos under {args.data}/videos/labeled", file=sys.stderr)
        return 2
    loop_frames = args.loop_frames or args.max_frames
    print(f"{len(labelled)} videos x {args.max_frames} frames (loop: {loop_frames}): "
          f"{', '.join(p.stem for p in labelled)}")
    info = machine_info()
    results = [sequential(labelled, loop_frames)]  # before Ray starts, so it has the machine to itself
    print(f"sequential: {results[0]['frames_per_second']} frames/s")

    import ray

    ray.init(include_dashboard=False, log_to_driver=False)
    try:
        for every in args.track_every:
            results.append(ray_job(labelled, args.max_frames, every, args.num_workers, args.worker_cpus))
            print(f"ray track_every={every}: {results[-1]['frames_per_second']} frames/s")
    finally:
        ray.shutdown()
    base = results[0]["frames_per_second"]
    for row in results:
        row["speedup"] = round(row["frames_per_second"] / base, 2)
    print()
    print(f"{'pipeline':<32} {'track_every':>11} {'frames':>7} {'faces':>7} {'seconds':>8} {'frames/s':>9} {'x':>6}")
    for row in results:
        print(f"{row['name']:<32} {row['track_every']:>11} {row['frames']:>7} {row['faces']:>7} "
              f"{row['seconds']:>8.2f} {row['frames_per_second']:>9.2f} {row['speedup']:>6.2f}")
    print("where the Ray job's time went:")
    for row in results[1:]:
        print_breakdown(row)
    print(f"machine: {info['cpus']} CPUs, {info['cpu_model']}")
    report = {"benchmark": "preprocess", "videos": [p.name for p in labelled], "max_frames": args.max_frames,
              "loop_frames": loop_frames,
              "machine": info, "results": results,
              "speedup_same_work": results[1]["speedup"] if len(results) > 1 else None}
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
