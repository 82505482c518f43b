"""Bulk annotation: per-frame expression labels for every frame of every video, written to storage.

    python jobs/annotate.py --input <manifest|dir|s3 prefix of videos | preprocess output> \
        --models <train_all output> --output <uri> [--system cfc_sp|baseline|mao|prl] [--window 256] \
        [--keep-logits] [--since ISO-time|last] [--max-attempts 3] [--config annotate.yaml] [--strict]

From videos it runs decode -> detect -> align itself (into <output>/faces); from face shards it skips that.
Writes <output>/predictions/ (Parquet), <output>/submission/<video>.txt (ABAW EXPR format, one line per
frame), <output>/summary.json, <output>/failures/ and the resolved <output>/annotate.yaml. A rerun skips
videos already annotated with the same model version from the same file (size and mtime); `--since last`
looks only at videos newer than the previous run (for scheduled runs) plus those that failed before, each
retried until it has failed --max-attempts runs in a row (then summary.json lists it as given up). Exit 1
with --strict when any video failed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

if __package__ in (None, "") and str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `ray job submit --working-dir .`: the submitted code

from fer_ray import config, storage  # noqa: E402
from fer_ray.jobs import annotate  # noqa: E402
from fer_ray.preprocess.config import GEOMETRIES  # noqa: E402
from fer_ray.runtime import add_verbose_flag, init_ray, setup_logging  # noqa: E402

log = logging.getLogger("fer_ray.jobs.annotate")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="YAML with AnnotateConfig fields (face stage settings under "
                        "preprocess:); flags override it")
    parser.add_argument("--input", help="videos (manifest, folder, s3 prefix) or a preprocess output")
    parser.add_argument("--models", help="train_all output (holds models.json)")
    parser.add_argument("--output", help="folder or s3:// prefix for predictions/, submission/, summary.json")
    parser.add_argument("--system", help="cfc_sp (default), baseline, mao or prl")
    parser.add_argument("--window", type=int, help="Smooth Predicting window in frames (0 disables; default: "
                        "the window jobs/calibrate.py recorded in models.json, else 256)")
    parser.add_argument("--model-names", dest="model_names", nargs="+", help="exact models.json run names")
    parser.add_argument("--keep-logits", dest="keep_logits", action="store_true", default=None,
                        help="also write per-model logits (for ablation tables)")
    parser.add_argument("--prior-correction", dest="prior_correction", action=argparse.BooleanOptionalAction,
                        default=None, help="divide out each model's training class prior (for videos whose classes "
                        "are distributed unlike the training set's); default: what jobs/calibrate.py recorded, "
                        "else off")
    parser.add_argument("--video-prior", dest="video_prior", type=float,
                        help="0 to below 1: divide each model's mean prediction over a video (or face track), to "
                        "this power, out of its frames (a person whose resting face reads as one expression); 0 "
                        "off; default: what jobs/calibrate.py recorded, else 0")
    parser.add_argument("--flip-test", dest="flip_test", action=argparse.BooleanOptionalAction, default=None,
                        help="also score each face mirrored left-right and average the two (frame models; twice "
                        "the model time); default: what jobs/calibrate.py recorded, else off")
    parser.add_argument("--adapt-bn", dest="adapt_bn", type=float, metavar="S",
                        help="0 to 1: score each video (each face track; each person's photos together) with "
                        "BatchNorm statistics this much its own faces' (test-time adaptation; no labels read); 0 "
                        "off, 0.5 recommended (1 misreads a clip of one expression); default: what "
                        "jobs/calibrate.py recorded, else 0")
    parser.add_argument("--crop-test", dest="crop_test", action="store_true", default=None,
                        help="also score five crops of each face (corners and centre, 11/12 of its side) and "
                        "average (frame models; 6x the model time, 12x with --flip-test); off by default")
    parser.add_argument("--since", help="only videos modified after this ISO time, or 'last'")
    parser.add_argument("--subjects", type=lambda text: text.split(","),
                        help="name each video's main face tracks, left to right (Aff-Wild2: left,right); "
                             "needs --all-faces. A folder's <video>_left.txt / _right.txt pair does it by itself")
    parser.add_argument("--max-attempts", dest="max_attempts", type=int,
                        help="give a video up after this many failed runs in a row on the same file (default 3)")
    parser.add_argument("--device", help="auto (default), cpu or cuda")
    parser.add_argument("--batch-size", dest="batch_size", type=int)
    parser.add_argument("--num-workers", dest="num_workers", type=int,
                        help="logits actors (and face-detector actors, unless preprocess.num_workers is set)")
    parser.add_argument("--worker-gpus", dest="worker_gpus", type=float, help="GPUs per logits actor")
    parser.add_argument("--stride", type=int, help="decode every N-th frame (the rest are filled)")
    parser.add_argument("--max-frames", dest="max_frames", type=int, help="at most N decoded frames per video")
    parser.add_argument("--track-every", dest="track_every", type=int, help="full detection every K frames")
    parser.add_argument("--geometry", choices=GEOMETRIES,
                        help="face template (default: the one models.json says the models were trained on)")
    parser.add_argument("--all-faces", dest="all_faces", action="store_true", default=None,
                        help="every face of a frame, each with a track id (default: one face per frame)")
    parser.add_argument("--decode-workers", dest="decode_workers", type=int,
                        help="N CPU actors decode videos for the face detectors (default 0: detectors decode)")
    parser.add_argument("--detect-gpus", dest="detect_gpus", type=float,
                        help="GPUs per face-detector actor (> 0: detection and alignment on CUDA)")
    parser.add_argument("--strict", action="store_true", default=None, help="exit 1 if any video failed")
    parser.add_argument("--allow-root", dest="allowed_roots", action="append", metavar="URI",
                        help="a folder or prefix inputs may also be read from (repeatable); by default only "
                             "the input's own folder")
    add_verbose_flag(parser)
    return parser.parse_args(argv)


def print_summary(summary: dict) -> None:
    print(f"{'video_id':<40} {'frames':>7} {'faces':>7}  labels")
    for video_id, info in summary["videos"].items():
        print(f"{video_id[:40]:<40} {info['frames']:>7} {info['faces']:>7}  {info['histogram']}")
    print(f"annotated {summary['videos_annotated']} videos ({summary['frames_annotated']} frames, "
          f"{summary['frames_per_second']} frames/s), skipped {summary['videos_skipped']}, "
          f"failed {summary['videos_failed']} (given up {summary.get('videos_given_up', 0)}); "
          f"model version {summary['model_version']}")
    for failure in summary["failures"]:
        print(f"FAILED {failure['video_id']} ({failure['stage']}, attempt {failure.get('attempts', 1)}): "
              f"{failure['error']}")


def main(argv: list[str] | None = None) -> int:
    args = vars(parse_args(argv))
    setup_logging(verbose=args.pop("verbose"))
    source = args.pop("config")
    try:  # flags are flat (--stride ...): load_config nests the face stages' ones under preprocess
        cfg = annotate.load_config(source, args)
    except ValueError as exc:  # ConfigError and the configs' own validate() errors: one line, before Ray
        raise SystemExit(f"annotate: invalid configuration: {exc}") from None
    try:  # the window, prior correction and flip test left open come from models.json's calibration
        cfg = annotate.calibrated(cfg)
    except FileNotFoundError as exc:
        raise SystemExit(f"annotate: {exc}") from None
    config.save(cfg, storage.join(cfg.output, "annotate.yaml"))
    init_ray()
    try:
        summary = annotate.run(cfg)
    except config.ConfigError as exc:  # options the models cannot serve (e.g. --prior-correction): one line
        raise SystemExit(f"annotate: invalid configuration: {exc}") from None
    print_summary(summary)
    log.info("wrote %s", storage.join(cfg.output, "summary.json"))
    return 1 if cfg.strict and summary["videos_failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
