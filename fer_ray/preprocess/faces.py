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


def frame_rows(found: list) -> tuple[np.ndarray | None, list, list[int]]:
    """(row -> frame position in the chunk, row detections, row track ids) from a tracker's per-frame output:
    Detection | None per frame (one face: one row per frame, track 0, positions None), or (track id,
    Detection) pairs per frame (every face: a frame without any gets one no-face row, track NO_TRACK)."""
    if not any(isinstance(f, list) for f in found):
        return None, list(found), [0] * len(found)
    rows, detections, tracks = [], [], []
    for position, pairs in enumerate(found):
        for track_id, face in pairs or [(schema.NO_TRACK, None)]:
            rows.append(position)
            detections.append(face)
            tracks.append(track_id)
    return np.asarray(rows, dtype=np.int64), detections, tracks


def tracked_text(tracker, found: list) -> str:
    """One chunk's tracked faces as JSON (what `link_chunks` needs: start, full-detection flags and the
    chunk-local (id, box, landmarks, score) of every face), for the split path's collector."""
    import json

    faces = [[[int(t), d.bbox.tolist(), d.landmarks.reshape(-1).tolist(), float(d.score)] for t, d in pairs]
             for pairs in found]
    return json.dumps({"start": tracker.index - len(found), "full": list(tracker.last_full), "faces": faces})


def link_tracked(chunks: dict[int, str], config) -> tuple[dict[tuple[int, int, int], int], dict[int, int]]:
    """Video-wide track ids for the split path: the chunks' `tracked_text` (chunk number -> JSON) linked by
    `link_chunks`. Returns ((chunk, position in chunk, chunk-local id) -> video-wide id, kept track -> frames
    with its face); rows of ids not kept are dropped (`keep_tracks`)."""
    import json

    from fer_ray.faces import Detection, TrackedChunk, link_chunks

    records, keys = [], {}
    for number in sorted(chunks):
        data = json.loads(chunks[number])
        faces = []
        for position, pairs in enumerate(data["faces"]):
            row = []
            for local, box, marks, score in pairs:
                face = Detection(np.asarray(box, np.float32), np.asarray(marks, np.float32).reshape(5, 2), score)
                keys[id(face)] = (number, position, int(local))
                row.append((int(local), face))
            faces.append(row)
        records.append(TrackedChunk(int(data["start"]), faces, [bool(f) for f in data["full"]]))
    linked, kept = link_chunks(records, max_gap=config.max_gap, min_track_length=config.min_track_length)
    mapping, lengths = {}, dict.fromkeys(kept, 0)
    for pairs in linked:
        for track, face in pairs:
            mapping[keys[id(face)]] = int(track)
            if track in lengths:
                lengths[track] += 1
    return mapping, lengths


def relabel_tracks(table: pa.Table, chunk: int, mapping: dict[tuple[int, int, int], int], kept: set[int]) -> pa.Table:
    """One split-path part with its chunk-local track ids replaced by the video-wide ones, short tracks
    dropped (`keep_tracks`)."""
    frames = table.column(schema.FRAME_INDEX).to_pylist()
    local = table.column(schema.TRACK_ID).to_pylist()
    positions = {frame: k for k, frame in enumerate(dict.fromkeys(frames))}  # rows are in frame order
    ids = [t if t == schema.NO_TRACK else mapping[(chunk, positions[f], t)] for f, t in zip(frames, local)]
    column = table.schema.get_field_index(schema.TRACK_ID)
    relabelled = table.set_column(column, schema.TRACK_ID, pa.array(ids, pa.int64()))
    return keep_tracks(relabelled, kept)


def keep_tracks(table: pa.Table, kept: set[int]) -> pa.Table:
    """`table` (one chunk's face rows) without the rows of tracks not in `kept`; a frame left without any
    row gets one no-face row (track NO_TRACK), so every decoded frame still has a row."""
    import pyarrow.compute as pc

    tracks = table.column(schema.TRACK_ID)
    keep = pc.or_(pc.is_in(tracks, pa.array(sorted(kept), pa.int64())), pc.equal(tracks, schema.NO_TRACK))
    kept_rows = table.filter(keep)
    frames_left = set(kept_rows.column(schema.FRAME_INDEX).to_pylist())
    dropped = table.filter(pc.invert(keep)).to_pylist()
    blanks, seen = [], set()
    for row in dropped:
        frame = row[schema.FRAME_INDEX]
        if frame in frames_left or frame in seen:
            continue
        seen.add(frame)
        blanks.append({**row, schema.FACE: b"", schema.BBOX: None, schema.LANDMARKS: None, schema.DET_SCORE: None,
                       schema.REASON: schema.REASON_NO_FACE, schema.TRACK_ID: schema.NO_TRACK})
    if not blanks:
        return kept_rows
    out = pa.concat_tables([kept_rows, pa.Table.from_pylist(blanks, schema=table.schema)])
    return out.sort_by([(schema.FRAME_INDEX, "ascending"), (schema.TRACK_ID, "ascending")])


class FaceRows:
    """The detector (loaded once) and the crop settings: frames and their detections -> face rows."""

    def __init__(self, config: FacesConfig):
        self.config = config
        self.detector = make_detector(config.detector)

    def tracker(self, start: int = 0):
        """A fresh tracker: full detection every `track_every` frames, O-net tracking in between; one face
        per frame, or every face with a track id (`all_faces`; `start`: the decoded-frame index of the first
        frame it sees, so its key frames fall where one tracker over the whole video would put them)."""
        from fer_ray.faces import FaceTracker, MultiFaceTracker

        cfg = self.config
        if cfg.all_faces:
            return MultiFaceTracker(self.detector, every=cfg.track_every, max_gap=cfg.max_gap,
                                    min_track_length=cfg.min_track_length, start=start)
        return FaceTracker(self.detector, every=cfg.track_every)

    def chunk_table(self, video_id: str, chunk, found: list, frame_labels, subject, num_frames) -> pa.Table:
        """FACES_SCHEMA rows of one decoded chunk from what its tracker found per frame: a Detection or None
        (one-face mode: one row per frame, track 0), or a list of (track id, Detection) pairs (every-face
        mode: a row per pair, or one no-face row with track NO_TRACK)."""
        rows, detections, tracks = frame_rows(found)
        n, frame_labels = len(detections), np.asarray(frame_labels)
        if rows is None:  # one row per frame: no copy of the frames
            return self.table([video_id] * n, chunk.indices, chunk.timestamps, chunk.frames, detections,
                              frame_labels, [subject] * n, num_frames)
        return self.table([video_id] * n, chunk.indices[rows], chunk.timestamps[rows], chunk.frames[rows],
                          detections, frame_labels[rows], [subject] * n, num_frames, tracks)

    def table(self, video_ids, indices, timestamps, frames, detections, frame_labels, subjects,
              num_frames, track_ids=None) -> pa.Table:
        """FACES_SCHEMA rows for equally sized frames and their detections (None: no face); track 0 on every
        row unless `track_ids` says otherwise."""
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
            schema.TRACK_ID: [0] * n if track_ids is None else [int(t) for t in track_ids],
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
                                self.config.face_size, self.config.face_geometry).cpu().numpy()
            for crop, i in zip(crops, have):
                encoded[i] = encode_face(crop, quality=self.config.jpeg_quality)
        return encoded

    def images(self, members: list[dict], images: list[np.ndarray]) -> list[pa.Table]:
        """Rows of still images: detected per group of equally sized images (the detector's batches). One
        face per image, or (`all_faces`) a row per face, ids 0, 1, ... left to right (a photo's "tracks")."""
        from fer_ray.faces import choose_face, position_order

        by_shape: dict[tuple, list[int]] = {}
        for i, image in enumerate(images):
            by_shape.setdefault(image.shape, []).append(i)
        tables = []
        for group in by_shape.values():
            frames = np.stack([images[i] for i in group])
            detected = self.detector.detect(frames)
            chosen = [members[i] for i in group]
            if not self.config.all_faces:
                found = [choose_face(faces, None) for faces in detected]
                tables.append(self.table([m[schema.VIDEO_ID] for m in chosen], [0] * len(group),
                                         [0.0] * len(group), frames, found, [m[schema.LABEL] for m in chosen],
                                         [m[schema.SUBJECT] for m in chosen], 1))
                continue
            found = [list(enumerate(position_order(faces))) for faces in detected]
            rows, detections, tracks = frame_rows(found)
            tables.append(self.table([chosen[r][schema.VIDEO_ID] for r in rows], [0] * len(rows),
                                     [0.0] * len(rows), frames[rows], detections,
                                     [chosen[r][schema.LABEL] for r in rows],
                                     [chosen[r][schema.SUBJECT] for r in rows], 1, tracks))
        return tables

    def face_crops(self, members: list[dict], images: list[np.ndarray]) -> pa.Table:
        """Rows of pre-cropped faces (face_crop sets). "arcface" geometry: resized, no detection (the box is
        the whole image). "fer" geometry: aligned to its template wherever the detector finds the face once
        the crop is upsampled (`upsampled_crops`); the others are resized, as they are in its framing on
        average (the template is fer2013's mean)."""
        from fer_ray.faces import encode_face, resize_crop

        size, quality = self.config.face_size, self.config.jpeg_quality
        faces = [resize_crop(image, size) for image in images]
        boxes = [[0.0, 0.0, float(image.shape[1]), float(image.shape[0])] for image in images]
        found: list = [None] * len(images)
        if self.config.face_geometry != "arcface":
            for i, face, detection in self.aligned_crops(images):
                faces[i], boxes[i], found[i] = face, detection.bbox.astype(np.float32).tolist(), detection
        return faces_table({
            schema.VIDEO_ID: [m[schema.VIDEO_ID] for m in members],
            schema.FRAME_INDEX: [0] * len(members),
            schema.TIMESTAMP: [0.0] * len(members),
            schema.FACE: [encode_face(face, quality=quality) for face in faces],
            schema.BBOX: boxes,
            schema.LANDMARKS: [None if d is None else d.landmarks.astype(np.float32).reshape(-1).tolist()
                               for d in found],
            schema.DET_SCORE: [None if d is None else float(d.score) for d in found],
            schema.LABEL: [int(m[schema.LABEL]) for m in members],
            schema.REASON: [None] * len(members),
            schema.SUBJECT: [m.get(schema.SUBJECT) or None for m in members],
            schema.NUM_FRAMES: [1] * len(members),
            schema.TRACK_ID: [0] * len(members),
        })

    def aligned_crops(self, images: list[np.ndarray]):
        """(index, aligned face, detection in the crop's own pixels) of each crop whose face is found."""
        import torch

        from fer_ray.faces import align_batch, choose_face

        by_shape: dict[tuple, list[int]] = {}
        for i, image in enumerate(images):
            by_shape.setdefault(np.asarray(image).shape, []).append(i)
        for group in by_shape.values():
            big, scale, pad = upsampled_crops([images[i] for i in group])
            found = [choose_face(faces, None) for faces in self.detector.detect(big)]
            have = [k for k, d in enumerate(found) if d is not None]
            if not have:
                continue
            marks = torch.from_numpy(np.stack([found[k].landmarks for k in have]).astype(np.float32))
            aligned = align_batch(torch.from_numpy(big[have]), marks, self.config.face_size,
                                  self.config.face_geometry).numpy()
            for face, k in zip(aligned, have):
                yield group[k], face, in_crop(found[k], scale, pad)


CROP_DETECT_SIDE = 144  # at this side the default detector finds 84 % of fer2013's and all of ckplus48's faces
CROP_PAD = 0.5  # of the crop's side, edge-replicated around it: the detector needs some border


def in_crop(face, scale: float, pad: float):
    """A detection on `upsampled_crops`' image in the crop's own pixels (pixel centres at integers)."""
    from fer_ray.faces import Detection

    def back(points: np.ndarray) -> np.ndarray:
        return ((points - pad + 0.5) / scale - 0.5).astype(np.float32)

    return Detection(back(face.bbox), back(face.landmarks), face.score)


def upsampled_crops(images: list[np.ndarray]) -> tuple[np.ndarray, float, float]:
    """Equally sized face crops as RGB (N, H', W', 3) uint8, upsampled to about CROP_DETECT_SIDE and
    edge-padded, with the scale and the padding (upsampled pixels) that `in_crop` maps points back with."""
    from PIL import Image

    first = np.asarray(images[0])
    scale = max(1.0, CROP_DETECT_SIDE / max(first.shape[:2]))
    size = (round(first.shape[1] * scale), round(first.shape[0] * scale))
    pad = round(CROP_PAD * max(size) / 2)
    out = []
    for image in images:
        pil = Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
        big = np.asarray(pil.resize(size, Image.Resampling.BILINEAR))
        out.append(np.pad(big, ((pad, pad), (pad, pad), (0, 0)), mode="edge"))
    return np.stack(out), scale, float(pad)
