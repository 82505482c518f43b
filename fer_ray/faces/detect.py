"""MTCNN face detection (facenet-pytorch weights) on batches of video frames.

``FaceDetector.detect`` runs the three-stage MTCNN on a batch of equally sized frames, optionally
downscaled first (``detect_size``), and maps boxes and landmarks back to source-frame pixels.
``FaceDetector.refine`` runs only the O-net on a crop around a known box: the cheap per-frame step the
tracker (track.py) uses between full detections.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from facenet_pytorch.models.mtcnn import MTCNN
from facenet_pytorch.models.utils.detect_face import detect_face

__all__ = ["Detection", "FaceDetector", "choose_face", "iou"]


@dataclass
class Detection:
    """One face in one frame, source-frame pixel coordinates."""

    bbox: np.ndarray  # float32 (4,) x1, y1, x2, y2
    landmarks: np.ndarray  # float32 (5, 2): left eye, right eye, nose, left mouth, right mouth (image left/right)
    score: float

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = (float(v) for v in self.bbox)
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two x1,y1,x2,y2 boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def choose_face(faces: list[Detection], previous: Detection | None) -> Detection | None:
    """The face to keep for this frame.

    Rule: the largest face; but when the previous frame had a face, the face with the highest IoU with it
    wins if that IoU is above 0.3, so that a second (larger) person entering does not steal the track.
    """
    if not faces:
        return None
    if previous is not None:
        overlaps = [iou(f.bbox, previous.bbox) for f in faces]
        best = int(np.argmax(overlaps))
        if overlaps[best] > 0.3:
            return faces[best]
    return max(faces, key=lambda f: f.area)


class FaceDetector:
    """Batched MTCNN.

    Args:
        device: torch device for the three nets and the image pyramid ("cpu", "cuda", "cuda:1").
        min_face_size: smallest face searched for, in pixels of the image MTCNN sees (after the
            ``detect_size`` downscale): with a 256-px frame and detect_size=160, 40 means 64 source pixels.
        detect_size: frames are downscaled (antialiased bilinear) so the longer side is at most this
            before MTCNN; boxes and landmarks are mapped back to full resolution. None: no downscale.
        thresholds: P-net, R-net, O-net score thresholds.
        min_score: detections below this final score are dropped.
    """

    def __init__(
        self,
        device: str = "cpu",
        min_face_size: int = 40,
        detect_size: int | None = 320,
        thresholds=(0.6, 0.7, 0.7),
        min_score: float = 0.9,
    ):
        self.device = torch.device(device)
        self.min_face_size = int(min_face_size)
        self.detect_size = detect_size
        self.thresholds = tuple(float(t) for t in thresholds)
        self.min_score = float(min_score)
        self.factor = 0.709
        self.mtcnn = MTCNN(
            min_face_size=self.min_face_size, thresholds=list(self.thresholds), keep_all=True,
            device=self.device,
        ).eval()
        for p in self.mtcnn.parameters():
            p.requires_grad_(False)

    # -- helpers -------------------------------------------------------------------------------------
    def _scale_for(self, h: int, w: int) -> float:
        if self.detect_size is None or max(h, w) <= self.detect_size:
            return 1.0
        return self.detect_size / float(max(h, w))

    def _to_tensor(self, frames) -> torch.Tensor:
        if isinstance(frames, torch.Tensor):
            return frames.to(self.device)
        frames = np.asarray(frames)
        if not (frames.flags.writeable and frames.flags.c_contiguous):
            frames = np.ascontiguousarray(frames).copy()
        return torch.from_numpy(frames).to(self.device)

    # -- full detection ------------------------------------------------------------------------------
    @torch.inference_mode()
    def detect(self, frames: np.ndarray) -> list[list[Detection]]:
        """All faces per frame. frames: uint8 (N,H,W,3) RGB (numpy or torch); returns N lists."""
        if frames.ndim == 3:
            frames = frames[None]
        n, h, w = frames.shape[:3]
        if n == 0:
            return []
        imgs = self._to_tensor(frames)
        scale = self._scale_for(h, w)
        if scale < 1.0:
            dh, dw = max(1, round(h * scale)), max(1, round(w * scale))
            small = F.interpolate(imgs.permute(0, 3, 1, 2).float(), size=(dh, dw), mode="bilinear",
                                  antialias=True, align_corners=False)
            imgs = small.permute(0, 2, 3, 1)
            sx, sy = w / dw, h / dh
        else:
            imgs = imgs.float()
            sx = sy = 1.0
        batch_boxes, batch_points = detect_face(
            imgs, self.min_face_size, self.mtcnn.pnet, self.mtcnn.rnet, self.mtcnn.onet,
            list(self.thresholds), self.factor, self.device,
        )
        out: list[list[Detection]] = []
        for boxes, points in zip(batch_boxes, batch_points):
            faces = []
            boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
            points = np.asarray(points, dtype=np.float64).reshape(-1, 5, 2)
            for box, pts in zip(boxes, points):
                if box[4] < self.min_score:
                    continue
                bbox = np.array([(box[0] + 0.5) * sx - 0.5, (box[1] + 0.5) * sy - 0.5,
                                 (box[2] + 0.5) * sx - 0.5, (box[3] + 0.5) * sy - 0.5], dtype=np.float32)
                lm = np.empty((5, 2), dtype=np.float32)
                lm[:, 0] = (pts[:, 0] + 0.5) * sx - 0.5
                lm[:, 1] = (pts[:, 1] + 0.5) * sy - 0.5
                faces.append(Detection(bbox=bbox, landmarks=lm, score=float(box[4])))
            faces.sort(key=lambda f: f.area, reverse=True)
            out.append(faces)
        return out

    # -- O-net refinement ----------------------------------------------------------------------------
    @torch.inference_mode()
    def refine(self, frame: np.ndarray, box: np.ndarray, passes: int = 2) -> Detection | None:
        """Re-locate a face near ``box`` (source pixels) in ``frame`` with the O-net only.

        The box is made square, cropped, resized to 48x48 and scored; the O-net's box regression gives
        the next crop, ``passes`` times. Returns None when the O-net score falls below ``min_score``.
        """
        img = self._to_tensor(frame)
        h, w = img.shape[:2]
        chw = img.permute(2, 0, 1).float()
        box = np.asarray(box, dtype=np.float64)[:4].copy()
        det = None
        for _ in range(max(1, passes)):
            box = _square(box)
            x1, y1, x2, y2 = (int(np.trunc(v)) for v in box)
            cx1, cy1, cx2, cy2 = max(x1, 1), max(y1, 1), min(x2, w), min(y2, h)
            if cx2 <= cx1 - 1 or cy2 <= cy1 - 1 or cx2 - cx1 < 4 or cy2 - cy1 < 4:
                return None
            crop = chw[:, cy1 - 1:cy2, cx1 - 1:cx2].unsqueeze(0)
            crop = F.interpolate(crop, size=(48, 48), mode="area")
            reg, pts, prob = self.mtcnn.onet((crop - 127.5) * 0.0078125)
            score = float(prob[0, 1])
            if score < self.min_score:
                return None
            bw, bh = box[2] - box[0] + 1, box[3] - box[1] + 1
            pts = pts[0].double().cpu().numpy()
            lm = np.stack([bw * pts[:5] + box[0] - 1, bh * pts[5:] + box[1] - 1], axis=1)
            r = reg[0].double().cpu().numpy()
            new_box = np.array([box[0] + r[0] * bw, box[1] + r[1] * bh, box[2] + r[2] * bw, box[3] + r[3] * bh])
            det = Detection(bbox=new_box.astype(np.float32), landmarks=lm.astype(np.float32), score=score)
            box = new_box
        return det


def _square(box: np.ndarray) -> np.ndarray:
    """MTCNN's ``rerec``: the square with the box's centre and longer side."""
    x1, y1, x2, y2 = box[:4]
    bw, bh = x2 - x1, y2 - y1
    side = max(bw, bh)
    nx1 = x1 + bw * 0.5 - side * 0.5
    ny1 = y1 + bh * 0.5 - side * 0.5
    return np.array([nx1, ny1, nx1 + side, ny1 + side])
