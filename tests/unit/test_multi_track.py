"""Multi-face tracks: the id logic (TrackLinker, link_chunks) on synthetic boxes, and MultiFaceTracker with
MTCNN on the shared videos (two dev videos side by side, the same swapped once, real multi-person clips)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from fer_ray.faces import (
    Detection,
    FaceDetector,
    FaceTracker,
    MultiFaceTracker,
    TrackedChunk,
    TrackLinker,
    iou,
    link_chunks,
)
from tests.conftest import need_shared


def _face(x: float, y: float, size: float = 60.0, score: float = 0.99) -> Detection:
    """A synthetic face: box at (x, y), landmarks where a frontal face's would be."""
    rel = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]], np.float32)
    return Detection(np.array([x, y, x + size, y + size], np.float32), rel * size + [x, y], score)


def _run(linker: TrackLinker, frames: list[list[Detection]]) -> list[list[tuple[int, Detection]]]:
    """Full detection on every frame (an empty list: no face found on that frame)."""
    return [linker.full(t, faces) for t, faces in enumerate(frames)]


def _ids_at(out, t) -> dict[int, float]:
    """Track id -> box x1 on frame t."""
    return {track_id: float(face.bbox[0]) for track_id, face in out[t]}


# -- the id logic on synthetic boxes ----------------------------------------------------------------
@pytest.mark.parametrize("step", [1, 5])
@pytest.mark.parametrize("dy", [0, 12])
def test_crossing_faces_keep_their_ids(step, dy):
    # A walks right from x=0, B walks left from x=200, 5 px a frame: they pass each other at frame 20
    # (exactly on top of each other when dy=0); faces found every `step`-th frame only
    frames = [[_face(5 * t, 100), _face(200 - 5 * t, 100 + dy)] if t % step == 0 else [] for t in range(41)]
    out = _run(TrackLinker(max_gap=step), frames)
    for t in range(0, 41, step):
        ids = _ids_at(out, t)
        assert sorted(ids) == [0, 1], (t, ids)
        assert ids[0] == pytest.approx(5 * t) and ids[1] == pytest.approx(200 - 5 * t), (t, ids)


def test_two_people_swap_sides_once_and_stay():
    # they cross at frame 15, then stand still on the other side for 30 frames
    xs = [min(5 * t, 150) for t in range(60)]
    frames = [[_face(x, 80), _face(150 - x, 90)] for x in xs]
    out = _run(TrackLinker(), frames)
    assert _ids_at(out, 0) == {0: 0.0, 1: 150.0}
    assert _ids_at(out, 59) == {0: 150.0, 1: 0.0}
    assert all(len(pairs) == 2 for pairs in out)


def test_occlusion_shorter_than_max_gap_keeps_the_id_longer_gives_a_new_one():
    def video(hidden: int):
        return [[] if 10 <= t < 10 + hidden else [_face(100 + (t % 2), 50)] for t in range(30)]

    kept = _run(TrackLinker(max_gap=5), video(5))
    assert {i for pairs in kept for i, _ in pairs} == {0}
    lost = _run(TrackLinker(max_gap=5), video(6))
    assert [i for i, _ in lost[9]] == [0] and [i for i, _ in lost[16]] == [1]


def test_hidden_moving_face_is_found_where_its_velocity_takes_it():
    # 4 px a frame, hidden for 8 frames behind something: 36 px on, beyond its last box (IoU ~0.1)
    frames = [[] if 10 <= t < 18 else [_face(4 * t, 50, size=50)] for t in range(30)]
    out = _run(TrackLinker(max_gap=8), frames)
    assert {i for pairs in out for i, _ in pairs} == {0}
    assert iou(out[9][0][1].bbox, out[18][0][1].bbox) < 0.3  # the last box alone would not have linked


def test_face_entering_late_gets_the_next_id_whatever_its_position():
    frames = []
    for t in range(40):
        faces = [_face(200, 50)]
        if t >= 10:
            faces.append(_face(400, 50))
        if t >= 20:
            faces.append(_face(0, 50))  # leftmost, but third to appear
        frames.append(faces)
    out = _run(TrackLinker(), frames)
    assert _ids_at(out, 39) == {0: 200.0, 1: 400.0, 2: 0.0}
    assert _ids_at(out, 10) == {0: 200.0, 1: 400.0}


def test_ids_do_not_depend_on_the_order_faces_come_in():
    rng = random.Random(0)
    frames = [[_face(10 * k + t, 100 * k) for k in range(4)] for t in range(20)]
    shuffled = [rng.sample(faces, len(faces)) for faces in frames]
    a, b = _run(TrackLinker(), frames), _run(TrackLinker(), shuffled)
    assert [[(i, f.bbox.tolist()) for i, f in p] for p in a] == [[(i, f.bbox.tolist()) for i, f in p] for p in b]
    # faces appearing together: numbered left to right
    assert _ids_at(a, 0) == {0: 0.0, 1: 10.0, 2: 20.0, 3: 30.0}


def test_short_tracks_are_reported_as_too_short():
    frames = [[_face(100, 100)] + ([_face(400, 300, size=30)] if t in (7, 8) else []) for t in range(20)]
    linker = TrackLinker(min_track_length=5)
    _run(linker, frames)
    assert linker.lengths() == {0: 20, 1: 2}
    assert linker.long_tracks() == [0]


def test_follow_records_refined_faces_for_their_track():
    linker = TrackLinker()
    linker.full(0, [_face(0, 0), _face(300, 0)])
    linker.follow(1, [(0, _face(3, 0)), (1, _face(297, 0))])
    assert [t.id for t in linker.live(2)] == [0, 1]
    assert linker.tracks[0].velocity[0] == pytest.approx(3.0)
    assert _ids_at([linker.full(2, [_face(294, 0), _face(6, 0)])], 0) == {0: 6.0, 1: 294.0}


def test_state_round_trip_continues_with_the_same_ids():
    frames = [[_face(5 * t, 100), _face(200 - 5 * t, 110)] + ([_face(50, 300)] if t > 25 else [])
              for t in range(41)]
    whole = _run(TrackLinker(max_gap=3), frames)
    first = TrackLinker(max_gap=3)
    head = [first.full(t, frames[t]) for t in range(18)]
    second = TrackLinker.from_state(first.state())
    tail = [second.full(t, frames[t]) for t in range(18, 41)]
    assert [[i for i, _ in p] for p in head + tail] == [[i for i, _ in p] for p in whole]
    assert second.long_tracks() == [0, 1, 2]


def test_link_chunks_equals_one_linker_across_gaps_and_crossings_at_chunk_edges():
    # crossing at frame 20 (a chunk edge), a face hidden over the edge at frame 30, a late face
    frames = []
    for t in range(48):
        faces = [_face(5 * t, 100), _face(200 - 5 * t, 108)]
        if not 28 <= t < 33:
            faces.append(_face(400, 300))
        if t >= 37:
            faces.append(_face(600, 20))
        frames.append(faces)
    whole_linker = TrackLinker(max_gap=5, min_track_length=12)
    whole = _run(whole_linker, frames)
    chunks = []
    for start in range(0, 48, 10):  # each chunk: its own fresh linker, so local ids restart at 0
        local = TrackLinker(max_gap=5, min_track_length=12)
        faces = [local.full(start + j, frames[start + j]) for j in range(min(10, 48 - start))]
        chunks.append(TrackedChunk(start, faces, [True] * len(faces)))
    linked, keep = link_chunks(chunks[::-1], max_gap=5, min_track_length=12)
    assert [[(i, f.bbox.tolist()) for i, f in p] for p in linked] == \
        [[(i, f.bbox.tolist()) for i, f in p] for p in whole]
    assert keep == whole_linker.long_tracks() == [0, 1, 2]  # the late face has 11 frames: too short


# -- MultiFaceTracker with MTCNN on the shared videos -------------------------------------------------
FRAMES = 60


def _read(*parts, count, start=0):
    import decord

    vr = decord.VideoReader(str(need_shared(*parts)))
    return vr.get_batch(list(range(start, min(start + count, len(vr))))).asnumpy()


@pytest.fixture(scope="module")
def halves():
    left = _read("videos", "labeled", "tw_TW01.mp4", count=FRAMES)
    right = _read("videos", "labeled", "tw_TW07.mp4", count=FRAMES)
    return left, right


@pytest.fixture(scope="module")
def detector():
    return FaceDetector(detect_size=320)


def _multi(detector, frames, chunk=32, **kwargs):
    tracker = MultiFaceTracker(detector, every=5, min_face_size=40, min_track_length=10, **kwargs)
    out = []
    for start in range(0, len(frames), chunk):
        out += tracker.process(frames[start:start + chunk])
    return out, tracker


@pytest.fixture(scope="module")
def side_by_side(detector, halves):
    frames = np.concatenate(halves, axis=2)  # 256 x 512
    out, tracker = _multi(detector, frames)
    return frames, out, tracker


@pytest.mark.shared_data
def test_two_people_side_by_side_two_stable_tracks(side_by_side):
    _, out, tracker = side_by_side
    print("side by side: track lengths", tracker.lengths(), "full detections", tracker.full_detections)
    assert tracker.finish() == [0, 1]
    assert all([i for i, _ in pairs] == [0, 1] for pairs in out), "a frame without both faces, or an id switch"
    for pairs in out:
        (_, left), (_, right) = pairs
        assert left.bbox[2] < 256 + 16 and right.bbox[0] > 256 - 16  # 0 stays on the left half, 1 on the right


@pytest.mark.shared_data
def test_each_track_matches_the_single_face_tracker_on_its_half(detector, halves, side_by_side):
    _, out, _ = side_by_side
    for track_id, (half, shift) in enumerate(zip(halves, (0.0, 256.0))):
        single = FaceTracker(detector, every=5).process(half)
        shift_box = np.array([shift, 0, shift, 0], np.float32)
        overlaps = [iou(dict(pairs)[track_id].bbox, face.bbox + shift_box) for pairs, face in zip(out, single)]
        assert all(face is not None for face in single)
        assert min(overlaps) > 0.5, (track_id, min(overlaps))


@pytest.mark.shared_data
def test_chunk_sizes_and_split_path_give_the_same_ids(detector, side_by_side):
    frames, out, tracker = side_by_side
    other, _ = _multi(detector, frames, chunk=7)
    assert [[i for i, _ in p] for p in other] == [[i for i, _ in p] for p in out]
    # the split decode/detect path: a fresh tracker per chunk (chunks of 20 = 4 x every), then link_chunks
    chunks = [MultiFaceTracker(detector, every=5, min_face_size=40, start=s).track(frames[s:s + 20])
              for s in range(0, len(frames), 20)]
    linked, keep = link_chunks(chunks, min_track_length=10)
    assert keep == tracker.finish()
    assert [[i for i, _ in p] for p in linked] == [[i for i, _ in p] for p in out]
    # same faces, up to MTCNN's batch-composition numerics (key frames are detected in one batch per chunk,
    # and a near-tie in its NMS can pick a box a few pixels off)
    for a, b in zip(linked, out):
        for (_, fa), (_, fb) in zip(a, b):
            assert iou(fa.bbox, fb.bbox) > 0.9


@pytest.mark.shared_data
def test_state_hand_over_continues_with_the_same_ids(detector, side_by_side):
    import json

    frames, out, tracker = side_by_side
    first = MultiFaceTracker(detector, every=5, min_face_size=40, min_track_length=10)
    head = first.process(frames[:25])  # ends between key frames: refinement seeds travel in the state
    second = MultiFaceTracker.from_state(detector, json.loads(json.dumps(first.state())))
    tail = second.process(frames[25:])
    assert [[i for i, _ in p] for p in head + tail] == [[i for i, _ in p] for p in out]
    assert second.finish() == tracker.finish() and second.lengths() == tracker.lengths()
    for a, b in zip(head + tail, out):
        for (_, fa), (_, fb) in zip(a, b):
            assert iou(fa.bbox, fb.bbox) > 0.9


@pytest.mark.shared_data
def test_halves_swapped_once_by_a_cut(detector, halves):
    # frames t >= 30 have the halves the other way round: a cut, not motion. Contract: tracks stay whole and
    # never hold two people; after a cut an id follows position (a face landing where another was may take
    # its id), not appearance. Here both faces land on the other's box, so ids follow the sides.
    left, right = halves
    frames = np.concatenate([np.concatenate([left[:30], right[:30]], axis=2),
                             np.concatenate([right[30:], left[30:]], axis=2)])
    out, tracker = _multi(detector, frames)
    print("swapped halves: track lengths", tracker.lengths())
    assert all(len(pairs) == 2 for pairs in out)
    for pairs in out:
        ids_by_side = [i for i, face in sorted(pairs, key=lambda p: p[1].bbox[0])]
        assert ids_by_side == [0, 1]
    assert tracker.finish() == [0, 1]


def _spot_check(out, lengths, name):
    """No id switch between key frames: each track's consecutive faces overlap or lie within a face width."""
    last: dict[int, Detection] = {}
    for pairs in out:
        boxes = [f.bbox for _, f in pairs]
        for a in range(len(boxes)):
            for b in range(a + 1, len(boxes)):
                assert iou(boxes[a], boxes[b]) < 0.5, f"{name}: two tracks on one face"
        for track_id, face in pairs:
            before = last.get(track_id)
            if before is not None:
                width = float(before.bbox[2] - before.bbox[0])
                moved = float(np.linalg.norm((face.bbox[:2] + face.bbox[2:]) / 2 - (before.bbox[:2] + before.bbox[2:]) / 2))
                assert iou(before.bbox, face.bbox) > 0.3 or moved < width, f"{name}: track {track_id} jumped"
            last[track_id] = face
    print(f"{name}: {len(out)} frames, {len(lengths)} tracks, lengths {lengths}")


# (clip, first frame, frames, FaceDetector settings, smallest face kept in source pixels). Both clips show
# one person in front (the whole 472-frame street clip gives one track of 472: benchmarks/README.md); the
# vlog's frames 1320-1419 also show passers-by's faces of 15-25 px behind her, which only a full-resolution
# detection with small faces allowed finds. Prefixes keep the tests short.
REAL_CLIPS = {
    "street": ("pyfeat_WolfgangLanger_Pexels.mp4", 0, 240, {"detect_size": 320}, 40),
    "vlog": ("taiwanese_vlog.mp4", 0, 150, {"detect_size": 320}, 40),
    "vlog_background": ("taiwanese_vlog.mp4", 1320, 100, {"detect_size": None, "min_face_size": 20}, 15),
}


@pytest.mark.shared_data
@pytest.mark.parametrize("name", list(REAL_CLIPS))
def test_real_clips_tracks_and_no_id_switch(name):
    clip, start, count, settings, min_face = REAL_CLIPS[name]
    frames = _read("videos", "unlabeled", clip, count=count, start=start)
    tracker = MultiFaceTracker(FaceDetector(**settings), every=5, min_face_size=min_face, min_track_length=10)
    out = []
    for first in range(0, len(frames), 32):
        out += tracker.process(frames[first:first + 32])
    lengths = tracker.lengths()
    _spot_check(out, lengths, f"{name} ({clip} frames {start}-{start + count - 1})")
    print(f"{name}: long tracks {tracker.finish()}, full detections {tracker.full_detections}")
    assert lengths[0] == count  # the person in front: one track over every frame
    assert tracker.finish()[0] == 0 and all(lengths[i] >= 10 for i in tracker.finish())
    if name == "vlog_background":
        assert len(tracker.finish()) >= 2  # a passer-by followed long enough to keep
