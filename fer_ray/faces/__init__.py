"""Faces: MTCNN detection, 5-point alignment, per-video tracking (one face, or every face with track ids)."""

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
from fer_ray.faces.detect import Detection, FaceDetector, choose_face, faces_at_least, iou
from fer_ray.faces.track import (
    FaceTracker,
    MultiFaceTracker,
    Track,
    TrackedChunk,
    TrackLinker,
    link_chunks,
    position_order,
)

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "Detection",
    "FaceDetector",
    "FaceTracker",
    "MultiFaceTracker",
    "position_order",
    "Track",
    "TrackLinker",
    "TrackedChunk",
    "align_batch",
    "align_face",
    "choose_face",
    "decode_face",
    "encode_face",
    "faces_at_least",
    "iou",
    "link_chunks",
    "resize_crop",
    "similarity_transform",
    "template",
]
