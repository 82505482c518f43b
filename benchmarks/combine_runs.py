"""What an ensemble across accuracy.py runs would score, from their stored logits (no training).

    python benchmarks/combine_runs.py /tmp/acc18 /tmp/acc19 [--annotated annotate_flip]

Each run's models join one cascade (every run's coarse nets in the coarse ensemble, every negative net in the
negative one) and one expr ensemble (every run's single baseline model), on the frames all runs annotated.
Prints the issue #13 target rows (CFC-SP at held-out SP windows, at w = 256, the baseline) for the combined
systems, each beside the majority-class and chance figures of the same frames (accuracy.print_targets). The
runs must have annotated the same videos with the same frames (accuracy.py with the same --videos).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy import WINDOWS, baseline_models, load_truth, print_targets, targets  # noqa: E402

from fer_ray.evaluate import ablations  # noqa: E402
from fer_ray.infer import readers  # noqa: E402
from fer_ray.infer.predict import System, VideoScores  # noqa: E402


def combine(runs: list[dict]) -> dict[str, VideoScores]:
    """One VideoScores per video holding every run's models, renamed "<task>/<run name>@<run number>"."""
    out = {}
    for video in sorted(set.intersection(*(set(run) for run in runs))):
        frames = runs[0][video].frames
        if any(not np.array_equal(run[video].frames, frames) for run in runs):
            raise SystemExit(f"{video}: the runs annotated different frames; combine runs of the same videos")
        out[video] = VideoScores(frames, {f"{model}@{i}": probs for i, run in enumerate(runs)
                                          for model, probs in run[video].probs.items()})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="accuracy.py --output folders")
    parser.add_argument("--annotated", default="annotate_flip", help="each run's annotate output (default: "
                        "annotate_flip, accuracy.py --flip-test's)")
    parser.add_argument("--labels", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
                                                / "labeled"))
    args = parser.parse_args(argv)
    runs = [ablations.group_logits(readers.read_logits(f"{run}/{args.annotated}")) for run in args.runs]
    videos = combine(runs)
    truth = load_truth(args.labels, sorted(videos))
    tasks = ablations.models_by_task(videos)
    base = System(expr=tuple(f"{model}@{i}" for i, run in enumerate(runs) for model in baseline_models(run)))
    full = System(coarse=tuple(tasks["coarse"]), negative=tuple(tasks["negative"]))
    print(f"{len(videos)} videos; cascade {full.name}; baseline ensemble {base.name} (the baseline row below)")
    print_targets(targets(videos, truth, base, full, ablations.held_out_windows(videos, truth, full, WINDOWS)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
