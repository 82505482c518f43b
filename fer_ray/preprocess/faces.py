"""Face rows: detect, align and encode frames into FACES_SCHEMA tables. One `FaceRows` per actor (it holds
the detector), shared by the fused stage and the split path's detect stage."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from fer_ray import schema
from fer_ray.preprocess.config import DetectorConfig, FacesConfig


def make_detector(config: DetectorConfig):
    from fer_ray.faces import FaceDetector

    return FaceDetector(device=config.device, min_face_size=config.min_face_size,
                        detect_size=config.detect_size, thresholds=config.thresholds, min_score=config.min_score)


def faces_table(rows: dict[str, list]) -> pa.Table:
    return pa.Table.from_pydict(rows, schema=schema.FACES_SCHEMA)


class FaceRows:
    """The detector (loaded once) and the crop settings: frames and their detections -> face rows."""

    def __init__(self, config: FacesConfig):
        self.config = config
        self.detector = make_detector(config.detector)

    def tracker(self):
        """A fresh tracker: full detection every `track_every` frames, O-net tracking in between."""
        from fer_ray.faces import FaceTracker

        return FaceTracker(self.detector, every=self.config.track_every)

    def table(self, video_ids, indices, timestamps, frames, detections, frame_labels, subjects,
              num_frames) -> pa.Table:
        """FACES_SCHEMA rows for equally sized frames and their detections (None: no face)."""
        n = len(video_ids)
        return faces_table({
            schema.VIDEO_ID: list(video_ids),
            schema.FRAME_INDEX: [int(i) for i in indices],
            schema.TIMESTAMP: [float(t) for t in timestamps],
            schema.FACE: self.crops(frames, detections),
            schema.BBOX: [None if d is None else d.bbox.astype(np.float32).tolist() for d in detections],
            schema.LANDMARKS: [None if d is None else d.landmarks.astype(np.float32).reshape(-1).tolist()
                               for d in detections],
            schema.DET_SCORE: [None if d is None else float(d.score) for d in detections],
            schema.LABEL: [int(v) for v in frame_labels],
            schema.REASON: [None if d is not None else schema.REASON_NO_FACE for d in detections],
            schema.SUBJECT: [s or None for s in subjects],
            schema.NUM_FRAMES: [int(num_frames)] * n,
        })

    def crops(self, frames: np.ndarray, detections: list) -> list[bytes]:
        """JPEG bytes of each frame's aligned face (batched on the detector's device); b"" without one."""
        import torch

        from fer_ray.faces import align_batch, encode_face

        have = [i for i, d in enumerate(detections) if d is not None]
        encoded = [b""] * len(detections)
        if have:
            device = self.detector.device
            landmarks = torch.from_numpy(np.stack([detections[i].landmarks for i in have]).astype(np.float32))
            crops = align_batch(torch.from_numpy(frames[have]).to(device), landmarks.to(device),
                                self.config.face_size).cpu().numpy()
            for crop, i in zip(crops, have):
                encoded[i] = encode_face(crop, quality=self.config.jpeg_quality)
        return encoded

    def images(self, members: list[dict], images: list[np.ndarray]) -> list[pa.Table]:
        """Rows of still images: detected per group of equally sized images (the detector's batches)."""
        from fer_ray.faces import choose_face

        by_shape: dict[tuple, list[int]] = {}
        for i, image in enumerate(images):
            by_shape.setdefault(image.shape, []).append(i)
        tables = []
        for group in by_shape.values():
            frames = np.stack([images[i] for i in group])
            found = [choose_face(faces, None) for faces in self.detector.detect(frames)]
            chosen = [members[i] for i in group]
            tables.append(self.table([m[schema.VIDEO_ID] for m in chosen], [0] * len(group), [0.0] * len(group),
                                     frames, found, [m[schema.LABEL] for m in chosen],
                                     [m[schema.SUBJECT] for m in chosen], 1))
        return tables

    def face_crops(self, members: list[dict], images: list[np.ndarray]) -> pa.Table:
        """Rows of pre-cropped faces (face_crop sets): resized, no detection; the box is the whole image."""
        from fer_ray.faces import encode_face, resize_crop

        size, quality = self.config.face_size, self.config.jpeg_quality
        return faces_table({
            schema.VIDEO_ID: [m[schema.VIDEO_ID] for m in members],
            schema.FRAME_INDEX: [0] * len(members),
            schema.TIMESTAMP: [0.0] * len(members),
            schema.FACE: [encode_face(resize_crop(image, size), quality=quality) for image in images],
            schema.BBOX: [[0.0, 0.0, float(image.shape[1]), float(image.shape[0])] for image in images],
            schema.LANDMARKS: [None] * len(members),
            schema.DET_SCORE: [None] * len(members),
            schema.LABEL: [int(m[schema.LABEL]) for m in members],
            schema.REASON: [None] * len(members),
            schema.SUBJECT: [m.get(schema.SUBJECT) or None for m in members],
            schema.NUM_FRAMES: [1] * len(members),
        })
