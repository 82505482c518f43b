"""Face crops as stored bytes: the one encoder and the one decoder every stage uses.

Preprocessing stores each aligned face as JPEG (`encode_face`); training (fer_ray.train.data), inference
(fer_ray.infer.logits) and anything else reading faces/ turn the bytes back into pixels with `decode_face`,
so a model is trained and run on the same pixels. PIL does both: the encoder's own library, and it reads
every format a face column may hold (JPEG, PNG, grey). Training used torchvision's decode_image before;
it gave the same pixels on the shared dev photos and CK+ crops (tests/unit/test_face_pixels.py).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

__all__ = ["encode_face", "decode_face"]


def encode_face(face: np.ndarray, quality: int = 95) -> bytes:
    """JPEG bytes of an RGB uint8 face crop."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(face, dtype=np.uint8)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def decode_face(data: bytes) -> np.ndarray:
    """RGB uint8 (H, W, 3) array, writable, from encoded face bytes."""
    with Image.open(io.BytesIO(bytes(data))) as image:
        return np.array(image.convert("RGB"))
