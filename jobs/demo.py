"""The whole of fer-ray on one machine: preprocess -> train -> calibrate -> annotate -> evaluate -> render.

    python jobs/demo.py [--data ../shared/data] [--output demo_out | s3://bucket/demo] [--videos tw_TW01 tw_TW07]
        [--validation-videos tw_TW11 tw_TW14]

Uses the shared real data: training faces from the image sets (taiwanese_dev minus the held-out
performers, ckplus48, a sample of fer2013's train split) aligned to FER2013's framing at 48 px,
configs/demo.yaml (a small CNN pretrained on every face, then CFC-SP's coarse and negative nets fine-tuned
from it; `--train-config configs/smoke.yaml` checks the plumbing in minutes), two held-out performers'
labelled videos to calibrate on and two others' to annotate and evaluate. Every step is the library's own
job (fer_ray.jobs.demo), run in this process on one local Ray instance; a rerun resumes and skips finished
work. About 12-14 min on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from fer_ray import config, storage  # noqa: E402
from fer_ray.jobs.demo import DemoConfig, StepFailed, run  # noqa: E402
from fer_ray.runtime import add_verbose_flag, init_ray, setup_logging  # noqa: E402


def parse_args(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data")
    parser.add_argument("--output")
    parser.add_argument("--videos", nargs="+", help="labelled dev videos to annotate and score")
    parser.add_argument("--validation-videos", dest="validation_videos", nargs="*",
                        help="labelled dev videos to calibrate on (other performers; none: no calibration)")
    parser.add_argument("--fer2013-limit", dest="fer2013_limit", type=int)
    parser.add_argument("--ckplus-limit", dest="ckplus_limit", type=int)
    parser.add_argument("--taiwanese-limit", dest="taiwanese_limit", type=int)
    parser.add_argument("--train-config", dest="train_config", help="train_all config (default configs/demo.yaml)")
    parser.add_argument("--max-frames", dest="max_frames", type=int, help="annotate the first N frames per video")
    parser.add_argument("--render-frames", dest="render_frames", type=int, help="overlay video length (frames)")
    add_verbose_flag(parser)
    return vars(parser.parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(verbose=args.pop("verbose"))
    cfg = config.load_for_job("demo", DemoConfig, None, overrides=args)
    init_ray()
    try:
        result = run(cfg)
    except StepFailed as exc:
        raise SystemExit(f"demo: {exc}") from None
    paths, head = result["paths"], result["headline"]
    steps = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in result["seconds"].items())
    print(f"\nfer-ray demo finished in {sum(result['seconds'].values()) / 60:.1f} min ({steps})")
    print(f"  macro-F1 {head['f1']:.3f} (95 % interval {head['ci_low']:.3f}-{head['ci_high']:.3f}) on "
          f"{head['annotated']} frames of {head['videos']} video(s); the same frames score "
          f"{head['majority_f1']:.3f} answering the majority class ({head['majority_class']}) and "
          f"{head['chance_f1']:.3f} by chance")
    print(f"  report:      {storage.join(paths.report, 'report.html')}")
    print(f"  predictions: {storage.join(paths.annotated, 'predictions')}  "
          f"submission: {storage.join(paths.annotated, 'submission')}")
    print(f"  models:      {storage.join(paths.models, 'models.json')}  overlay: {paths.overlay}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
