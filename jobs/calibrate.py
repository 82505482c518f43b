"""Choose a system's Smooth Predicting window, prior correction, video prior and (--flip-test) flip test on
labelled validation videos; record the choice in models.json, where annotate takes it unless --window /
--prior-correction / --video-prior / --flip-test say otherwise.

    python jobs/calibrate.py --input <validation videos> --labels <EXPR txt dir | labels CSV> \
        --models <train_all output> --output <work uri> [--system cfc_sp|baseline] [--windows 0 8 16 ...] \
        [--video-priors 0 0.5 ...] [--flip-test] [--stride N] [--max-frames N] [--track-every 5] \
        [--allow-root URI] [--config calibrate.yaml]

Validation videos must be of performers neither trained on nor among the videos you will score: their
labels choose the settings. Writes <output>/annotate/ (the validation run, resumable),
<output>/calibration.json (the choice, every (corrections, weights, window) figure, the majority-class and chance
figures of the same frames) and models.json's `calibration.<system>`. The video prior (annotate
--video-prior) divides each model's mean prediction over a video out of its frames; `--video-priors 0`
keeps it off.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, "") and str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python jobs/calibrate.py` from a checkout

from fer_ray import config, storage  # noqa: E402
from fer_ray.jobs import calibrate  # noqa: E402
from fer_ray.runtime import add_verbose_flag, init_ray, setup_logging  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="YAML with CalibrateConfig fields; flags override it")
    parser.add_argument("--input", help="validation videos: manifest, folder, s3:// prefix or preprocess output")
    parser.add_argument("--labels", help="their EXPR txt directory/prefix, or a labels CSV")
    parser.add_argument("--models", help="the train_all output whose models.json gets the calibration")
    parser.add_argument("--output", help="work folder: the validation run and calibration.json")
    parser.add_argument("--system", help="cfc_sp (default) or baseline")
    parser.add_argument("--windows", type=int, nargs="+", help="SP windows to choose from")
    parser.add_argument("--video-priors", dest="video_priors", type=float, nargs="+",
                        help="video prior strengths to choose from (default 0 0.25 0.5 0.75; 0 alone: off)")
    parser.add_argument("--flip-test", dest="flip_tests", action="store_const", const=[False, True],
                        help="also try annotate's flip test (each face scored mirrored too), keep the better")
    parser.add_argument("--adapt-bn", dest="adapt_bn", type=float, nargs="*", metavar="S",
                        help="also try annotate's per-video normalisation at these strengths (no value: 0 and 0.5; "
                             "each video scored with BatchNorm statistics partly its own), keep the better")
    for flag in ("stride", "max-frames", "track-every"):
        parser.add_argument(f"--{flag}", dest=flag.replace("-", "_"), type=int, help=f"annotate's --{flag}")
    parser.add_argument("--allow-root", dest="allowed_roots", action="append", metavar="URI",
                        help="annotate's --allow-root: a folder or prefix the manifest's videos may be read from")
    add_verbose_flag(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = vars(parse_args(argv))
    setup_logging(verbose=args.pop("verbose"))
    source = args.pop("config")
    if args["adapt_bn"] is not None:  # "also try": always beside off; no value: half strength
        args["adapt_bn"] = sorted({0.0, *(args["adapt_bn"] or [0.5])})
    options = {k: args.pop(k) for k in ("stride", "max_frames", "track_every", "allowed_roots")}
    if any(v is not None for v in options.values()):
        args["annotate"] = {k: v for k, v in options.items() if v is not None}
    cfg = config.load_for_job("calibrate", calibrate.CalibrateConfig, source, overrides=args)
    config.save(cfg, storage.join(cfg.output, "calibrate.yaml"))
    init_ray()
    try:
        chosen = calibrate.run(cfg)
    except ValueError as exc:  # e.g. no validation video could be annotated: one line, not a traceback
        raise SystemExit(str(exc)) from None
    valid = chosen["validation"]
    print(f"{cfg.system}: window {chosen['window']}, prior correction {chosen['prior_correction']}, video prior "
          f"{chosen['video_prior']:g}, flip test {chosen['flip_test']}, per-video normalisation "
          f"{chosen['adapt_bn']:g}; macro-F1 "
          f"{valid['f1']:.3f} on {len(valid['videos'])} validation videos ({valid['annotated_frames']} frames; "
          f"majority class {valid['majority_f1']:.3f}, chance {valid['chance_f1']:.3f}); recorded in "
          f"{storage.join(cfg.models, 'models.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
