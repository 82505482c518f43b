"""Per-video post-processing without Ray: LogitsStage on real face crops, then VideoPostprocess per system.

The batches are what the annotate chain hands these stages (fer_ray.jobs.annotate.steps): faces-table
columns in any row order, some rows with empty face bytes, frames missing from a stride. Models are untrained
smoke checkpoints (tests.helpers): this checks the bookkeeping, not accuracy.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fer_ray import labels, schema, shards, storage
from fer_ray.faces import encode_face, resize_crop
from fer_ray.infer import cascade, fill, smoothing, systems
from fer_ray.infer.logits import COLUMN_PREFIX, LogitsStage, column
from fer_ray.infer.postprocess import PREDICTIONS, VideoPostprocess, full_timestamps, submission_uri
from tests.conftest import need_shared
from tests.helpers import write_untrained_models

FPS = 30.0
NEUTRAL = labels.class_index("Neutral")


@pytest.fixture(scope="module")
def entries(tmp_path_factory):
    uri = str(tmp_path_factory.mktemp("models"))
    return systems.entries(write_untrained_models(uri), uri)


@pytest.fixture(scope="module")
def stage(entries):
    return LogitsStage(entries)


@pytest.fixture(scope="module")
def face_bytes():
    """Six real dev photos: the central head region resized to a 112 crop (the "already a face" path)."""
    folder = need_shared("images", "taiwanese_dev", "images")
    out = []
    for path in sorted(folder.glob("*.jpg"))[:6]:
        image = np.asarray(Image.open(path).convert("RGB"))
        h, w = image.shape[:2]
        out.append(encode_face(resize_crop(image[h // 8: h * 7 // 8, w // 8: w * 7 // 8], 112)))
    return out


def faces_batch(video_id: str, frames, faces, num_frames: int) -> dict:
    """A numpy batch of faces-table columns as Ray Data gives the logits stage."""
    frames = np.asarray(frames, dtype=np.int64)
    face = np.empty(len(frames), dtype=object)
    face[:] = list(faces)
    return {schema.VIDEO_ID: np.asarray([video_id] * len(frames)), schema.FRAME_INDEX: frames,
            schema.TIMESTAMP: frames / FPS, schema.FACE: face,
            schema.NUM_FRAMES: np.full(len(frames), num_frames, dtype=np.int64)}


def permuted(batch: dict, seed: int) -> dict:
    order = np.random.default_rng(seed).permutation(len(batch[schema.FRAME_INDEX]))
    return {k: np.asarray(v)[order] for k, v in batch.items()}


def for_system(logits: dict, chosen) -> dict:
    """Only the chosen models' score columns, as the pipeline's logits stage (run with them) would emit."""
    keep = {column(e) for e in chosen}
    return {k: v for k, v in logits.items() if not k.startswith(COLUMN_PREFIX) or k in keep}


def postprocess(output: str, entries, system: str, logits: dict, window: int = 256,
                video_prior: float = 0.0) -> tuple[dict, dict]:
    """(summary row, predictions columns as numpy) of one VideoPostprocess call."""
    chosen = systems.select(entries, system)
    post = VideoPostprocess(output, chosen, system, window, version="test", video_prior=video_prior)
    summary = post(for_system(logits, chosen))
    video_id = summary[schema.VIDEO_ID][0]
    assert shards.is_done(output, PREDICTIONS, video_id)
    table = storage.read_parquet_many(shards.complete_parts(output, PREDICTIONS, [video_id]))
    rows = {name: table.column(name).to_pylist() for name in table.column_names}
    for name in (schema.PROBS, schema.COARSE_PROBS, schema.NEGATIVE_PROBS):
        rows[name] = np.asarray(rows[name], dtype=np.float64)
    for name in (schema.FRAME_INDEX, schema.LABEL, schema.TIMESTAMP, schema.FACE_FOUND, schema.FILLED):
        rows[name] = np.asarray(rows[name])
    return summary, rows


def nearest_face(face_found: np.ndarray) -> np.ndarray:
    """By brute force: the face frame each frame copies (nearest; a tie goes to the earlier frame)."""
    faces = np.flatnonzero(face_found)
    return np.array([faces[np.argmin(np.abs(faces - i) * 2 + (faces > i))] for i in range(len(face_found))])


# A 50-frame video decoded at stride 2 (odd frames never decoded); no face on decoded frames 0, 10-14, 40.
NUM_FRAMES = 50
DECODED = np.arange(0, NUM_FRAMES, 2)
NO_FACE = {0, 10, 12, 14, 40}


@pytest.fixture(scope="module")
def varied(face_bytes):
    faces = [b"" if f in NO_FACE else face_bytes[k % len(face_bytes)] for k, f in enumerate(DECODED)]
    return faces_batch("varied", DECODED, faces, NUM_FRAMES)


@pytest.mark.parametrize("system", systems.SYSTEMS)
def test_every_frame_once_in_order_gaps_filled(tmp_path, entries, stage, varied, system):
    logits = stage(permuted(varied, seed=1))
    assert schema.FACE not in logits and logits[schema.FACE_FOUND].sum() == len(DECODED) - len(NO_FACE)
    summary, rows = postprocess(str(tmp_path / "a"), entries, system, logits)
    _, again = postprocess(str(tmp_path / "b"), entries, system, permuted(logits, seed=2))

    assert rows[schema.FRAME_INDEX].tolist() == list(range(NUM_FRAMES))  # each frame once, in order
    assert summary["frames"] == [NUM_FRAMES] and summary["faces"] == [len(DECODED) - len(NO_FACE)]
    assert again[schema.LABEL].tolist() == rows[schema.LABEL].tolist()  # input order does not matter
    np.testing.assert_allclose(again[schema.PROBS], rows[schema.PROBS], atol=1e-6)

    face_found = np.isin(np.arange(NUM_FRAMES), [f for f in DECODED if f not in NO_FACE])
    assert rows[schema.FACE_FOUND].tolist() == face_found.tolist()
    assert rows[schema.FILLED].tolist() == (~face_found).tolist()
    source = nearest_face(face_found)
    assert rows[schema.LABEL].tolist() == rows[schema.LABEL][source].tolist()
    np.testing.assert_array_equal(rows[schema.PROBS], rows[schema.PROBS][source])
    # gap 9..15 (7 frames): 4 from frame 8, 3 from frame 16; gap 39..41: the tie at 40 goes to 38
    assert source[0] == 2 and source[12] == 8 and source[13] == 16 and source[40] == 38 and source[41] == 42

    assert rows[schema.LABEL_NAME] == [labels.ABAW_CLASSES[k] for k in rows[schema.LABEL]]
    np.testing.assert_allclose(rows[schema.PROBS].sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(rows[schema.TIMESTAMP], np.arange(NUM_FRAMES) / FPS)
    assert set(rows[schema.SYSTEM]) == {system}
    assert rows[schema.COARSE_PROBS].shape == ((NUM_FRAMES, 5) if system == "cfc_sp" else (NUM_FRAMES, 0))
    submitted = labels.read_expr(submission_uri(str(tmp_path / "a"), "varied"))
    assert submitted.tolist() == rows[schema.LABEL].tolist()


@pytest.mark.parametrize("system", systems.SYSTEMS)
def test_window_changes_only_the_smoothing(tmp_path, entries, stage, varied, system):
    logits = stage(varied)
    _, raw = postprocess(str(tmp_path / "w0"), entries, system, logits, window=0)
    _, smooth = postprocess(str(tmp_path / "w256"), entries, system, logits, window=256)
    for name in (schema.FRAME_INDEX, schema.TIMESTAMP, schema.FACE_FOUND, schema.FILLED):
        assert raw[name].tolist() == smooth[name].tolist()
    assert not np.allclose(raw[schema.PROBS], smooth[schema.PROBS], atol=1e-6)  # varied faces: SP moves them
    if system == "baseline":  # one expr model: probs are its softmax, SP is f + window mean, then normalised
        face = raw[schema.FACE_FOUND]
        expected = cascade.normalize_rows(smoothing.smooth(raw[schema.PROBS][face], 256))
        np.testing.assert_allclose(smooth[schema.PROBS][face], expected, atol=1e-5)
        assert smooth[schema.LABEL][face].tolist() == expected.argmax(axis=1).tolist()


def test_the_video_prior_divides_the_videos_mean_out_of_each_frame(tmp_path, entries, stage, varied):
    """The baseline (one expr model): the written probabilities are its softmax over the face frames divided
    by their mean to the power of the video prior, rows normalised; window 0 so nothing else moves them."""
    logits = stage(varied)
    _, raw = postprocess(str(tmp_path / "p0"), entries, "baseline", logits, window=0)
    _, fixed = postprocess(str(tmp_path / "p1"), entries, "baseline", logits, window=0, video_prior=0.5)
    face = raw[schema.FACE_FOUND]
    probs = raw[schema.PROBS][face]
    expected = cascade.normalize_rows(probs / probs.mean(axis=0) ** 0.5)
    np.testing.assert_allclose(fixed[schema.PROBS][face], expected, atol=1e-5)
    assert not np.allclose(expected, probs, atol=1e-4)  # the untrained model leans: the correction moves it
    assert fixed[schema.LABEL][face].tolist() == expected.argmax(axis=1).tolist()


@pytest.mark.parametrize("system", ["cfc_sp", "baseline", "mao"])
def test_smoothing_a_constant_sequence_changes_nothing(tmp_path, entries, stage, face_bytes, system):
    """The same face on every frame: every frame model's scores are constant, so f + mean(f) = 2f changes no
    argmax and no normalised probability. (Not PRL: its sequence head adds a per-position encoding.)"""
    frames = np.arange(40)
    logits = stage(faces_batch("constant", frames, [face_bytes[0]] * len(frames), len(frames)))
    _, raw = postprocess(str(tmp_path / "w0"), entries, system, logits, window=0)
    _, smooth = postprocess(str(tmp_path / "w256"), entries, system, logits, window=256)
    assert smooth[schema.LABEL].tolist() == raw[schema.LABEL].tolist()
    np.testing.assert_allclose(smooth[schema.PROBS], raw[schema.PROBS], atol=1e-5)


@pytest.mark.parametrize("system", systems.SYSTEMS)
def test_video_without_a_face_is_all_filled_neutral(tmp_path, entries, stage, system):
    frames = np.arange(0, 30, 3)
    logits = stage(faces_batch("noface", frames, [b""] * len(frames), 30))
    assert not logits[schema.FACE_FOUND].any()
    assert np.isnan(logits[column(systems.select(entries, system)[0])]).all()
    summary, rows = postprocess(str(tmp_path), entries, system, permuted(logits, seed=3))
    assert summary["status"] == ["done"] and summary["faces"] == [0]
    assert rows[schema.FRAME_INDEX].tolist() == list(range(30))
    assert rows[schema.FILLED].all() and not rows[schema.FACE_FOUND].any()
    assert set(rows[schema.LABEL].tolist()) == {fill.NEUTRAL} == {NEUTRAL}
    np.testing.assert_array_equal(rows[schema.PROBS], np.tile(np.eye(labels.NUM_CLASSES)[NEUTRAL], (30, 1)))
    assert labels.read_expr(submission_uri(str(tmp_path), "noface")).tolist() == [NEUTRAL] * 30


def test_full_timestamps():
    # known frames keep their stamps exactly; the rest follow the rate seen between the first and last
    frames = np.array([2, 4, 8])
    stamps = np.array([0.1, 0.2, 0.41])
    out = full_timestamps(frames, stamps, 10)
    np.testing.assert_allclose(out[[2, 4, 8]], stamps)
    rate = (0.41 - 0.1) / 6
    np.testing.assert_allclose(out[[0, 1, 3, 9]], 0.1 + (np.array([0, 1, 3, 9]) - 2) * rate)
    # one known frame: one frame per index step from it; none: the frame index itself
    np.testing.assert_allclose(full_timestamps(np.array([3]), np.array([1.0]), 5), [-2.0, -1.0, 0.0, 1.0, 2.0])
    np.testing.assert_allclose(full_timestamps(np.zeros(0, np.int64), np.zeros(0), 4), [0, 1, 2, 3])
    # frames past num_frames (a label file longer than the decode) are ignored, not an IndexError
    out = full_timestamps(np.array([0, 5, 12]), np.array([0.0, 0.5, 1.2]), 8)
    assert out.shape == (8,) and out[5] == 0.5
    np.testing.assert_allclose(out[7], 0.7)
    # a constant-rate video round-trips
    np.testing.assert_allclose(full_timestamps(np.arange(0, 30, 3), np.arange(0, 30, 3) / FPS, 30),
                               np.arange(30) / FPS)


def test_postprocessing_actor_starts_without_torch():
    """The post-processing actor of a frame-model system imports neither torch nor timm (seconds per actor
    start on a small node); torch comes in only where a temporal head runs."""
    import subprocess
    import sys

    code = ("import sys; from fer_ray.infer.postprocess import SafeVideoPostprocess; "
            "print(sorted(m for m in ('torch', 'timm', 'torchvision', 'facenet_pytorch') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout


def test_annotate_driver_imports_without_torch():
    """The annotate job's driver (jobs/annotate.py, fer_ray.jobs.annotate) imports neither torch, timm nor
    torchvision: it only names the logits stage, and those imports cost every `ray job submit` ~4 s."""
    import subprocess
    import sys

    code = ("import sys; import fer_ray.jobs.annotate; from fer_ray.infer.logits import LogitsStage; "
            "print(sorted(m for m in ('torch', 'timm', 'torchvision', 'facenet_pytorch') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout
