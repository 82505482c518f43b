"""Training and inference see the same pixels: one face decoder, one eval transform from the data config.

The faces are what preprocessing stores (fer_ray.codec.encode_face of real dev photos, and of CK+'s grey
crops), plus a PNG and a grey JPEG as a face column may hold them. The train path is fer_ray.train.data's
decode + train.augment.eval_transform; the inference path is LogitsStage's batch decode and resize.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from fer_ray import codec
from fer_ray.faces import decode_face, resize_crop
from fer_ray.infer import systems
from fer_ray.infer.logits import LogitsStage, decode_faces
from fer_ray.train import augment, data
from tests.conftest import need_shared
from tests.helpers import write_untrained_models


def _encoded(image: np.ndarray, fmt: str, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).convert(mode).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def faces() -> list[bytes]:
    photos = sorted(need_shared("images", "taiwanese_dev", "images").glob("*.jpg"))[:8]
    crops = sorted(need_shared("images", "ckplus48", "images").rglob("*.png"))[:4]
    out = [codec.encode_face(resize_crop(np.asarray(Image.open(p).convert("RGB")), 112)) for p in photos]
    out += [codec.encode_face(resize_crop(np.asarray(Image.open(p)), 112)) for p in crops]
    gradient = np.cumsum(np.random.default_rng(0).integers(0, 9, (112, 112, 3)), axis=0).astype(np.uint8)
    return out + [_encoded(gradient, "PNG"), _encoded(gradient, "JPEG", "L")]


def test_train_and_inference_decode_identical_pixels(faces):
    images, present = decode_faces(np.asarray(faces + [b""], dtype=object))
    assert present.tolist() == [True] * len(faces) + [False]
    for face, inferred in zip(faces, images):
        trained = data.decode_face(face)
        assert trained.dtype == torch.uint8 and trained.shape == (3, 112, 112)
        assert torch.equal(trained, inferred)
        assert np.array_equal(decode_face(face), inferred.permute(1, 2, 0).numpy())  # faces' channels-last view
        with Image.open(io.BytesIO(face)) as image:  # PIL, inference's decoder before: the same pixels
            assert np.array_equal(np.asarray(image.convert("RGB")), inferred.permute(1, 2, 0).numpy())


def test_model_inputs_identical_in_training_and_inference(faces, tmp_path):
    models = (("baseline", "resnet_smoke", "expr"), ("coarse_hrnet", "hrnet_smoke", "coarse"),
              ("coarse_swin", "swin_tiny_smoke", "coarse"))
    entries = systems.entries(write_untrained_models(str(tmp_path), models=models), str(tmp_path))
    stage = LogitsStage(entries)
    inputs = stage._inputs(decode_faces(np.asarray(faces, dtype=object))[0])
    for entry in entries:
        transform = augment.eval_transform(entry.input_size, entry.arch)
        trained = torch.stack([transform(data.decode_face(face)) for face in faces])
        assert torch.equal(trained, inputs[entry.key]), entry.name


def test_png_faces_decode_after_decord_is_loaded():
    """decord (loaded by every decoding actor) brings its own zlib/libpng, and torchvision's PNG decoder then
    fails; decode_face must still read a PNG face, with the pixels PIL reads, in such a process."""
    import subprocess
    import sys

    code = (
        "import decord, io, numpy as np\n"
        "from PIL import Image\n"
        "from fer_ray import codec\n"
        "pixels = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)\n"
        "for mode in ('RGB', 'L', 'P'):\n"
        "    buf = io.BytesIO(); Image.fromarray(pixels).convert(mode).save(buf, 'PNG')\n"
        "    want = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert('RGB'))\n"
        "    got = codec.decode_face(buf.getvalue()).permute(1, 2, 0).numpy()\n"
        "    assert np.array_equal(got, want), mode\n"
        "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr[-2000:]
