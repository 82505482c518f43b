"""Detection, face choice and tracking on synthetic inputs and on the shared dev/test videos."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fer_ray.faces import Detection, FaceDetector, FaceTracker, choose_face, similarity_transform, template
from tests.conftest import need_shared


def _det(x1, y1, x2, y2, score=0.99) -> Detection:
    lm = np.array([[x1 + 0.3 * (x2 - x1), y1 + 0.4 * (y2 - y1)]] * 5, np.float32)
    return Detection(bbox=np.array([x1, y1, x2, y2], np.float32), landmarks=lm, score=score)


def _read(*parts, start=0, count=None):
    import decord

    path = need_shared(*parts)
    vr = decord.VideoReader(str(path))
    stop = len(vr) if count is None else min(len(vr), start + count)
    return vr.get_batch(list(range(start, stop))).asnumpy()


def _aligned_error(ref: Detection, other: Detection) -> float:
    """Mean landmark distance in 112-px aligned-face units (both mapped by ref's alignment)."""
    m = similarity_transform(ref.landmarks, template(112))
    a = ref.landmarks @ m[:, :2].T + m[:, 2]
    b = other.landmarks @ m[:, :2].T + m[:, 2]
    return float(np.linalg.norm(a - b, axis=1).mean())


# -- synthetic -------------------------------------------------------------------------------------
def test_choose_face_largest_without_history():
    small, large = _det(0, 0, 20, 20), _det(50, 50, 150, 150)
    assert choose_face([small, large], None) is large
    assert choose_face([], None) is None
    assert choose_face([], large) is None


def test_choose_face_prefers_overlap_with_previous_over_size():
    previous = _det(10, 10, 60, 60)
    same_person = _det(12, 11, 62, 61)
    newcomer = _det(100, 100, 300, 300)
    assert choose_face([newcomer, same_person], previous) is same_person
    # the previous face moved away entirely: IoU <= 0.3, so the largest wins
    far = _det(70, 70, 90, 90)
    assert choose_face([far, newcomer], previous) is newcomer


def test_no_face_on_blank_frames():
    detector = FaceDetector()
    frames = np.zeros((3, 120, 160, 3), np.uint8)
    assert detector.detect(frames) == [[], [], []]
    tracker = FaceTracker(detector, every=3)
    assert tracker.process(frames) == [None, None, None]
    assert detector.detect(frames[:0]) == []


# -- real videos -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dev_frames():
    return _read("videos", "labeled", "tw_TW07.mp4", start=300, count=150)


@pytest.fixture(scope="module")
def full_res(dev_frames):
    detector = FaceDetector(detect_size=None)
    return detector, detector.detect(dev_frames)


@pytest.mark.shared_data
def test_detections_in_source_coordinates(dev_frames, full_res):
    _, faces = full_res
    h, w = dev_frames.shape[1:3]
    found = [f[0] for f in faces if f]
    assert len(found) >= 0.95 * len(faces)
    for face in found:
        assert face.bbox.dtype == np.float32 and face.bbox.shape == (4,)
        assert face.landmarks.dtype == np.float32 and face.landmarks.shape == (5, 2)
        assert face.score >= 0.9
        assert face.landmarks[0, 0] < face.landmarks[1, 0]  # left eye is image-left
        assert -0.2 * w < face.bbox[0] < face.bbox[2] < 1.2 * w


@pytest.mark.shared_data
def test_downscaled_detection_close_to_full_resolution(dev_frames, full_res):
    _, ref = full_res
    small = FaceDetector(detect_size=160).detect(dev_frames)
    errors = [_aligned_error(a[0], b[0]) for a, b in zip(ref, small) if a and b]
    assert len(errors) >= 0.95 * len(ref)
    assert np.mean(errors) < 2.0, np.mean(errors)


@pytest.mark.shared_data
def test_tracker_every_5_close_to_every_frame(dev_frames, full_res):
    detector, ref = full_res
    tracker = FaceTracker(detector, every=5)
    out = []
    for start in range(0, len(dev_frames), 40):  # chunk after chunk
        out += tracker.process(dev_frames[start:start + 40])
    assert len(out) == len(dev_frames)
    both = [(a[0], b) for a, b in zip(ref, out) if a and b]
    assert len(both) >= 0.95 * sum(1 for a in ref if a)
    errors = [_aligned_error(a, b) for a, b in both]
    assert np.mean(errors) < 2.0, np.mean(errors)
    assert tracker.full_detections < 0.5 * len(dev_frames)


@pytest.mark.shared_data
@pytest.mark.parametrize("clip, start, count", [
    ("pyfeat_face_noface.mov", 48, 64),  # the face leaves at frame 72
    ("pyfeat_noface_face.mov", 80, 89),  # it comes at frame 96 and leaves on the last frame (168)
])
def test_tracker_never_keeps_a_stale_box(clip, start, count):
    # the frames around each change, not the whole clip: detecting every frame is this test's cost
    frames = _read("videos", "unlabeled", clip, start=start, count=count)
    detector = FaceDetector()
    every_frame = [f for f in FaceTracker(detector, every=1).process(frames)]
    tracker = FaceTracker(detector, every=5)
    tracked = []
    for start in range(0, len(frames), 32):
        tracked += tracker.process(frames[start:start + 32])
    assert any(f is not None for f in every_frame) and any(f is None for f in every_frame)
    stale = [i for i, (a, b) in enumerate(zip(every_frame, tracked)) if a is None and b is not None]
    assert not stale, f"tracker kept a face on frames without one: {stale}"


@pytest.mark.shared_data
def test_no_face_clip_yields_nothing():
    frames = _read("videos", "unlabeled", "pyfeat_no_face.mp4")
    detector = FaceDetector()
    assert all(not f for f in detector.detect(frames))
    assert all(f is None for f in FaceTracker(detector, every=5).process(frames))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_detector_matches_cpu(dev_frames, full_res):
    _, ref = full_res
    gpu = FaceDetector(device="cuda", detect_size=None).detect(dev_frames[:32])
    errors = [_aligned_error(a[0], b[0]) for a, b in zip(ref, gpu) if a and b]
    assert len(errors) >= 30
    assert np.mean(errors) < 0.5, np.mean(errors)
    tracked = FaceTracker(FaceDetector(device="cuda"), every=5).process(dev_frames[:32])
    assert sum(f is not None for f in tracked) >= 30
