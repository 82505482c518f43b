"""Per-video face tracking: full MTCNN every ``every`` frames, O-net refinement in between.

Two trackers share that schedule: ``FaceTracker`` follows one face per frame (the rules below);
``MultiFaceTracker`` follows every face above a minimum size and gives each a track id (its rules are on
the class). One tracker per video inside one task; feed it the video's frames in order, chunk after chunk.
``TrackLinker`` is the multi-face tracker's id logic without any detector (pure, unit-testable), and
``link_chunks`` replays it over chunks tracked by fresh trackers (the split decode/detect path) so that
the ids equal one tracker's over the whole video.

FaceTracker rules (``every=k``):
- frame ``i`` with ``i % k == 0`` (counted over the whole video), or any frame after a frame with no
  tracked face but within ``k`` of a key frame: see below.
- key frames: full detection, then ``choose_face`` against the previous frame's face.
- other frames with a face in the previous frame: O-net refinement on a crop around that face; the
  refined face is kept when its score >= the detector's ``min_score`` and its IoU with the previous box
  >= ``iou_keep``. Otherwise full detection runs on that frame (fallback), so a face that left yields
  None on that very frame (never a stale box).
- other frames with no face in the previous frame: None until the next key frame (a face appearing is
  picked up within ``k - 1`` frames; key frames are the only full detections on face-less stretches).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from fer_ray.faces.detect import Detection, FaceDetector, choose_face, faces_at_least, iou

__all__ = ["FaceTracker", "MultiFaceTracker", "Track", "TrackLinker", "TrackedChunk", "link_chunks", "position_order"]


class FaceTracker:
    def __init__(self, detector: FaceDetector, every: int = 1, iou_keep: float = 0.3):
        if every < 1:
            raise ValueError("every must be >= 1")
        self.detector = detector
        self.every = int(every)
        self.iou_keep = float(iou_keep)
        self.index = 0  # frames seen so far in this video
        self.previous: Detection | None = None
        self.full_detections = 0  # frames that ran the full detector (for benchmarks)

    def process(self, frames: np.ndarray) -> list[Detection | None]:
        """One face (or None) per frame of ``frames`` (uint8 (N,H,W,3), consecutive frames of the video)."""
        n = len(frames)
        if n == 0:
            return []
        keys = [i for i in range(n) if (self.index + i) % self.every == 0]
        key_faces = dict(zip(keys, self.detector.detect(frames[keys]))) if keys else {}
        self.full_detections += len(keys)
        out: list[Detection | None] = [None] * n
        i = 0
        while i < n:
            if i in key_faces:
                out[i] = self.previous = choose_face(key_faces[i], self.previous)
                i += 1
                continue
            stop = next((j for j in range(i, n) if j in key_faces), n)  # frames i..stop-1: between key frames
            if self.previous is None:
                i = stop  # no face to follow: None until the next key frame
                continue
            # all frames up to the next key frame refined at once, seeded with the last face's box
            # (two O-net passes: the second starts from each frame's own regressed box)
            refined = self.detector.refine(frames[i:stop], np.repeat(self.previous.bbox[None], stop - i, 0))
            for j, face in enumerate(refined, start=i):
                if face is None or iou(face.bbox, self.previous.bbox) < self.iou_keep:
                    # lost: full detection on this frame, then continue from what it found
                    self.full_detections += 1
                    out[j] = self.previous = choose_face(self.detector.detect(frames[j:j + 1])[0], self.previous)
                    i = j + 1
                    break
                out[j] = self.previous = face
            else:
                i = stop
        self.index += n
        return out


# --------------------------------------------------------------------------- multi-face tracks
_GATED = 1e6  # cost of a track/face pair that may not be linked


@dataclass
class Track:
    """One face followed over a video: where it was last seen and how it was moving."""

    id: int
    box: np.ndarray  # float32 (4,) last box
    landmarks: np.ndarray  # float32 (5, 2) last landmarks
    frame: int  # last frame (decoded-frame index within the video) with this face
    velocity: np.ndarray  # float64 (2,) box centre motion, pixels per frame (smoothed)
    frames: int = 1  # frames with this face so far

    def predicted(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """Box and landmarks moved on by the last velocity to ``frame``."""
        shift = self.velocity * (frame - self.frame)
        return self.box + np.tile(shift, 2).astype(np.float32), self.landmarks + shift.astype(np.float32)


class TrackLinker:
    """Track ids from per-frame face lists: the multi-face tracker's id logic, with no detector.

    ``full(frame, faces)`` links the faces of a full detection to the tracks: candidates are the tracks seen
    within the last ``max_gap + 1`` frames (a face missing for up to ``max_gap`` frames keeps its id). A
    track/face pair may link when the box IoU >= ``iou_link`` or the mean landmark distance <=
    ``landmark_link`` face sizes (sqrt of the track's box area), both measured against the track's last box
    moved on by its velocity and against its last box as it was (the better of the two counts: a person who
    stopped, or a velocity estimate spoiled by jitter, still links). Cost = (1 - IoU) + landmark distance;
    one-to-one by ``linear_sum_assignment``. Faces left over start new tracks, numbered 0, 1, 2 ... in
    order of first appearance, left to right (box centre x, then y) within a frame. Tracks are sorted by
    id and faces by position before the assignment, so the ids depend only on the faces, never on the
    order they came in. ``follow(frame, pairs)`` records faces whose track is already known (O-net
    refinement of that track's face). ``long_tracks()``: ids with at least ``min_track_length`` faces.
    """

    def __init__(self, max_gap: int = 10, iou_link: float = 0.3, landmark_link: float = 0.5,
                 min_track_length: int = 10):
        if max_gap < 0 or min_track_length < 1:
            raise ValueError("max_gap must be >= 0 and min_track_length >= 1")
        self.max_gap = int(max_gap)
        self.iou_link = float(iou_link)
        self.landmark_link = float(landmark_link)
        self.min_track_length = int(min_track_length)
        self.tracks: dict[int, Track] = {}
        self.next_id = 0

    def candidates(self, frame: int) -> list[Track]:
        """Tracks that a face on ``frame`` may continue (seen within the last max_gap + 1 frames), by id."""
        return [t for _, t in sorted(self.tracks.items()) if 0 < frame - t.frame <= self.max_gap + 1]

    def live(self, frame: int) -> list[Track]:
        """Tracks with a face on the frame before ``frame``, by id (the ones to refine on ``frame``)."""
        return [t for _, t in sorted(self.tracks.items()) if t.frame == frame - 1]

    def cost(self, track: Track, face: Detection, frame: int) -> float:
        """Linking cost of ``face`` on ``frame`` to ``track``; _GATED when they may not link."""
        size = max(1.0, float(np.sqrt(Detection(track.box, track.landmarks, 0.0).area)))
        best = _GATED
        for box, landmarks in (track.predicted(frame), (track.box, track.landmarks)):
            overlap = iou(box, face.bbox)
            distance = float(np.linalg.norm(landmarks - face.landmarks, axis=1).mean()) / size
            if overlap >= self.iou_link or distance <= self.landmark_link:
                best = min(best, (1.0 - overlap) + distance)
        return best

    def full(self, frame: int, faces: list[Detection]) -> list[tuple[int, Detection]]:
        """Every face of a full detection on ``frame`` with its track id (existing or new), sorted by id."""
        faces = position_order(faces)
        tracks = self.candidates(frame)
        matched: dict[int, Track] = {}
        if tracks and faces:
            costs = np.array([[self.cost(t, f, frame) for f in faces] for t in tracks])
            for row, col in zip(*linear_sum_assignment(costs)):
                if costs[row, col] < _GATED:
                    matched[int(col)] = tracks[int(row)]
        out = []
        for col, face in enumerate(faces):
            track = matched.get(col)
            if track is None:
                track = self.tracks[self.next_id] = Track(
                    self.next_id, face.bbox.astype(np.float32), face.landmarks.astype(np.float32), frame,
                    np.zeros(2), frames=0)
                self.next_id += 1
            self._observe(track, face, frame)
            out.append((track.id, face))
        return sorted(out, key=lambda pair: pair[0])

    def follow(self, frame: int, pairs: list[tuple[int, Detection]]) -> None:
        """Record faces on ``frame`` whose tracks are known (refined from that track's previous face)."""
        for track_id, face in pairs:
            self._observe(self.tracks[track_id], face, frame)

    def _observe(self, track: Track, face: Detection, frame: int) -> None:
        if track.frames > 0 and frame > track.frame:
            step = (_centre(face.bbox) - _centre(track.box)) / (frame - track.frame)
            track.velocity = step if track.frames == 1 else 0.5 * track.velocity + 0.5 * step
        track.box = face.bbox.astype(np.float32)
        track.landmarks = face.landmarks.astype(np.float32)
        track.frame = frame
        track.frames += 1

    def lengths(self) -> dict[int, int]:
        """Frames with a face, per track id."""
        return {track_id: t.frames for track_id, t in sorted(self.tracks.items())}

    def long_tracks(self) -> list[int]:
        """Ids of the tracks with at least ``min_track_length`` faces (the ones to keep), ascending."""
        return [track_id for track_id, n in self.lengths().items() if n >= self.min_track_length]

    def state(self) -> dict:
        """Plain (JSON-able) state: ``TrackLinker.from_state(state)`` continues where this one stopped."""
        return {"max_gap": self.max_gap, "iou_link": self.iou_link, "landmark_link": self.landmark_link,
                "min_track_length": self.min_track_length, "next_id": self.next_id,
                "tracks": [{"id": t.id, "box": t.box.tolist(), "landmarks": t.landmarks.tolist(),
                            "frame": t.frame, "velocity": t.velocity.tolist(), "frames": t.frames}
                           for _, t in sorted(self.tracks.items())]}

    @classmethod
    def from_state(cls, state: dict) -> TrackLinker:
        linker = cls(state["max_gap"], state["iou_link"], state["landmark_link"], state["min_track_length"])
        linker.next_id = int(state["next_id"])
        for t in state["tracks"]:
            linker.tracks[int(t["id"])] = Track(
                int(t["id"]), np.asarray(t["box"], np.float32), np.asarray(t["landmarks"], np.float32),
                int(t["frame"]), np.asarray(t["velocity"], np.float64), int(t["frames"]))
        return linker


def _centre(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0], np.float64)


def _position(face: Detection) -> tuple[float, float, float]:
    x, y = _centre(face.bbox)
    return (float(x), float(y), -face.score)


def position_order(faces: list[Detection]) -> list[Detection]:
    """Faces left to right (box centre x, then y, then higher score first): how new track ids are given."""
    return sorted(faces, key=_position)


class MultiFaceTracker:
    """Every face above ``min_face_size`` source pixels (shorter box side), each with a track id.

    Same schedule as ``FaceTracker`` (``every=k``, key frames counted over the whole video from ``start``):
    - key frames: full detection; the faces are linked to the tracks by ``TrackLinker.full``.
    - other frames while some track had a face on the previous frame: each such track's face is refined by
      the O-net, seeded with the track's box at its last full detection (so the boxes do not depend on
      how the frames are chunked). If any refined face is lost (score < the detector's ``min_score``, IoU
      with the track's previous box < ``iou_keep``) or two tracks refine onto one face (IoU > 0.5), the
      frame gets a full detection instead (fallback) and the faces are re-linked. New faces are only found
      by full detections; a track that is not refined waits (up to ``max_gap`` frames) for one.
    - other frames with no face on the previous frame: no faces until the next key frame.

    ``process(frames)`` returns, per frame, the (track id, Detection) pairs of that frame sorted by id;
    ``finish()`` the ids of the tracks with >= ``min_track_length`` faces (drop the others' rows).
    Ids: deterministic for a given input and settings; chunk sizes do not change them (state carries over
    ``process`` calls). ``last_full`` says which frames of the last ``process`` call were full detections,
    which ``link_chunks`` needs; ``state()`` / ``from_state()`` hand a video's tracking from one tracker
    to the next. A cut (scene change) is not detected: faces that jump across the frame
    start new tracks; faces that happen to land where another face was may take its id.
    """

    def __init__(self, detector: FaceDetector, every: int = 1, min_face_size: float = 0.0, max_gap: int = 10,
                 min_track_length: int = 10, iou_link: float = 0.3, landmark_link: float = 0.5,
                 iou_keep: float = 0.3, start: int = 0):
        if every < 1:
            raise ValueError("every must be >= 1")
        self.detector = detector
        self.every = int(every)
        self.min_face_size = float(min_face_size)
        self.iou_keep = float(iou_keep)
        self.linker = TrackLinker(max_gap, iou_link, landmark_link, min_track_length)
        self.index = int(start)  # decoded-frame index (within the video) of the next frame
        self.seeds: dict[int, np.ndarray] = {}  # track id -> box its O-net refinement starts from
        self.full_detections = 0  # frames that ran the full detector (for benchmarks)
        self.last_full: list[bool] = []

    def process(self, frames: np.ndarray) -> list[list[tuple[int, Detection]]]:
        """(track id, face) pairs per frame of ``frames`` (uint8 (N,H,W,3), the video's next frames)."""
        n = len(frames)
        out: list[list[tuple[int, Detection]]] = [[] for _ in range(n)]
        full = [False] * n
        keys = [i for i in range(n) if (self.index + i) % self.every == 0]
        key_faces = dict(zip(keys, self._detect(frames[keys]))) if keys else {}
        self.full_detections += len(keys)
        i = 0
        while i < n:
            if i in key_faces:
                out[i], full[i] = self._link(self.index + i, key_faces[i]), True
                i += 1
                continue
            stop = next((j for j in range(i, n) if j in key_faces), n)  # frames i..stop-1: between key frames
            live = self.linker.live(self.index + i)
            if not live:
                i = stop  # nothing to follow: no faces until the next key frame
                continue
            for j, faces in enumerate(self._refine(frames[i:stop], live), start=i):
                pairs = self._kept(live, faces)
                if pairs is None:  # a face was lost: full detection on this frame, then go on from it
                    self.full_detections += 1
                    out[j], full[j] = self._link(self.index + j, self._detect(frames[j:j + 1])[0]), True
                    i = j + 1
                    break
                self.linker.follow(self.index + j, pairs)
                out[j] = pairs
            else:
                i = stop
        self.index += n
        self.last_full = full
        return out

    def track(self, frames: np.ndarray) -> TrackedChunk:
        """``process`` wrapped as the record ``link_chunks`` takes (the split path: one tracker per chunk)."""
        start = self.index
        faces = self.process(frames)
        return TrackedChunk(start, faces, list(self.last_full))

    def finish(self) -> list[int]:
        """Ids of the tracks long enough to keep (>= min_track_length frames with a face), ascending."""
        return self.linker.long_tracks()

    def state(self) -> dict:
        """Plain (JSON-able) state after the frames seen so far: ``MultiFaceTracker.from_state(detector,
        state)`` goes on with the video's next frames exactly as this tracker would (one video handed
        from task to task in order)."""
        return {"every": self.every, "min_face_size": self.min_face_size, "iou_keep": self.iou_keep,
                "index": self.index, "full_detections": self.full_detections, "linker": self.linker.state(),
                "seeds": [[track_id, box.tolist()] for track_id, box in sorted(self.seeds.items())]}

    @classmethod
    def from_state(cls, detector: FaceDetector, state: dict) -> MultiFaceTracker:
        tracker = cls(detector, every=state["every"], min_face_size=state["min_face_size"],
                      iou_keep=state["iou_keep"], start=state["index"])
        tracker.linker = TrackLinker.from_state(state["linker"])
        tracker.full_detections = int(state["full_detections"])
        tracker.seeds = {int(track_id): np.asarray(box, np.float32) for track_id, box in state["seeds"]}
        return tracker

    def lengths(self) -> dict[int, int]:
        return self.linker.lengths()

    def _detect(self, frames: np.ndarray) -> list[list[Detection]]:
        return [faces_at_least(faces, self.min_face_size) for faces in self.detector.detect(frames)]

    def _link(self, frame: int, faces: list[Detection]) -> list[tuple[int, Detection]]:
        pairs = self.linker.full(frame, faces)
        for track_id, face in pairs:
            self.seeds[track_id] = face.bbox
        return pairs

    def _refine(self, frames: np.ndarray, live: list[Track]) -> list[list[Detection | None]]:
        """Per frame, each live track's refined face (None: lost); one O-net batch for all of them."""
        m, k = len(frames), len(live)
        batch = frames if k == 1 else frames[np.tile(np.arange(m), k)]
        seeds = np.repeat(np.stack([self.seeds[t.id] for t in live]), m, axis=0)
        refined = self.detector.refine(batch, seeds)
        return [[refined[t * m + j] for t in range(k)] for j in range(m)]

    def _kept(self, live: list[Track], faces: list[Detection | None]) -> list[tuple[int, Detection]] | None:
        """The refined faces as (id, face) pairs, or None when one is lost or two tracks share a face."""
        for track, face in zip(live, faces):
            if face is None or iou(face.bbox, track.box) < self.iou_keep:
                return None
        for a in range(len(faces)):
            for b in range(a + 1, len(faces)):
                if iou(faces[a].bbox, faces[b].bbox) > 0.5:
                    return None
        return [(t.id, f) for t, f in zip(live, faces)]


@dataclass
class TrackedChunk:
    """One chunk tracked by its own tracker: its first frame's decoded-frame index in the video, then per
    frame the (chunk-local track id, face) pairs and whether they came from a full detection."""

    start: int
    faces: list[list[tuple[int, Detection]]]
    full: list[bool]


def link_chunks(chunks: list[TrackedChunk], max_gap: int = 10, iou_link: float = 0.3,
                landmark_link: float = 0.5, min_track_length: int = 10
                ) -> tuple[list[list[tuple[int, Detection]]], list[int]]:
    """Video-wide track ids for chunks tracked by fresh ``MultiFaceTracker(start=chunk.start)`` each.

    Replays ``TrackLinker`` over the chunks in order (any order in, sorted by ``start``): the faces of full
    detections are linked afresh, refined faces keep the video-wide id their chunk-local track got. Returns
    the (id, face) pairs of every frame, chunk after chunk, and the ids of the tracks long enough to keep.
    When every chunk starts on a key frame (``start % every == 0``: chunk size a multiple of ``every``),
    each fresh tracker finds the same faces as one tracker over the whole video, so the ids are the same as
    that tracker's (tested). The linker settings must be the trackers'.
    """
    linker = TrackLinker(max_gap, iou_link, landmark_link, min_track_length)
    out: list[list[tuple[int, Detection]]] = []
    for chunk in sorted(chunks, key=lambda c: c.start):
        video_id_of: dict[int, int] = {}  # chunk-local track id -> video-wide id
        for j, (pairs, full) in enumerate(zip(chunk.faces, chunk.full)):
            frame = chunk.start + j
            if full:
                linked = linker.full(frame, [face for _, face in pairs])
                by_face = {id(face): track_id for track_id, face in linked}
                video_id_of.update({local: by_face[id(face)] for local, face in pairs})
            else:
                linked = sorted(((video_id_of[local], face) for local, face in pairs), key=lambda p: p[0])
                linker.follow(frame, linked)
            out.append(linked)
    return out, linker.long_tracks()
