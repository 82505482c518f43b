"""The off-the-shelf peer: what a user gets from the `fer` package on the frames our accuracy figures use.

    python3 -m venv .peers && .peers/bin/pip install 'fer==25.10.3'      # the [peers] extra's pin
    .peers/bin/python benchmarks/peers.py [--data ../shared/data] [--output peers_out] [--video-stride 3]

`fer` is a FER2013 mini-Xception whose weights ship inside its wheel; it needs TensorFlow, so it lives in
a virtual environment of its own, never in fer-ray's (its `mtcnn=True` path imports facenet-pytorch and
crashed in torchvision with the torch that pip resolved for it; its default OpenCV Haar detector works and
is what this script uses). This script needs only `fer` (and numpy, OpenCV, which it brings): it reads
fer-ray's label order and metrics from the checkout (numpy-only modules), nothing else of fer-ray.

Sets (each scored next to the majority-class and chance figures of the same frames):
- taiwanese_dev photos: all 822, and those of the 7 performers of videos/labeled (the accuracy benchmark's
  held-out performers); 7 classes, detection by Haar;
- ckplus48 (981) and the fer2013 test split (3,589): 48-px face crops, the whole crop given as the face
  (a Haar detector finds nothing in a 48-px crop), so the peer's own training set scores as it was meant to;
- the 7 labelled dev videos, every --video-stride-th frame, against their EXPR label files.
A frame where the peer finds no face is scored as Neutral (what a user filling gaps with the commonest
class would get); the face-found share is printed beside it. Writes <output>/peers.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # fer_ray.labels and fer_ray.evaluate.metrics need only numpy

from fer_ray import labels  # noqa: E402
from fer_ray.evaluate import metrics  # noqa: E402

# fer's emotion names -> ABAW indices (fer has no "Other")
PEER_CLASSES = {"angry": "Anger", "disgust": "Disgust", "fear": "Fear", "happy": "Happiness", "sad": "Sadness",
                "surprise": "Surprise", "neutral": "Neutral"}
HELD_OUT = ("TW01", "TW07", "TW11", "TW14", "TW18", "TW21", "TW29")
NO_FACE = labels.class_index("Neutral")


# where the accuracy benchmarks look for a peers.py run's figures by default (`--output peers_out` from the checkout)
PEERS_JSON = ROOT / "peers_out" / "peers.json"


def read_figures(path: str | Path) -> dict[str, dict] | None:
    """The figures a peers.py run wrote (set -> frames, f1, accuracy, ...; sets as in --sets, the photos of
    the held-out performers as taiwanese_dev_held_out_performers, the videos as dev_videos), or None where no
    run has written `path`: the accuracy benchmarks print them as their peer column."""
    path = Path(path)
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    return {name: {**figures, "video_stride": record.get("video_stride")} for name, figures in record["results"].items()}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--output", default="peers_out")
    parser.add_argument("--video-stride", type=int, default=3, help="score every N-th video frame")
    parser.add_argument("--limit", type=int, default=None, help="at most N images per set (quick runs)")
    parser.add_argument("--sets", nargs="+", default=["taiwanese_dev", "ckplus48", "fer2013_test", "videos"])
    return parser.parse_args(argv)


class Peer:
    """fer's FER with its default Haar detector; `predict(bgr, whole_face)` -> ABAW index or None (no face).
    Images go in as OpenCV reads them (BGR), which is what fer expects."""

    def __init__(self):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        from fer.fer import FER  # fer 25.x: the package's __init__ no longer re-exports it

        self.model = FER(mtcnn=False)

    def predict(self, bgr: np.ndarray, whole_face: bool = False) -> int | None:
        h, w = bgr.shape[:2]
        boxes = [(0, 0, w, h)] if whole_face else None
        faces = self.model.detect_emotions(bgr, face_rectangles=boxes)
        if not faces:
            return None
        biggest = max(faces, key=lambda f: f["box"][2] * f["box"][3])
        emotion = max(biggest["emotions"], key=biggest["emotions"].get)
        return labels.class_index(PEER_CLASSES[emotion])


def _bgr(path: Path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"unreadable image: {path.name}")
    return image


def image_rows(data: Path, name: str, limit: int | None) -> list[tuple[Path, int, str]]:
    """(path, ABAW label, subject) of one labelled image set; fer2013 only its test split."""
    base = data / "images" / ("fer2013" if name == "fer2013_test" else name)
    with open(base / "labels.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if name != "fer2013_test" or r.get("split") == "test"]
    rows = [r for r in rows if r["label"] != "Other"]  # the peer has no Other (ckplus48's contempt)
    if limit:
        rows = [rows[i] for i in np.random.default_rng(0).permutation(len(rows))[:limit]]
    return [(base / r["path"], labels.class_index(r["label"]), r.get("subject") or "") for r in rows]


def score(y_true: np.ndarray, y_pred: np.ndarray, found: np.ndarray, classes: int) -> dict:
    """Macro-F1 over the set's classes (7 for photos, 8 for videos as ABAW scores them) and references."""
    reference = metrics.reference_scores(y_true, num_classes=classes)
    return {"frames": int(y_true.size), "face_found": float(found.mean()) if found.size else 0.0,
            "f1": metrics.macro_f1(y_true, y_pred, classes), "accuracy": metrics.accuracy(y_true, y_pred, classes),
            "majority_f1": reference["majority_f1"], "chance_f1": reference["chance_f1"]}


def run_images(peer: Peer, data: Path, name: str, limit: int | None) -> dict[str, dict]:
    rows = image_rows(data, name, limit)
    whole = name != "taiwanese_dev"
    predicted = [peer.predict(_bgr(path), whole_face=whole) for path, _, _ in rows]
    found = np.array([p is not None for p in predicted])
    y_pred = np.array([NO_FACE if p is None else p for p in predicted], dtype=np.int64)
    y_true = np.array([label for _, label, _ in rows], dtype=np.int64)
    out = {name: score(y_true, y_pred, found, 7)}
    if name == "taiwanese_dev":
        held = np.array([subject in HELD_OUT for _, _, subject in rows])
        out["taiwanese_dev_held_out_performers"] = score(y_true[held], y_pred[held], found[held], 7)
    return out


def run_videos(peer: Peer, data: Path, stride: int) -> dict:
    import cv2

    y_true, y_pred, found = [], [], []
    for video in sorted((data / "videos" / "labeled").glob("*.mp4")):
        truth = np.loadtxt(video.with_suffix(".txt"), skiprows=1, dtype=np.int64, ndmin=1)
        capture = cv2.VideoCapture(str(video))
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if index % stride == 0 and index < truth.size and truth[index] >= 0:
                guess = peer.predict(frame)
                y_true.append(truth[index])
                found.append(guess is not None)
                y_pred.append(NO_FACE if guess is None else guess)
            index += 1
        capture.release()
    return score(np.array(y_true), np.array(y_pred), np.array(found), labels.NUM_CLASSES)


def main(argv=None) -> int:
    args = parse_args(argv)
    data = Path(args.data)
    peer = Peer()
    results, start = {}, time.perf_counter()
    for name in args.sets:
        began = time.perf_counter()
        part = run_videos(peer, data, args.video_stride) if name == "videos" else \
            run_images(peer, data, name, args.limit)
        for key, value in part.items() if name != "videos" else [("dev_videos", part)]:
            results[key] = {**value, "seconds": round(time.perf_counter() - began, 1)}
            print(f"{key:<36} frames {value['frames']:>6}  face found {value['face_found']:.2f}  "
                  f"macro-F1 {value['f1']:.3f}  accuracy {value['accuracy']:.3f}  "
                  f"(majority {value['majority_f1']:.3f}, chance {value['chance_f1']:.3f})", flush=True)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    record = {"peer": "fer 25.10.3 (FER2013 mini-Xception, OpenCV Haar detector)", "results": results,
              "video_stride": args.video_stride, "limit": args.limit,
              "seconds": round(time.perf_counter() - start, 1)}
    (out / "peers.json").write_text(json.dumps(record, indent=2))
    print(f"wrote {out / 'peers.json'} in {record['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
