"""Preprocess videos and labelled image sets into aligned face crops (one Parquet row per decoded frame).

    python jobs/preprocess.py --input <manifest.csv|.parquet | labels.csv | dir | s3://prefix> --output <uri> \
        [--stride N] [--face-size 112] [--geometry arcface|fer] [--max-frames N] [--track-every K] [--limit N] \
        [--config preprocess.yaml] [--strict]

Writes <output>/faces/ (schema.FACES_SCHEMA shards + done markers), <output>/failures/, the resolved
config <output>/preprocess.yaml and <output>/summary.json. Rerunning on the same output resumes: finished
videos are skipped, unfinished ones redone. Exit status 1 with --strict when anything failed, else 0.
On a cluster: `ray job submit -- python jobs/preprocess.py ...` (joins it through RAY_ADDRESS), or --address.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, "") and str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python jobs/preprocess.py` from a checkout

from fer_ray import config, storage  # noqa: E402
from fer_ray.inputs import InputError  # noqa: E402
from fer_ray.jobs import preprocess  # noqa: E402
from fer_ray.preprocess.config import GEOMETRIES  # noqa: E402
from fer_ray.runtime import add_verbose_flag, init_ray, setup_logging  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="YAML with PreprocessConfig fields; flags override it")
    parser.add_argument("--input", help="manifest (.csv/.parquet), labels.csv, folder or s3:// prefix, or a video")
    parser.add_argument("--output", help="folder or s3:// prefix for faces/, failures/, summary.json")
    parser.add_argument("--stride", type=int, help="decode every N-th frame")
    parser.add_argument("--face-size", dest="face_size", type=int, help="aligned crop side in pixels")
    parser.add_argument("--geometry", choices=GEOMETRIES,
                        help="face template: arcface (default, tight) or fer (FER2013's framing, with "
                             "--face-size 48; pre-cropped faces are aligned too)")
    parser.add_argument("--max-frames", dest="max_frames", type=int, help="at most N decoded frames per video")
    parser.add_argument("--track-every", dest="track_every", type=int,
                        help="full face detection every K frames, tracking in between")
    parser.add_argument("--all-faces", dest="all_faces", action="store_true", default=None,
                        help="every face of a frame, each with a track id (default: one face per frame)")
    parser.add_argument("--limit", type=int, help="at most N images per labelled image set (seeded sample)")
    parser.add_argument("--split", help="only this split's rows of an image set (its labels.csv's split column, "
                        "e.g. fer2013's train)")
    parser.add_argument("--num-workers", dest="num_workers", type=int, help="detector actors at most")
    parser.add_argument("--worker-cpus", dest="worker_cpus", type=float, help="CPUs per actor")
    parser.add_argument("--decode-workers", dest="decode_workers", type=int,
                        help="N CPU actors decode videos and feed the detector actors (0: detectors decode)")
    parser.add_argument("--device", help="face detector device: cpu (default) or cuda (needs --worker-gpus)")
    parser.add_argument("--worker-gpus", dest="worker_gpus", type=float,
                        help="GPUs per detector actor, e.g. 0.5 for two actors per GPU")
    parser.add_argument("--strict", action="store_true", default=None, help="exit 1 if anything failed")
    parser.add_argument("--allow-root", dest="allowed_roots", action="append", metavar="URI",
                        help="a folder or prefix inputs may also be read from (repeatable); by default only "
                             "the input's own folder")
    parser.add_argument("--address", help="Ray cluster to join ('auto' = the one `ray start` runs here); "
                        "default: RAY_ADDRESS, else a private local instance")
    add_verbose_flag(parser)
    return parser.parse_args(argv)


def print_table(rows: list[dict], summary: dict) -> None:
    print(f"{'video_id':<48} {'kind':<9} {'status':<8} {'frames':>7} {'faces':>7} {'seconds':>8}")
    for r in sorted(rows, key=lambda r: r["video_id"]):
        print(f"{r['video_id'][:48]:<48} {r['kind']:<9} {r['status']:<8} {r['frames']:>7} {r['faces']:>7} "
              f"{r['seconds']:>8.2f}")
    print(f"{summary['items']} items: {summary['done']} done, {summary['skipped']} skipped, "
          f"{summary['failed']} failed; {summary['frames']} frames, {summary['faces']} faces; "
          f"{summary['frames_per_second']} frames/s")
    for video_id, tracks in sorted(summary.get("tracks", {}).items()):
        lengths = ", ".join(f"{t}: {n}" for t, n in sorted(tracks.items()))
        print(f"{video_id}: {len(tracks)} face tracks (frames with each: {lengths or 'none'})")
    for failure in summary["failures"]:
        print(f"FAILED {failure['video_id']}: {failure['error']}")


def main(argv: list[str] | None = None) -> int:
    args = vars(parse_args(argv))
    setup_logging(verbose=args.pop("verbose"))
    source, address = args.pop("config"), args.pop("address")
    device = args.pop("device")
    if device:
        args["detector"] = {"device": device}
    cfg = config.load_for_job("preprocess", preprocess.PreprocessConfig, source, overrides=args)
    if not cfg.input:
        raise SystemExit("--input (or input: in --config) is required")
    config.save(cfg, storage.join(cfg.output, "preprocess.yaml"))
    started = []

    def start() -> None:  # called once the inputs are read
        started.append(True)
        init_ray(address=address)

    try:
        summary = preprocess.run(cfg, start=start)
    except (InputError, FileNotFoundError) as exc:
        if started:  # not the input list: a missing file mid-run is a fault to show whole
            raise
        raise SystemExit(f"preprocess: {exc}") from None  # an input list the job cannot use: one line
    print_table(summary["items_rows"], summary)
    return 1 if cfg.strict and summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
