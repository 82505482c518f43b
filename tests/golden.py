"""Golden outputs: what the preprocess, annotate and evaluate jobs write for one fixed dev input, reduced to
the values a refactoring must not change (issue #16: behaviour unchanged before and after the redesign).

The input: four dev videos (three labelled performers and one unlabelled clip), every 5th frame of the first
120 (24 frames each), the untrained smoke models (seeded weights), then annotate and evaluate. tests/integration/test_golden.py compares a run on the current code with tests/golden/dev_outputs.json;
the fault tests use the same run as their clean reference.

    python -m tests.golden write [--out tests/golden/dev_outputs.json]

runs the jobs on local storage and local Ray and writes the file. It only uses what every version of the
code since the redesign's start (1c0fef8) has (jobs/*.py main(argv), fer_ray.shards, fer_ray.storage), so
the committed file was written by the code before the redesign and the test checks the code after it.
train_all is not in it (test_train_all and the demo test check what it writes).
Write it again only for a deliberate change of behaviour, and say so in the commit.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "dev_outputs.json"
BUCKET = "reference"  # the test session's copy of the inputs and the reference run: s3://reference/
VIDEOS = {
    "tw_TW01": "labeled/tw_TW01.mp4",
    "tw_TW07": "labeled/tw_TW07.mp4",
    "tw_TW11": "labeled/tw_TW11.mp4",
    "pyfeat_single_face": "unlabeled/pyfeat_single_face.mp4",
}
FRAMES = ["--stride", "5", "--max-frames", "24"]
# the reference annotate run and the S3 fault test's cluster annotate runs: small batches, so many logits tasks
ANNOTATE_YAML = "worker_cpus: 1.5\nnum_workers: 2\nbatch_size: 4\n"
# how far a value may move and still be "the same" (float kernels may differ in the last bits across CPUs)
TOLERANCE = {"bbox": 0.05, "landmarks": 0.05, "det_score": 1e-4, "face_mean": 0.05, "probs": 1e-4,
             "metrics": 1e-6}


def place_inputs(base: str, data: Path) -> None:
    """The videos (and the labelled ones' EXPR files) under <base>/videos/, the smoke models under
    <base>/models, the annotate config at <base>/annotate.yaml."""
    from fer_ray import storage
    from tests.helpers import write_untrained_models

    for video_id, rel in VIDEOS.items():
        path = data / "videos" / rel
        storage.write_bytes(storage.join(base, "videos", f"{video_id}{path.suffix}"), path.read_bytes())
        if path.with_suffix(".txt").exists():
            storage.write_bytes(storage.join(base, "videos", f"{video_id}.txt"), path.with_suffix(".txt").read_bytes())
    write_untrained_models(storage.join(base, "models"))
    storage.write_text(storage.join(base, "annotate.yaml"), ANNOTATE_YAML)


def run_jobs(base: str, load_job) -> None:
    """preprocess -> annotate -> evaluate into <base>/ref/{pre,ann,eval}, each through its job's main(argv)."""
    videos = f"{base}/videos/"
    # one actor per pool: outputs do not depend on how many there are, and each costs ~7 s of CPU to start
    assert load_job("preprocess").main(["--input", videos, "--output", f"{base}/ref/pre", *FRAMES,
                                        "--worker-cpus", "0.5", "--num-workers", "1", "--strict"]) == 0
    assert load_job("annotate").main(["--input", f"{base}/ref/pre", "--models", f"{base}/models",
                                      "--output", f"{base}/ref/ann", "--num-workers", "1", "--strict"]) == 0
    assert load_job("evaluate").main(["--predictions", f"{base}/ref/ann", "--labels", videos,
                                      "--output", f"{base}/ref/eval"]) == 0


def _sha256(values) -> str:
    return hashlib.sha256(",".join(map(str, values)).encode()).hexdigest()


def _face_mean(data: bytes) -> float:
    """Mean pixel value of a face JPEG (decoded by PIL here, whatever the pipeline decodes with)."""
    from PIL import Image

    if not data:
        return -1.0
    return float(np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64).mean())


def _rounded(values, digits: int) -> list:
    """Floats (or float arrays) rounded; a missing value (None, or the NaN pandas makes of it) is None."""
    return [None if v is None or (np.isscalar(v) and np.isnan(v))
            else np.round(np.asarray(v, dtype=np.float64), digits).tolist() for v in values]


def digest(base: str) -> dict:
    """The golden values of <base>/ref: per video its face rows, predictions and submission; the metrics."""
    from fer_ray import schema, shards, storage

    faces = shards.read_table(f"{base}/ref/pre", "faces", schema.FACES_SCHEMA).to_pandas()
    predictions = shards.read_table(f"{base}/ref/ann", "predictions", schema.PREDICTIONS_SCHEMA).to_pandas()
    out: dict = {"videos": {}}
    for video_id in sorted(VIDEOS):
        f = faces[faces[schema.VIDEO_ID] == video_id].sort_values(schema.FRAME_INDEX)
        p = predictions[predictions[schema.VIDEO_ID] == video_id].sort_values(schema.FRAME_INDEX)
        submission = storage.read_bytes(storage.join(base, "ref", "ann", "submission", f"{video_id}.txt"))
        out["videos"][video_id] = {
            "faces": {
                # the dataset's own labels only as a hash: the file holds no shared data
                "frame_index": f[schema.FRAME_INDEX].tolist(), "label_sha256": _sha256(f[schema.LABEL]),
                "reason": [r if isinstance(r, str) else None for r in f[schema.REASON]],  # pandas gives NaN
                "timestamp": _rounded(f[schema.TIMESTAMP], 4),
                "bbox": _rounded(f[schema.BBOX], 3), "landmarks": _rounded(f[schema.LANDMARKS], 3),
                "det_score": _rounded(f[schema.DET_SCORE], 6),
                "face_mean": [round(_face_mean(b), 3) for b in f[schema.FACE]],
            },
            "predictions": {  # every frame of the video: labels and flags as one digit per frame
                "frames": len(p), "first_frame": int(p[schema.FRAME_INDEX].min()),
                "consecutive": bool((p[schema.FRAME_INDEX].diff().dropna() == 1).all()),
                "label": "".join(map(str, p[schema.LABEL])),
                "face_found": "".join("1" if v else "0" for v in p[schema.FACE_FOUND]),
                "filled": "".join("1" if v else "0" for v in p[schema.FILLED]),
                # probabilities of the frames a face was decoded on (a filled frame copies its neighbour's)
                "probs": _rounded(p.loc[p[schema.FACE_FOUND], schema.PROBS], 6),
            },
            "submission_sha256": hashlib.sha256(submission).hexdigest(),
        }
    metrics = storage.read_json(f"{base}/ref/eval/metrics.json")
    out["metrics"] = {k: metrics["overall"][k] for k in ("f1", "accuracy", "annotated")}
    return out


def differences(got, want, path: str = "", field: str = "") -> list[str]:
    """Where `got` differs from `want` beyond TOLERANCE (by the innermost named field); [] when the same."""
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            return [f"{path}: keys {sorted(got) if isinstance(got, dict) else type(got).__name__} != {sorted(want)}"]
        return [d for k in want for d in differences(got[k], want[k], f"{path}/{k}", k if k in TOLERANCE else field)]
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return [f"{path}: length {len(got) if isinstance(got, list) else got!r} != {len(want)}"]
        return [d for i, (g, w) in enumerate(zip(got, want)) for d in differences(g, w, f"{path}[{i}]", field)]
    if isinstance(want, float) and isinstance(got, (int, float)) and field in TOLERANCE:
        return [] if abs(got - want) <= TOLERANCE[field] else [f"{path}: {got} != {want} (tolerance {TOLERANCE[field]})"]
    return [] if got == want else [f"{path}: {got!r} != {want!r}"]


def main(argv: list[str] | None = None) -> int:
    import os
    import tempfile

    parser = argparse.ArgumentParser(description="write the golden outputs of the current checkout")
    parser.add_argument("command", choices=["write"])
    parser.add_argument("--out", default=str(GOLDEN))
    parser.add_argument("--data", default=os.environ.get("FER_RAY_DATA", str(ROOT.parent / "shared" / "data")))
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    from tests.helpers import load_job

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory(prefix="golden-") as base:
        place_inputs(base, Path(args.data))
        run_jobs(base, load_job)
        values = digest(base)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(values, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
