"""Faces: MTCNN detection, 5-point alignment, per-video tracking."""

from fer_ray.faces.align import (
    ARCFACE_TEMPLATE_112,
    align_batch,
    align_face,
    decode_face,
    encode_face,
    resize_crop,
    similarity_transform,
    template,
)
from fer_ray.faces.detect import Detection, FaceDetector, choose_face, iou
from fer_ray.faces.track import FaceTracker

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "Detection",
    "FaceDetector",
    "FaceTracker",
    "align_batch",
    "align_face",
    "choose_face",
    "decode_face",
    "encode_face",
    "iou",
    "resize_crop",
    "similarity_transform",
    "template",
]
