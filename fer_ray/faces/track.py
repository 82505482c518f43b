"""Per-video face tracking: full MTCNN every ``every`` frames, O-net refinement in between.

One ``FaceTracker`` per video inside one task; feed it the video's frames in order, chunk after chunk.

Rules (``every=k``):
- frame ``i`` with ``i % k == 0`` (counted over the whole video), or any frame after a frame with no
  tracked face but within ``k`` of a key frame: see below.
- key frames: full detection, then ``choose_face`` against the previous frame's face.
- other frames with a face in the previous frame: O-net refinement on a crop around that face; the
  refined face is kept when its score >= the detector's ``min_score`` and its IoU with the previous box
  >= ``iou_keep``. Otherwise full detection runs on that frame (fallback), so a face that left yields
  None on that very frame (never a stale box).
- other frames with no face in the previous frame: None until the next key frame (a face appearing is
  picked up within ``k - 1`` frames; key frames are the only full detections on face-less stretches).
"""

from __future__ import annotations

import numpy as np

from fer_ray.faces.detect import Detection, FaceDetector, choose_face, iou

__all__ = ["FaceTracker"]


class FaceTracker:
    def __init__(self, detector: FaceDetector, every: int = 1, iou_keep: float = 0.3):
        if every < 1:
            raise ValueError("every must be >= 1")
        self.detector = detector
        self.every = int(every)
        self.iou_keep = float(iou_keep)
        self.index = 0  # frames seen so far in this video
        self.previous: Detection | None = None
        self.full_detections = 0  # frames that ran the full detector (for benchmarks)

    def process(self, frames: np.ndarray) -> list[Detection | None]:
        """One face (or None) per frame of ``frames`` (uint8 (N,H,W,3), consecutive frames of the video)."""
        n = len(frames)
        if n == 0:
            return []
        keys = [i for i in range(n) if (self.index + i) % self.every == 0]
        key_faces = dict(zip(keys, self.detector.detect(frames[keys]))) if keys else {}
        self.full_detections += len(keys)
        out: list[Detection | None] = [None] * n
        i = 0
        while i < n:
            if i in key_faces:
                out[i] = self.previous = choose_face(key_faces[i], self.previous)
                i += 1
                continue
            stop = next((j for j in range(i, n) if j in key_faces), n)  # frames i..stop-1: between key frames
            if self.previous is None:
                i = stop  # no face to follow: None until the next key frame
                continue
            # all frames up to the next key frame refined at once, seeded with the last face's box
            # (two O-net passes: the second starts from each frame's own regressed box)
            refined = self.detector.refine(frames[i:stop], np.repeat(self.previous.bbox[None], stop - i, 0))
            for j, face in enumerate(refined, start=i):
                if face is None or iou(face.bbox, self.previous.bbox) < self.iou_keep:
                    # lost: full detection on this frame, then continue from what it found
                    self.full_detections += 1
                    out[j] = self.previous = choose_face(self.detector.detect(frames[j:j + 1])[0], self.previous)
                    i = j + 1
                    break
                out[j] = self.previous = face
            else:
                i = stop
        self.index += n
        return out
