"""Face crops as stored bytes: the one encoder and the one decoder every stage uses.

Preprocessing stores each aligned face as JPEG (`encode_face`, PIL); training (fer_ray.train.data),
inference (fer_ray.infer.logits) and anything else reading faces/ turn the bytes back into pixels with
`decode_face`, so a model is trained and run on the same pixels. JPEG is decoded by torchvision
(libjpeg-turbo): it hands back the (3, H, W) uint8 tensor both stages feed their transforms, in about 190 us
per 112-pixel face against PIL's 300-380 us (one CPU thread). Other formats go through PIL (see
`decode_face`). PIL gives the same pixels (tests/unit/test_face_pixels.py, on shared dev photos and CK+ crops).
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image

__all__ = ["encode_face", "decode_face"]


def encode_face(face: np.ndarray, quality: int = 95) -> bytes:
    """JPEG bytes of an RGB uint8 face crop."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(face, dtype=np.uint8)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


JPEG_START = b"\xff\xd8"


def decode_face(data: bytes) -> torch.Tensor:
    """RGB uint8 (3, H, W) tensor from encoded face bytes (JPEG, PNG; grey ones become RGB).

    JPEG (what preprocessing stores) through torchvision; any other format through PIL, because torchvision's
    PNG decoder fails ("Internal error") in a process that imported decord first (decord brings its own
    zlib/libpng), which every preprocessing actor does. PNG is lossless: both give the same pixels."""
    if bytes(data[:2]) == JPEG_START:
        return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    with Image.open(io.BytesIO(data)) as image:
        return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).contiguous()
