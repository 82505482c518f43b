"""What per-video normalisation (annotate --adapt-bn) does on accuracy.py runs: their trained models, their
annotated faces scored again with each video's own BatchNorm statistics (model time only, no decoding).

    python benchmarks/adapt_bn.py /tmp/acc22 /tmp/acc23 [--annotated annotate_flip] [--strength 0.5]
    python benchmarks/adapt_bn.py /tmp/acc22 --clips 0 0.5 1     # the one-expression worst case
    python benchmarks/adapt_bn.py /tmp/acc22 --annotated annotate_flip_adapt0.5 --crop-test  # the crop test
    python benchmarks/adapt_bn.py /tmp/acc22 --crop-effect   # the crop test, baseline model only, in-process

For each run: jobs/annotate.py on <run>/<annotated> (its faces; the same flip test) into
<run>/<annotated>_adapt (resumable), then, without and with the adaptation, on the same frames: the
single-model baseline (no SP), the CFC-SP cascade with each video's SP window chosen on the other videos
(accuracy.py's target row) and with the video prior held out with it (what calibrate would choose), each
with a 95 % interval from resampling ground-truth segments and the paired difference; beside the
majority-class and chance F1 of the same frames. Not part of `make test`.

--clips S ...: what it assumes, measured instead: each video's stretch of one expression (100+ frames) scored
as a clip of its own by the baseline model (flip test as the run's), at each strength; the share of each
clip's frames read as its expression (per clip, then per class).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy import WINDOW, WINDOWS, baseline_models, load_truth, pooled_predictions, pooled_truth  # noqa: E402
from cli_jobs import run_job  # noqa: E402

from fer_ray import storage  # noqa: E402
from fer_ray.evaluate import ablations, metrics  # noqa: E402
from fer_ray.evaluate import calibrate as calibration  # noqa: E402
from fer_ray.infer import readers  # noqa: E402
from fer_ray.jobs.annotate import is_faces_output  # noqa: E402
from fer_ray.runtime import init_ray, setup_logging  # noqa: E402

LABELS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos" / "labeled"


def annotate_adapted(run: str, annotated: str, strength: float, crop_test: bool = False) -> tuple[str, float]:
    """<run>/<annotated>'s faces annotated again with --adapt-bn (and --crop-test; its other options kept);
    (output, seconds). <annotated> may be a run that read its faces from another one (annotate_flip_adapt0.5)."""
    source = storage.join(run, annotated)
    used = yaml.safe_load(storage.read_bytes(storage.join(source, "annotate.yaml")))
    faces = source if is_faces_output(source) else used["input"]
    output = f"{source}{'_crop' if crop_test else ''}_adapt{strength:g}"
    start = time.perf_counter()
    run_job("annotate", ["--input", faces, "--models", used["models"], "--output", output,
                         "--system", used["system"], "--window", str(used["window"]), "--keep-logits",
                         "--flip-test" if used.get("flip_test") else "--no-flip-test", "--adapt-bn", str(strength),
                         *(["--crop-test"] if crop_test else [])])
    return output, time.perf_counter() - start


def systems_of(videos) -> dict:
    """name -> (system, how its window and video prior are chosen)."""
    full, base = ablations.full_system(videos), baseline_models(videos)
    out = {"baseline single model (no SP)": (ablations.System(expr=tuple(base)), "none")} if base else {}
    return out | {"CFC-SP, held-out window (the target row)": (full, "window"),
                  "CFC-SP, held-out window and video prior": (full, "both"),
                  f"CFC-SP at w = {WINDOW}": (full, "paper")}


def settings(videos, truth, system, how: str):
    if how == "none":
        return 0
    if how == "paper":
        return WINDOW
    priors = calibration.VIDEO_PRIORS if how == "both" else (0.0,)
    return ablations.held_out_settings(videos, truth, system, WINDOWS, priors)


def report(run: str, annotated: str, label_dir: str, strength: float, crop_test: bool = False) -> None:
    output, seconds = annotate_adapted(run, annotated, strength, crop_test)
    runs = [ablations.group_logits(readers.read_logits(uri)) for uri in (storage.join(run, annotated), output)]
    truth = load_truth(label_dir, sorted(runs[0]))
    names = sorted(set(runs[0]) & set(runs[1]) & set(truth))
    y, groups = pooled_truth(truth, names)
    reference = metrics.reference_scores(y)
    print(f"\n{run}: {len(names)} videos, {y.size:,} frames; majority class {reference['majority_f1']:.3f}, chance "
          f"{reference['chance_f1']:.3f}; strength {strength:g}{', crop test' if crop_test else ''}: the annotate run took {seconds / 60:.1f} min "
          "(model time only)")
    for what, (system, how) in systems_of(runs[0]).items():
        predicted = [pooled_predictions(videos, truth, system, settings(videos, truth, system, how), names)
                     for videos in runs]
        before, after = (metrics.bootstrap_f1(y, p, groups) for p in predicted)
        d = metrics.paired_bootstrap(y, *predicted, groups)
        print(f"  {what:<44} {before['f1']:.3f} [{before['ci_low']:.3f}, {before['ci_high']:.3f}] -> "
              f"{after['f1']:.3f} [{after['ci_low']:.3f}, {after['ci_high']:.3f}]: {d['diff']:+.3f} "
              f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]")


def baseline_faces(run: str, annotated: str, label_dir: str) -> tuple[dict, list, object, dict]:
    """What the in-process measurements score: <run>/<annotated>'s annotate options, the baseline model (the
    first expr model: expr_cnn), the faces table (video id, frame, face) and the videos' labels."""
    from fer_ray import schema, shards
    from fer_ray.infer import systems

    source = storage.join(run, annotated)
    used = yaml.safe_load(storage.read_bytes(storage.join(source, "annotate.yaml")))
    model = [e for e in systems.entries(systems.read_index(used["models"]), used["models"]) if e.task == "expr"][:1]
    table = shards.read_table(source, schema.FACES_TABLE, schema.FACES_SCHEMA,
                              columns=[schema.VIDEO_ID, schema.FRAME_INDEX, schema.FACE]).to_pandas()
    return used, model, table, load_truth(label_dir, sorted(table[schema.VIDEO_ID].unique()))


def one_expression_clips(run: str, annotated: str, label_dir: str, strengths: list[float]) -> None:
    import numpy as np

    from fer_ray import labels, schema
    from fer_ray.infer.logits import LogitsStage

    used, model, table, truth = baseline_faces(run, annotated, label_dir)
    stage = LogitsStage(model, flip_test=bool(used.get("flip_test")), threads=2)
    clips = []  # (class, frames, share right per strength)
    for video, rows in table.groupby(schema.VIDEO_ID):
        if video not in truth:
            continue
        y = np.asarray(truth[video])[rows[schema.FRAME_INDEX].to_numpy()]
        for c in np.unique(y[y >= 0]):
            pick = rows[y == c]
            if len(pick) < 100:
                continue
            batch = {schema.VIDEO_ID: pick[schema.VIDEO_ID].to_numpy(), schema.FACE: pick[schema.FACE].to_numpy()}
            right = []
            for strength in strengths:
                stage.adapt_bn = strength
                scores = next(v for k, v in stage(batch).items() if k.startswith(schema.LOGITS_COLUMN_PREFIX))
                right.append(float((scores.argmax(axis=1) == c).mean()))
            clips.append((int(c), len(pick), right))
    print(f"\n{run}: {len(clips)} one-expression clips of 100+ frames, {model[0].name}; share of each clip's frames "
          "read as its expression, mean over clips (frame-weighted):")
    share = np.asarray([r for _, _, r in clips])
    frames = np.asarray([n for _, n, _ in clips])
    for i, strength in enumerate(strengths):
        per = {labels.ABAW_CLASSES[c]: share[[k for k, clip in enumerate(clips) if clip[0] == c], i].mean()
               for c in sorted({clip[0] for clip in clips})}
        print(f"  strength {strength:g}: {share[:, i].mean():.3f} ({np.average(share[:, i], weights=frames):.3f}); "
              + ", ".join(f"{k} {v:.2f}" for k, v in per.items()))


def crop_effect(run: str, annotated: str, label_dir: str, strength: float) -> None:
    """The crop test on the baseline single model (expr_cnn, no SP), in this process on the run's faces: each
    video scored whole at normalisation `strength`, flip test as the run's, without and with the crop test;
    frames without a face count as Neutral in both. Paired over ground-truth segments."""
    import numpy as np

    from fer_ray import schema
    from fer_ray.infer.logits import LogitsStage

    used, model, table, truth = baseline_faces(run, annotated, label_dir)
    names = sorted(set(truth) & set(table[schema.VIDEO_ID]))
    predicted, seconds = [], []
    for crop in (False, True):
        start = time.perf_counter()
        stage = LogitsStage(model, flip_test=bool(used.get("flip_test")), adapt_bn=strength, crop_test=crop, threads=2)
        labels_of = []
        for video in names:
            rows = table[table[schema.VIDEO_ID] == video]
            scores = next(v for k, v in stage({k: rows[k].to_numpy() for k in rows}).items()
                          if k.startswith(schema.LOGITS_COLUMN_PREFIX))
            found = ~np.isnan(scores).any(axis=1)
            full = np.zeros(len(truth[video]), dtype=np.int64)
            full[rows[schema.FRAME_INDEX].to_numpy()[found]] = scores[found].argmax(axis=1)
            labels_of.append(full)
        predicted.append(np.concatenate(labels_of))
        seconds.append(time.perf_counter() - start)
    y, groups = pooled_truth(truth, names)
    keep = y >= 0
    y, groups, predicted = y[keep], groups[keep], [p[keep] for p in predicted]
    before, after = (metrics.bootstrap_f1(y, p, groups) for p in predicted)
    d = metrics.paired_bootstrap(y, *predicted, groups)
    reference = metrics.reference_scores(y)
    print(f"\n{run}: {len(names)} videos, {y.size:,} frames; majority class {reference['majority_f1']:.3f}, chance "
          f"{reference['chance_f1']:.3f}; {model[0].name}, strength {strength:g}, flip test {bool(used.get('flip_test'))}")
    print(f"  without the crop test {before['f1']:.3f} [{before['ci_low']:.3f}, {before['ci_high']:.3f}] "
          f"({seconds[0]:.0f} s) -> with it {after['f1']:.3f} [{after['ci_low']:.3f}, {after['ci_high']:.3f}] "
          f"({seconds[1]:.0f} s): {d['diff']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]")


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="accuracy.py --output folders")
    parser.add_argument("--annotated", default="annotate_flip", help="each run's annotate output (default: "
                        "annotate_flip, accuracy.py --flip-test's)")
    parser.add_argument("--labels", default=str(LABELS))
    parser.add_argument("--strength", type=float, default=0.5, help="annotate's --adapt-bn (default 0.5)")
    parser.add_argument("--clips", type=float, nargs="+", metavar="S",
                        help="instead: the one-expression clips at these strengths (no annotate run)")
    parser.add_argument("--crop-test", dest="crop_test", action="store_true",
                        help="annotate with --crop-test too; with --annotated annotate_flip_adapt0.5 and --strength "
                        "0.5 this measures the crop test alone")
    parser.add_argument("--crop-effect", dest="crop_effect", action="store_true",
                        help="instead: the crop test's effect on the baseline model, in this process (no annotate "
                        "run)")
    args = parser.parse_args(argv)
    if args.crop_effect:
        for run in args.runs:
            crop_effect(run, args.annotated, args.labels, args.strength)
        return 0
    if args.clips:
        for run in args.runs:
            one_expression_clips(run, args.annotated, args.labels, args.clips)
        return 0
    init_ray()
    for run in args.runs:
        report(run, args.annotated, args.labels, args.strength, args.crop_test)
    return 0


if __name__ == "__main__":
    sys.exit(main())
