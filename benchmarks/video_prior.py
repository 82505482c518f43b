"""What the video prior does on accuracy.py runs, from their stored logits (no training, seconds per run).

    python benchmarks/video_prior.py /tmp/acc22 /tmp/acc23 [--annotated annotate_flip]

For each run: the cascade's macro-F1 at every (video prior, SP window) pooled over all its videos (the shape
of the surface: these cells are chosen with the scored videos' labels, so the best of them is optimistic),
then the figures that are not: the CFC-SP system with its window chosen on the other videos, without and
with the video prior chosen with it (ablations.held_out_settings, what calibrate does), their paired
difference with a 95 % interval from resampling ground-truth segments, and the same for the single-model
baseline (no SP, the strength alone held out). Each beside the majority-class and chance F1 of the frames.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy import WINDOWS, baseline_models, load_truth, pooled_predictions, pooled_truth  # noqa: E402

from fer_ray.evaluate import ablations, metrics  # noqa: E402
from fer_ray.evaluate import calibrate as calibration  # noqa: E402
from fer_ray.infer import readers  # noqa: E402

LABELS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos" / "labeled"


def surface(videos, truth, system, names) -> list[list[float]]:
    """Macro-F1 per (video prior, window), every video pooled: rows VIDEO_PRIORS, columns WINDOWS."""
    y, _ = pooled_truth(truth, names)
    return [[metrics.macro_f1(y, pooled_predictions(videos, truth, dataclasses.replace(system, video_prior=p), w,
                                                    names)) for w in WINDOWS] for p in calibration.VIDEO_PRIORS]


def held_out(videos, truth, system, windows, names) -> dict:
    """The system at the windows held out alone, and at the windows and video priors held out together."""
    y, groups = pooled_truth(truth, names)
    alone = ablations.held_out_settings(videos, truth, system, windows)
    both = ablations.held_out_settings(videos, truth, system, windows, calibration.VIDEO_PRIORS)
    a, b = (pooled_predictions(videos, truth, system, chosen, names) for chosen in (alone, both))
    return {"without": metrics.macro_f1(y, a), "with": metrics.macro_f1(y, b),
            "diff": metrics.paired_bootstrap(y, a, b, groups),
            "chosen": {v: (s.window, s.video_prior) for v, s in both.items()}}


def report(run: str, annotated: str, label_dir: str) -> None:
    videos = ablations.group_logits(readers.read_logits(f"{run}/{annotated}"))
    truth = load_truth(label_dir, sorted(videos))  # the videos that have labels
    names = sorted(truth)
    reference = metrics.reference_scores(pooled_truth(truth, names)[0])
    full = ablations.full_system(videos)
    print(f"\n{run}: {len(names)} videos; majority class {reference['majority_f1']:.3f}, chance "
          f"{reference['chance_f1']:.3f}")
    print("  the cascade's macro-F1, every video pooled (optimistic): rows video prior, columns SP window")
    print("  " + " " * 6 + "".join(f"{w:>7}" for w in WINDOWS))
    for prior, row in zip(calibration.VIDEO_PRIORS, surface(videos, truth, full, names)):
        print(f"  {prior:>6g}" + "".join(f"{f:7.3f}" for f in row))
    rows = [("CFC-SP (cascade + SP)", full, WINDOWS)]
    if baseline_models(videos):
        rows.append(("baseline single model (no SP)", ablations.System(expr=tuple(baseline_models(videos))), (0,)))
    for what, system, windows in rows:
        got = held_out(videos, truth, system, windows, names)
        d = got["diff"]
        print(f"  {what}, held out: {got['without']:.3f} without the video prior, {got['with']:.3f} with it: "
              f"{d['diff']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]; chosen (window, strength): "
              + ", ".join(f"{v} {w}/{p:g}" for v, (w, p) in got["chosen"].items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="accuracy.py --output folders")
    parser.add_argument("--annotated", default="annotate_flip", help="each run's annotate output (default: "
                        "annotate_flip, accuracy.py --flip-test's)")
    parser.add_argument("--labels", default=str(LABELS))
    args = parser.parse_args(argv)
    for run in args.runs:
        report(run, args.annotated, args.labels)
    return 0


if __name__ == "__main__":
    sys.exit(main())
