"""Face detection + alignment throughput on CPU: plain MTCNN vs fer_ray.faces variants.

    .venv/bin/python benchmarks/detect.py [--frames 150] [--videos tw_TW01 tw_TW11] [--threads 1] [--only tracker]

Per video, ``--frames`` consecutive frames of the labelled dev videos (256x256, 30 fps) are decoded
once; every variant then detects + aligns them (to 112) in chunks of 32, timed over ``--repeat`` runs
(best kept; decoding excluded). Landmark error: mean distance of the 5 points from the baseline's,
both mapped by the baseline's alignment matrix, i.e. pixels of the 112x112 aligned face.
(a) is facenet-pytorch's own ``MTCNN.detect`` at full resolution + the PIL reference warp.
(d) is ``MultiFaceTracker`` (every face, track ids) on the same single-face videos, aligning every tracked
face; its cost against (c) at the same settings is printed last (issue #14: at most 1.2x).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fer_ray.faces import (  # noqa: E402
    Detection,
    FaceDetector,
    FaceTracker,
    MultiFaceTracker,
    align_batch,
    align_face,
    similarity_transform,
    template,
)

CHUNK = 32


def load(videos: list[str], frames: int, data: Path) -> list[np.ndarray]:
    import decord

    out = []
    for name in videos:
        vr = decord.VideoReader(str(data / "videos" / "labeled" / f"{name}.mp4"))
        out.append(vr.get_batch(list(range(min(frames, len(vr))))).asnumpy())
    return out


def plain_mtcnn(video: np.ndarray) -> list[Detection | None]:
    from facenet_pytorch import MTCNN

    mtcnn = PLAIN.setdefault("m", MTCNN(keep_all=True, min_face_size=40))
    faces: list[Detection | None] = []
    for start in range(0, len(video), CHUNK):
        chunk = video[start:start + CHUNK]
        boxes, probs, points = mtcnn.detect(chunk, landmarks=True)
        for frame, b, p, lm in zip(chunk, boxes, probs, points):
            if b is None:
                faces.append(None)
                continue
            keep = [i for i in range(len(b)) if p[i] >= 0.9]
            if not keep:
                faces.append(None)
                continue
            i = keep[0]  # select_largest order
            face = Detection(np.asarray(b[i], np.float32), np.asarray(lm[i], np.float32), float(p[i]))
            align_face(frame, face.landmarks, 112)
            faces.append(face)
    return faces


PLAIN: dict = {}


def with_batch_align(video: np.ndarray, faces: list[Detection | None]) -> None:
    idx = [i for i, f in enumerate(faces) if f is not None]
    if idx:
        lms = torch.from_numpy(np.stack([faces[i].landmarks for i in idx]))
        align_batch(torch.from_numpy(video[idx]), lms, 112)


def detector_variant(detect_size):
    detector = FaceDetector(detect_size=detect_size)

    def run(video):
        faces = []
        for start in range(0, len(video), CHUNK):
            chunk = video[start:start + CHUNK]
            found = detector.detect(chunk)
            chosen = []
            for f in found:
                chosen.append(f[0] if f else None)
            with_batch_align(chunk, chosen)
            faces += chosen
        return faces

    return run


def tracker_variant(every, detect_size):
    detector = FaceDetector(detect_size=detect_size)

    def run(video):
        tracker = FaceTracker(detector, every=every)
        faces = []
        for start in range(0, len(video), CHUNK):
            chunk = video[start:start + CHUNK]
            chosen = tracker.process(chunk)
            with_batch_align(chunk, chosen)
            faces += chosen
        return faces

    return run


def multi_tracker_variant(every, detect_size):
    """Every face with its track id; the benchmark's face per frame is track 0's (the dev videos have one)."""
    detector = FaceDetector(detect_size=detect_size)

    def run(video):
        tracker = MultiFaceTracker(detector, every=every, min_face_size=40)
        faces = []
        for start in range(0, len(video), CHUNK):
            chunk = video[start:start + CHUNK]
            tracked = tracker.process(chunk)
            idx = [i for i, pairs in enumerate(tracked) for _ in pairs]
            if idx:
                lms = torch.from_numpy(np.stack([face.landmarks for pairs in tracked for _, face in pairs]))
                align_batch(torch.from_numpy(chunk[idx]), lms, 112)
            faces += [pairs[0][1] if pairs else None for pairs in tracked]  # pairs are sorted by id
        return faces

    return run


def error_112(ref: Detection, other: Detection) -> float:
    m = similarity_transform(ref.landmarks, template(112))
    return float(np.linalg.norm((ref.landmarks - other.landmarks) @ m[:, :2].T, axis=1).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", nargs="+", default=["tw_TW01", "tw_TW11"])
    parser.add_argument("--frames", type=int, default=150, help="frames per video")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="*", help="run only the variants whose name holds one of these words")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    videos = load(args.videos, args.frames, args.data)
    total = sum(len(v) for v in videos)
    variants = [
        ("(a) plain MTCNN full-res + PIL align", plain_mtcnn),
        ("(a') FaceDetector full-res + batch align", detector_variant(None)),
        ("(b) FaceDetector detect_size=160", detector_variant(160)),
        ("(b) FaceDetector detect_size=128", detector_variant(128)),
        ("(c) tracker every=5 full-res keys", tracker_variant(5, None)),
        ("(c) tracker every=10 full-res keys", tracker_variant(10, None)),
        ("(c) tracker every=5 keys at 160", tracker_variant(5, 160)),
        ("(d) multi-face tracker every=5 full-res keys", multi_tracker_variant(5, None)),
    ]
    if args.only:  # the baseline (a) always runs: every row is compared with it
        variants = variants[:1] + [v for v in variants[1:] if any(word in v[0] for word in args.only)]
    for _, fn in variants:
        fn(videos[0][:8])  # warm-up
    best, faces = {name: float("inf") for name, _ in variants}, {}
    for _ in range(args.repeat):  # repeats interleave the variants, so a burst of load hits them alike
        for name, fn in variants:
            t0 = time.perf_counter()
            faces[name] = [fn(v) for v in videos]
            best[name] = min(best[name], time.perf_counter() - t0)
    results = {name: (total / best[name], [f for per in faces[name] for f in per]) for name, _ in variants}

    base_fps, base_faces = results[variants[0][0]]
    print(f"{total} frames ({', '.join(args.videos)}; {args.frames} each), torch threads={args.threads}")
    print(f"{'variant':46s} {'frames/s':>9s} {'x (a)':>6s} {'found':>6s} {'err112 mean':>11s} {'p95':>6s} {'max':>6s}")
    for name, (fps, faces) in results.items():
        errs = [error_112(a, b) for a, b in zip(base_faces, faces) if a is not None and b is not None]
        found = sum(f is not None for f in faces)
        e = np.array(errs) if errs else np.array([np.nan])
        print(f"{name:46s} {fps:9.1f} {fps / base_fps:6.2f} {found:6d} {e.mean():11.2f} "
              f"{np.percentile(e, 95):6.2f} {e.max():6.2f}")
    single, multi = "(c) tracker every=5 full-res keys", "(d) multi-face tracker every=5 full-res keys"
    if single in results and multi in results:
        cost = results[single][0] / results[multi][0]
        print(f"multi-face / single-face tracker cost per frame (every=5, full-res keys): {cost:.3f}x (target <= 1.2)")


if __name__ == "__main__":
    main()
