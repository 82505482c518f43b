"""Image-set accuracy: issue #13's photo, cross-dataset and fer2013 targets, which the video benchmark
(benchmarks/accuracy.py) cannot measure.

    python benchmarks/images.py [--data ../shared/data] [--output images_out] [--config configs/demo.yaml]
        [--model expr_cnn[,expr_cnn_b]] [--fer2013-limit 12000] [--epochs N] [--seed N] [--score-only]
        [--adapt-bn S] [--crop-test]

Trains one 8-class model of --config (default configs/demo.yaml's `expr_cnn`, RECIPES.md's FerCNN; every face
in FER2013's framing at 48 px) on:
- the taiwanese_dev photos of the performers WITHOUT a labelled dev video (12 of 19; subject split),
- a seeded sample of --fer2013-limit faces of fer2013's TRAIN split,
- no CK+ at all,
then scores it, in this process with the annotate job's own LogitsStage, on three sets it never saw:

| set | faces | metric | target |
|---|---|---|---|
| taiwanese_dev photos of the 7 held-out performers | ~300 | 7-class macro-F1 | >= 0.70 |
| ckplus48, all of it (cross-dataset) | 981 | 7-class macro-F1 | >= 0.60 |
| fer2013 PrivateTest (the test split) | 3,589 | 7-class accuracy | >= 0.66 |

"7 classes": each set's own classes (taiwanese_dev and fer2013: no Other; ckplus48: no Neutral, contempt
as Other); the prediction is the arg-max over those 7 logits. Each figure has a 95 % bootstrap interval
(resampling performers for the photos and CK+, single faces for fer2013) and stands beside the
majority-class and chance figures of the same faces. Every set is scored twice: as annotate does by default,
and with annotate's flip test (each face also scored mirrored, the two softmaxes averaged). Not part of
`make test`. Writes <output>/images.json (with --crop-test images_crop.json, with --adapt-bn S
images[_crop]_adapt<S>.json; a --model other than expr_cnn names itself first: images_expr_cnn+expr_cnn_b_crop.json),
so scoring one run's models several ways keeps every result. A rerun on the same
--output reuses the faces and the trained model; --score-only scores the model an earlier run left in <output>/models without touching its training faces.
--model with several names (an accuracy.py run's two pretraining seeds) scores their ensemble: the mean of
their softmax probabilities, as annotate's expr ensemble sums them.
--adapt-bn S scores the sets as annotate --adapt-bn S does: each performer's faces (a set's `subject` column)
with BatchNorm statistics S their own (fer_ray.infer.adapt; a performer with fewer than 16 faces, and every
face of a set without subject ids, keeps the trained ones).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' own helpers

from accuracy import labelled_videos, train_config  # noqa: E402
from cli_jobs import TimedSteps  # noqa: E402
from peers import PEERS_JSON, read_figures  # noqa: E402

from fer_ray import labels, schema, shards, storage  # noqa: E402
from fer_ray.evaluate import metrics  # noqa: E402
from fer_ray.infer import cascade  # noqa: E402
from fer_ray.infer.logits import LogitsStage, column  # noqa: E402
from fer_ray.infer.systems import ModelEntry, entries, read_index  # noqa: E402
from fer_ray.jobs.annotate import options_suffix  # noqa: E402
from fer_ray.runtime import init_ray, machine_info, setup_logging  # noqa: E402
from fer_ray.train.data import source_of  # noqa: E402

TARGETS = {"photos": ("macro_f1", 0.70), "ckplus48": ("macro_f1", 0.60), "fer2013_test": ("accuracy", 0.66)}
# each set's name in benchmarks/peers.py's peers.json (the same faces; the peer scores CK+ without its Other)
PEER_SETS = {"photos": "taiwanese_dev_held_out_performers", "ckplus48": "ckplus48", "fer2013_test": "fer2013_test"}
BATCH = 512


def write_csv(target: str, rows: list[dict], root: Path) -> str:
    """A labels.csv (path,label,subject) of `rows` with absolute paths under `root`."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["path", "label", "subject"], extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(row | {"path": str(root / row["path"])})
    storage.write_text_if_changed(target, out.getvalue())  # a rerun's faces stay done
    return target


def read_rows(labels_csv: Path) -> list[dict]:
    with open(labels_csv, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write_inputs(data: Path, out: str) -> dict[str, str]:
    """The training and scoring labels.csv files. Folder names are the sources configs/demo.yaml weighs."""
    held_out = {v.split("_")[-1] for v in labelled_videos(str(data))}
    photos, fer = read_rows(data / "images/taiwanese_dev/labels.csv"), read_rows(data / "images/fer2013/labels.csv")
    inputs = storage.join(out, "inputs")
    return {
        "train_photos": write_csv(f"{inputs}/taiwanese_dev_train/labels.csv",
                                  [r for r in photos if r["subject"] not in held_out], data / "images/taiwanese_dev"),
        "train_fer2013": write_csv(f"{inputs}/fer2013/labels.csv", [r for r in fer if r["split"] == "train"],
                                   data / "images/fer2013"),
        "photos": write_csv(f"{inputs}/taiwanese_dev_heldout/labels.csv",
                            [r for r in photos if r["subject"] in held_out], data / "images/taiwanese_dev"),
        "fer2013_test": write_csv(f"{inputs}/fer2013_test/labels.csv", [r for r in fer if r["split"] == "test"],
                                  data / "images/fer2013"),
        "ckplus48": str(data / "images/ckplus48/labels.csv"),
    }


def model_entry(models: str, name: str) -> ModelEntry:
    """`name`'s entry in the train_all output's models.json, as annotate builds it."""
    found = {e.name: e for e in entries(read_index(models), models)}
    if name not in found:
        raise SystemExit(f"no model {name!r} in {models}/models.json; trained: {', '.join(sorted(found))}")
    return found[name]


def ensemble_logits(per_model: list[np.ndarray]) -> np.ndarray:
    """One model's logits as they are; several models' the log of their mean softmax probabilities (the
    arg-max of annotate's expr ensemble). NaN rows (no face) stay NaN."""
    if len(per_model) == 1:
        return per_model[0]
    mean = cascade.ensemble_probs([cascade.softmax(logits) for logits in per_model]) / len(per_model)
    with np.errstate(divide="ignore"):  # a class every model gives probability 0: log 0 = -inf, still last
        return np.log(mean)


def predict(stage: LogitsStage, models: list[ModelEntry], faces: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(labels, 8-class logits of the models' ensemble, subjects) of every labelled row of a faces output;
    rows without a face get NaN logits. A stage with per-video normalisation gets the whole set in one call
    and groups it as annotate does (fer_ray.infer.adapt.groups: each subject's photos together; a face
    without a subject alone, too few to adapt)."""
    table = shards.read_table(faces, schema.FACES_TABLE, schema.FACES_SCHEMA,
                              columns=[schema.VIDEO_ID, schema.FACE, schema.LABEL, schema.SUBJECT, schema.NUM_FRAMES])
    truth = np.asarray(table.column(schema.LABEL).to_pylist(), dtype=np.int64)
    # the bootstrap's unit: the performer; a face of a set without subject ids (fer2013) is its own
    subjects = [s or f"face{i}" for i, s in enumerate(table.column(schema.SUBJECT).to_pylist())]
    if stage.adapt_bn:
        batches = [{k: np.asarray(table.column(k).to_pylist(), dtype=object)
                    for k in (schema.VIDEO_ID, schema.FACE, schema.SUBJECT, schema.NUM_FRAMES)}]
    else:
        batches = [{schema.FACE: np.asarray(table.slice(start, BATCH).column(schema.FACE).to_pylist(), dtype=object)}
                   for start in range(0, table.num_rows, BATCH)]
    logits = []
    for batch in batches:
        out = stage(batch)
        logits.append(ensemble_logits([np.asarray(out[column(entry)], dtype=np.float64) for entry in models]))
    return truth, np.concatenate(logits), subjects


def set_predictions(truth: np.ndarray, logits: np.ndarray, groups: list[str]) -> tuple:
    """(the set's classes, labels and predictions as indices into them, face-found mask, group ids) of the
    labelled faces: the arg-max over the set's own classes; a face the stage could not read gets a wrong one."""
    keep = truth != labels.UNANNOTATED
    truth, logits, groups = truth[keep], logits[keep], np.asarray(groups, dtype=object)[keep]
    classes = np.unique(truth)
    dense_truth = np.searchsorted(classes, truth)
    found = ~np.isnan(logits).any(axis=1)
    pred = np.where(found, np.argmax(np.nan_to_num(logits[:, classes], nan=-np.inf), axis=1), -1)
    pred_or_wrong = np.where(pred >= 0, pred, (dense_truth + 1) % len(classes))
    _, group_ids = np.unique(groups.astype(str), return_inverse=True)
    return classes, dense_truth, pred_or_wrong, found, group_ids


def score(truth: np.ndarray, logits: np.ndarray, groups: list[str], seed: int = 0) -> dict:
    """Arg-max over the set's own classes; macro-F1 and accuracy with 95 % intervals, and the majority-class
    and chance figures of the same faces. A face the stage could not read counts as wrong."""
    classes, dense_truth, pred_or_wrong, found, group_ids = set_predictions(truth, logits, groups)
    f1 = metrics.bootstrap_f1(dense_truth, pred_or_wrong, group_ids, num_classes=len(classes), seed=seed)
    rng = np.random.default_rng(seed)
    hits = (pred_or_wrong == dense_truth).astype(np.float64)
    resampled = hits[rng.integers(0, hits.size, (2000, hits.size))].mean(axis=1)
    reference = metrics.reference_scores(dense_truth, num_classes=len(classes))
    return {"faces": int(dense_truth.size), "unread": int((~found).sum()), "groups": int(group_ids.max() + 1),
            "classes": [labels.ABAW_CLASSES[c] for c in classes],
            "macro_f1": f1["f1"], "macro_f1_ci": [f1["ci_low"], f1["ci_high"]],
            "accuracy": float(hits.mean()), "accuracy_ci": [float(v) for v in np.percentile(resampled, [2.5, 97.5])],
            "majority_f1": reference["majority_f1"], "majority_accuracy": reference["majority_accuracy"],
            "chance_f1": reference["chance_f1"], "chance_accuracy": reference["chance_accuracy"],
            "per_class_f1": dict(zip([labels.ABAW_CLASSES[c] for c in classes],
                                     metrics.per_class(dense_truth, pred_or_wrong, len(classes))["f1"].tolist()))}


def flip_effect(truth: np.ndarray, plain: np.ndarray, flipped: np.ndarray, groups: list[str], seed: int = 0) -> dict:
    """What the flip test changes on one set: macro-F1 (both scored on the same resamples of its groups, 95 %
    interval) and accuracy."""
    classes, y, a, _, group_ids = set_predictions(truth, plain, groups)
    b = set_predictions(truth, flipped, groups)[2]
    f1 = metrics.paired_bootstrap(y, a, b, group_ids, num_classes=len(classes), seed=seed)
    return {"macro_f1_diff": f1["diff"], "macro_f1_diff_ci": [f1["ci_low"], f1["ci_high"]],
            "p_flip_better": f1["p_b_better"], "accuracy_diff": float((b == y).mean() - (a == y).mean())}


def trained_on(markers: dict[str, dict], source: str) -> bool:
    """Whether a training faces output (its done markers) holds items of `source` (e.g. another benchmark's
    output that mixed CK+ into training, scored with --score-only)."""
    return any(source_of(key) == source for key in markers)


def image_names(markers: dict[str, dict]) -> set[str]:
    """The file names (no folder, no extension) of the images behind a faces output's done markers: how one
    face is recognised across outputs whose sets are named differently (fer2013/test/... in a benchmark that
    fed fer2013's labels.csv whole, fer2013_test/... here)."""
    return {member.rsplit("/", 1)[-1] for marker in markers.values() for member in marker.get("members", [])}


def not_held_out(train_faces: str, scored: dict[str, str]) -> dict[str, str]:
    """Scored sets whose figure is not a held-out one, and why: CK+ when any CK+ face was in training (its
    target is cross-dataset), any set with an image that was in training."""
    markers = shards.done_markers(train_faces, schema.FACES_TABLE)  # read once: both checks use them
    seen = image_names(markers)
    why = {}
    for name, faces in scored.items():
        shared = len(image_names(shards.done_markers(faces, schema.FACES_TABLE)) & seen)
        if shared:
            why[name] = f"{shared} of its images were in training"
    if "ckplus48" in scored and trained_on(markers, "ckplus48"):
        why.setdefault("ckplus48", "ckplus48 was in training")
    return why


def peer_cell(peer: dict[str, dict] | None, name: str) -> str:
    """The off-the-shelf peer's macro-F1 / accuracy on set `name` (benchmarks/peers.py; its own face count
    where it differs: it has no Other class), or "-" without a peers.json."""
    figures = (peer or {}).get(PEER_SETS[name])
    if figures is None:
        return "-"
    return f"{figures['f1']:.3f} / {figures['accuracy']:.3f} ({figures['frames']})"


def print_table(results: dict, title: str, seen: dict[str, str] | None = None,
                peer: dict[str, dict] | None = None) -> None:
    print(f"\n{title}\n\n| set | faces | macro-F1 [95 % CI] | accuracy [95 % CI] | peer (`fer`) F1 / acc | "
          "majority F1 / acc | chance F1 / acc | target |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        metric, bar = TARGETS[name]
        gap = r[metric] - bar
        if name in (seen or {}):
            verdict = f"not a held-out figure: {seen[name]}"
        else:
            verdict = f"{metric} >= {bar:.2f}: " + ("met" if gap >= 0 else f"missed by {-gap:.2f}")
        print(f"| {name} | {r['faces']} | {r['macro_f1']:.3f} [{r['macro_f1_ci'][0]:.3f}, {r['macro_f1_ci'][1]:.3f}] "
              f"| {r['accuracy']:.3f} [{r['accuracy_ci'][0]:.3f}, {r['accuracy_ci'][1]:.3f}] | {peer_cell(peer, name)} "
              f"| {r['majority_f1']:.3f} / {r['majority_accuracy']:.3f} | {r['chance_f1']:.3f} / {r['chance_accuracy']:.3f} "
              f"| {verdict} |")


def result_name(models: list[str], crop_test: bool, adapt_bn: float) -> str:
    """images[_<models>][_crop][_adapt<S>].json: the default model is not named, so earlier runs' names hold."""
    named = "" if models == ["expr_cnn"] else "_" + "+".join(models)
    return f"images{named}{options_suffix(crop_test=crop_test, adapt_bn=adapt_bn)}.json"


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--output", default="images_out")
    parser.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    parser.add_argument("--model", default="expr_cnn", type=lambda text: text.split(","),
                        help="the 8-class model of --config to train and score; NAME,NAME,...: their ensemble")
    parser.add_argument("--fer2013-limit", dest="fer2013_limit", type=int, default=12000,
                        help="seeded sample of fer2013 train faces (default 12000)")
    parser.add_argument("--epochs", type=int, help="override the model's epochs")
    parser.add_argument("--seed", type=int, help="override the train config's seed")
    parser.add_argument("--score-only", dest="score_only", action="store_true",
                        help="score the model an earlier run trained under --output (no preprocessing of training "
                             "faces, no training)")
    parser.add_argument("--adapt-bn", dest="adapt_bn", type=float, default=0.0, metavar="S",
                        help="score each performer's faces with BatchNorm statistics S their own (default 0: off)")
    parser.add_argument("--crop-test", dest="crop_test", action="store_true",
                        help="score every face with annotate's crop test too (five crops, averaged)")
    parser.add_argument("--peers", default=str(PEERS_JSON),
                        help="benchmarks/peers.py's output: the off-the-shelf peer's column (default peers_out/peers.json)")
    args = parser.parse_args(argv)
    start, host = time.perf_counter(), machine_info()
    data, out = Path(args.data).resolve(), args.output
    if not (data / "images" / "fer2013" / "labels.csv").exists():
        raise SystemExit(f"no shared data at {data}: pass --data")
    inputs = write_inputs(data, out)
    geometry = ["--geometry", "fer", "--face-size", "48", "--allow-root", str(data)]
    init_ray()
    step = TimedSteps()
    timings = step.seconds

    train_faces, models = storage.join(out, "faces"), storage.join(out, "models")
    if args.score_only and not storage.exists(storage.join(models, schema.MODELS_INDEX)):
        raise SystemExit(f"--score-only: no trained models under {models}: run without it first")
    if not args.score_only:
        step("preprocess", ["--input", inputs["train_photos"], "--output", train_faces, *geometry])
        step("preprocess", ["--input", inputs["train_fer2013"], "--output", train_faces,
                            "--limit", str(args.fer2013_limit), *geometry])
    for name in TARGETS:
        step("preprocess", ["--input", inputs[name], "--output", storage.join(out, "score", name), *geometry])
    if not args.score_only:
        step("train_all", ["--config", train_config(args.config, out, args.epochs, args.seed),
                           "--faces", train_faces, "--output", models, "--models", ",".join(args.model)])
    t0 = time.perf_counter()
    chosen = [model_entry(models, name) for name in args.model]
    scored = {}
    for flip in (False, True):
        stage = LogitsStage(chosen, threads=os.cpu_count() or 1, flip_test=flip, adapt_bn=args.adapt_bn,
                            crop_test=args.crop_test)
        scored[flip] = {name: predict(stage, chosen, storage.join(out, "score", name)) for name in TARGETS}
    results = {flip: {name: score(*got) for name, got in sets.items()} for flip, sets in scored.items()}
    effect = {name: flip_effect(truth, logits, scored[True][name][1], groups)
              for name, (truth, logits, groups) in scored[False].items()}
    timings["score"] = time.perf_counter() - t0
    wall = time.perf_counter() - start
    seen = not_held_out(train_faces, {name: storage.join(out, "score", name) for name in TARGETS})
    if args.crop_test:
        print("\nEvery face scored with the crop test (annotate --crop-test: five crops of it as well, averaged)")
    if args.adapt_bn:
        print(f"\nEach performer's faces normalised together at strength {args.adapt_bn:g} (--adapt-bn; faces "
              "without a subject id as they are)")
    peer = read_figures(args.peers)
    if peer is None:
        print(f"\nNo peer column: {args.peers} not found (benchmarks/peers.py writes it, in its own environment)")
    print_table(results[False], "Each face scored once (annotate's default):", seen, peer)
    print_table(results[True], "With the flip test (annotate --flip-test: each face also scored mirrored):", seen,
                peer)
    print("\nThe flip test's effect (paired: the same resamples of each set's groups):")
    for name, e in effect.items():
        print(f"- {name}: macro-F1 {e['macro_f1_diff']:+.3f} [{e['macro_f1_diff_ci'][0]:+.3f}, "
              f"{e['macro_f1_diff_ci'][1]:+.3f}] (better in {e['p_flip_better']:.0%} of resamples), "
              f"accuracy {e['accuracy_diff']:+.3f}")
    print(f"\nwall time {wall / 60:.1f} min ({', '.join(f'{k} {v / 60:.1f}' for k, v in timings.items())} min); "
          f"machine: {host['cpus']} CPUs, {host['cpu_model']}, load avg at start {host['load_average_at_start'][0]:.1f}")
    summary = {"command": " ".join(sys.argv), "wall_s": wall, "step_s": timings, "machine": host,
               "args": vars(args), "results": results[False], "results_flip_test": results[True], "peer": peer,
               "flip_test_effect": effect, "targets": TARGETS, "trained_on_scored_sets": seen,
               "models": {name: read_index(models)["models"][name] for name in args.model}}
    target = storage.join(out, result_name(args.model, args.crop_test, args.adapt_bn))
    storage.write_text(target, json.dumps(summary, indent=2, default=float))
    print(f"results: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
