"""Per-video post-processing: temporal heads, ensemble, Smooth Predicting, cascade routing, gap fill, writes.

Runs on one video's logits rows (small: no images), sorted by frame index here because Ray Data does not
keep row order. Writes the video's predictions, its ABAW submission txt and (on request) its per-model
logits, then the done marker last, so a crash never leaves a video that looks complete. A redo (new model
version, or faces redone from a changed input) writes its parts under a new attempt id and switches the
markers last (fer_ray.shards), so until the switch the previous version stays whole and readable.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from fer_ray import labels, schema, shards, storage
from fer_ray.infer import cascade
from fer_ray.infer.predict import VideoScores, predict_video
from fer_ray.infer.systems import ModelEntry, system_of
from fer_ray.plan import Resources, Step

# old names of the schema constants (other modules and tests import them from here)
PREDICTIONS, LOGITS, SUBMISSION = schema.PREDICTIONS_TABLE, schema.LOGITS_TABLE, schema.SUBMISSION_DIR


def submission_name(video_id: str, track: int | None = None, subject: str | None = None) -> str:
    """File name of the ABAW txt of a video (one face stream), of a named person of a video labelled per
    person (`<key>_left.txt`, as Aff-Wild2 names them), or of another face track (`<key>_track<id>.txt`)."""
    suffix = f"_{subject}" if subject else "" if track is None else f"_track{int(track)}"
    return storage.safe_key(video_id) + suffix + ".txt"


def submission_uri(output: str, video_id: str, track: int | None = None, subject: str | None = None) -> str:
    return storage.join(output, schema.SUBMISSION_DIR, submission_name(video_id, track, subject))


def submission_names(video_id: str, tracks: list[int], subjects: dict[int, str]) -> dict[int, str]:
    """Track -> the file name of its ABAW txt (annotate's and export's): a video's one face stream (track 0
    alone) keeps the video's name; a named subject's track takes the subject; any other track its id."""
    several = sorted(tracks) != [0]
    return {t: submission_name(video_id, t if several else None, subjects.get(t)) for t in tracks}


def name_tracks(tracks: list[tuple[int, dict]], subjects: list[str]) -> dict[int, str]:
    """Track id -> subject name: the len(subjects) tracks with the most faces (ties: lower id), named in
    order of their mean box centre from left to right (subjects are given left to right)."""
    if not subjects:
        return {}
    counts = {t: int(np.asarray(rows[schema.FACE_FOUND], bool).sum()) for t, rows in tracks}
    main = sorted(counts, key=lambda t: (-counts[t], t))[:len(subjects)]
    return {t: name for t, name in zip(sorted(main, key=lambda t: _mean_x(dict(tracks)[t])), subjects)}


def _mean_x(rows: dict) -> float:
    """Mean horizontal box centre of a track's face rows (inf when its boxes are unknown)."""
    boxes = [b for b, found in zip(rows.get(schema.BBOX, []), rows[schema.FACE_FOUND]) if found and b is not None]
    return float(np.mean([(b[0] + b[2]) / 2.0 for b in boxes])) if boxes else float("inf")


def track_ids(batch: dict) -> np.ndarray:
    """Each row's face track (schema.TRACK_ID); 0 on every row of faces written before tracks existed."""
    if schema.TRACK_ID in batch:
        return np.asarray(batch[schema.TRACK_ID], dtype=np.int64)
    return np.zeros(len(batch[schema.FRAME_INDEX]), dtype=np.int64)


def split_tracks(batch: dict) -> list[tuple[int, dict]]:
    """One video's rows (sorted by frame, track) as (track id, that track's rows) per face track, by id.
    Rows with no track (a frame without any face in every-face mode) only count for the frame timeline; a
    video without any track is one track 0 whose frames all lack a face (its predictions are all filled)."""
    tracks = track_ids(batch)
    n = len(tracks)
    ids = sorted(int(t) for t in set(tracks.tolist()) if t != schema.NO_TRACK)
    if not ids:
        no_face = {k: v for k, v in batch.items()}
        no_face[schema.FACE_FOUND] = np.zeros(n, dtype=bool)
        return [(0, no_face)]
    out = []
    for track in ids:
        rows = tracks == track
        out.append((track, {k: np.asarray(v)[rows] if len(v) == n else v for k, v in batch.items()}))
    return out


def full_timestamps(frames: np.ndarray, stamps: np.ndarray, num_frames: int) -> np.ndarray:
    """Timestamps for every frame: known ones kept, others from the rate seen between known frames."""
    out = np.arange(num_frames, dtype=np.float64)
    if frames.size >= 2 and frames[-1] > frames[0]:
        rate = (stamps[-1] - stamps[0]) / (frames[-1] - frames[0])
        out = stamps[0] + (out - frames[0]) * rate
    elif frames.size == 1:
        out = out - frames[0] + stamps[0]
    known = (frames >= 0) & (frames < num_frames)
    out[frames[known]] = stamps[known]
    return out


class TemporalHeads:
    """Runs the clip (Mao) and sequence (PRL) heads over one video's per-frame features.

    torch and the models are imported only where a temporal head runs: a frame-model system's
    post-processing actor then starts without them, which is seconds per actor on a small node."""

    def __init__(self, entries: list[ModelEntry]):
        temporal = [e for e in entries if e.kind != "frame"]
        self.models = {}
        if temporal:
            import torch

            from fer_ray.models import load_checkpoint

            torch.set_num_threads(1)
            self.models = {e.key: (e, load_checkpoint(e.checkpoint)[0]) for e in temporal}

    def num_classes(self, key: str) -> int:
        return int(self.models[key][1].num_classes)

    def logits(self, key: str, features: np.ndarray) -> np.ndarray:
        """(n, C) logits for n face frames in order, from their (n, D) features."""
        import torch

        from fer_ray.models import chunk_indices, clip_indices

        entry, model = self.models[key]
        with torch.inference_mode():
            feats = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
            n = feats.shape[0]
            if entry.kind == "clip":
                index = clip_indices(n, np.arange(n))
                return model.temporal_head(feats[torch.from_numpy(index)]).float().numpy()
            index, mask = chunk_indices(n)
            out = model.temporal_head(feats[torch.from_numpy(index)], torch.from_numpy(mask))
            return out.float().reshape(-1, out.shape[-1])[torch.from_numpy(mask.reshape(-1))].numpy()


def _sorted_unique(batch: dict) -> dict:
    frames = np.asarray(batch[schema.FRAME_INDEX], dtype=np.int64)
    tracks = track_ids(batch)
    # keep the last row of any repeated (frame, track) (a retried task), then frame and track order
    keys = np.stack([frames, tracks], axis=1)
    _, last = np.unique(keys[::-1], axis=0, return_index=True)
    order = (len(frames) - 1 - last)
    order = order[np.lexsort((tracks[order], frames[order]))]
    return {k: np.asarray(v)[order] if len(v) == len(frames) else v for k, v in batch.items()}


def _matrix(values) -> np.ndarray:
    return np.stack([np.asarray(v, dtype=np.float32) for v in values]) if len(values) else np.zeros((0, 0))


class VideoPostprocess:
    """`__call__(one video's rows) -> one summary row`. Safe to retry: every write is whole and idempotent."""

    def __init__(self, output: str, entries: list[ModelEntry], system: str, window: int, version: str,
                 weights: dict[str, float] | None = None, keep_logits: bool = False,
                 extras: list[ModelEntry] | None = None, sources: dict[str, str] | None = None,
                 subjects: dict[str, list[str]] | None = None, photos: list[str] = (), video_prior: float = 0.0):
        """`extras`: models whose logits are only kept (for ablations), never part of the prediction.
        `sources`: video id -> fingerprint of its faces (the faces done marker's), recorded in the
        predictions marker so a video whose faces are redone is annotated again."""
        self.output, self.entries, self.system_name = output, entries, system
        self.sources = dict(sources or {})
        self.subjects = dict(subjects or {})  # video id -> subject names (left to right) of its main tracks
        self.photos = set(photos)  # photos are one-frame videos without an ABAW submission file
        self.window, self.version, self.keep_logits = window, version, keep_logits
        self.system = system_of(entries, system, weights, video_prior)
        self.heads = TemporalHeads(list(entries) + list(extras or []))

    def _scores(self, batch: dict, face: np.ndarray) -> dict[str, np.ndarray]:
        """model key -> (n, C) logits over the video's rows, NaN where the row has no face."""
        out = {}
        for name in batch:
            if not name.startswith(schema.LOGITS_COLUMN_PREFIX):
                continue
            key, values = schema.model_key_of_column(name), _matrix(batch[name])
            if key in self.heads.models:
                if not face.any():  # no face anywhere: nothing for the temporal head to look at
                    out[key] = np.full((len(face), self.heads.num_classes(key)), np.nan, dtype=np.float32)
                    continue
                logits = self.heads.logits(key, values[face])
                values = np.full((len(face), logits.shape[1]), np.nan, dtype=np.float32)
                values[face] = logits
            out[key] = values
        return out

    def _predict(self, frames, scores, num_frames) -> dict[str, np.ndarray]:
        probs = {k: np.where(np.isnan(v).any(axis=1, keepdims=True), np.nan, cascade.softmax(np.nan_to_num(v)))
                 for k, v in scores.items()}
        return predict_video(VideoScores(frames, probs), self.system, self.window, num_frames)

    def __call__(self, batch: dict) -> dict:
        """One video's rows -> its predictions, one part per face track: ensemble, SP, cascade and gap fill run
        on each track's own frames, so Smooth Predicting never mixes two people."""
        start = time.perf_counter()
        batch = _sorted_unique(batch)
        video_id = str(batch[schema.VIDEO_ID][0])
        frames = batch[schema.FRAME_INDEX]
        num_frames = int(max(int(np.max(batch[schema.NUM_FRAMES])), int(frames.max()) + 1))
        stamps = full_timestamps(frames, np.asarray(batch[schema.TIMESTAMP], dtype=np.float64), num_frames)
        source, fingerprint = self.sources.get(video_id, ""), self.fingerprint_of(video_id)
        attempt = shards.next_attempt(shards.read_marker(self.output, schema.PREDICTIONS_TABLE, video_id), fingerprint)
        tracks = split_tracks(batch)
        several = [t for t, _ in tracks] != [0]  # one face stream (track 0): today's files, exactly
        names = name_tracks(tracks, self.subjects.get(video_id, []))
        files = submission_names(video_id, [t for t, _ in tracks], names)
        parts, logits_parts, histogram, faces_found = [], [], np.zeros(labels.NUM_CLASSES, np.int64), 0
        for number, (track, rows) in enumerate(tracks):
            face = np.asarray(rows[schema.FACE_FOUND], dtype=bool)
            scores = self._scores(rows, face)
            result = self._predict(rows[schema.FRAME_INDEX], scores, num_frames)
            parts.append(shards.write_part(self.output, schema.PREDICTIONS_TABLE, video_id, number,
                                           self._table(video_id, result, stamps, num_frames, track), attempt))
            if self.keep_logits:
                logits_parts.append(_logits_table(video_id, rows[schema.FRAME_INDEX], scores, track))
            # one whole file, replaced atomically; the predictions marker below says which version is done
            if video_id not in self.photos:
                labels.write_expr(storage.join(self.output, schema.SUBMISSION_DIR, files[track]), result["label"])
            histogram += np.bincount(result["label"], minlength=labels.NUM_CLASSES)
            faces_found += int((~result["filled"]).sum())
        if self.keep_logits:
            self._write_logits(video_id, logits_parts, fingerprint, source)
        track_info = {"tracks": [t for t, _ in tracks]} if several or names else {}
        if names:
            track_info["subjects"] = {name: track for track, name in sorted(names.items())}
        shards.mark_done(self.output, schema.PREDICTIONS_TABLE, video_id, parts, model_version=self.version, source=source,
                         frames=num_frames, faces=faces_found, histogram=histogram.tolist(), **track_info)
        return {schema.VIDEO_ID: [video_id], "status": ["done"], "frames": [num_frames], "faces": [faces_found],
                "seconds": [time.perf_counter() - start], schema.ERROR: [""]}

    def _write_logits(self, video_id: str, tables: list[pa.Table], fingerprint: str, source: str) -> None:
        attempt = shards.next_attempt(shards.read_marker(self.output, schema.LOGITS_TABLE, video_id), fingerprint)
        parts = [shards.write_part(self.output, schema.LOGITS_TABLE, video_id, 0, pa.concat_tables(tables), attempt)]
        shards.mark_done(self.output, schema.LOGITS_TABLE, video_id, parts, model_version=self.version, source=source)

    def fingerprint_of(self, video_id: str) -> str:
        """What one annotation of a video depends on: the model version and its faces' fingerprint."""
        return f"{self.version}|{self.sources.get(video_id, '')}"

    def _table(self, video_id: str, result: dict, stamps: np.ndarray, num_frames: int, track: int = 0) -> pa.Table:
        label = result["label"].astype(np.int64)
        empty = [[] for _ in range(num_frames)]
        return pa.table({
            schema.VIDEO_ID: [video_id] * num_frames,
            schema.FRAME_INDEX: np.arange(num_frames, dtype=np.int64),
            schema.TIMESTAMP: stamps,
            schema.LABEL: label,
            schema.LABEL_NAME: np.asarray(labels.ABAW_CLASSES)[label],
            schema.PROBS: list(result["probs"].astype(np.float32)),
            schema.COARSE_PROBS: list(result["coarse_probs"].astype(np.float32)) if "coarse_probs" in result else empty,
            schema.NEGATIVE_PROBS: list(result["negative_probs"].astype(np.float32)) if "negative_probs" in result else empty,
            schema.FACE_FOUND: ~result["filled"],
            schema.FILLED: result["filled"],
            schema.SYSTEM: [self.system_name] * num_frames,
            schema.MODEL_VERSION: [self.version] * num_frames,
            schema.TRACK_ID: np.full(num_frames, track, dtype=np.int64),
            schema.DECISION: decisions(label, result),
        }, schema=schema.PREDICTIONS_SCHEMA)


def decisions(label: np.ndarray, result: dict) -> list[str]:
    """Each frame's decision text (cascade.decision_text) from predict_video's result."""
    coarse, negative = result.get("coarse_probs"), result.get("negative_probs")
    return [cascade.decision_text(int(k), result["probs"][i], None if coarse is None else coarse[i],
                                  None if negative is None else negative[i]) for i, k in enumerate(label)]


def _logits_table(video_id: str, frames: np.ndarray, scores: dict[str, np.ndarray], track: int = 0) -> pa.Table:
    """Long per-model logits (LOGITS_SCHEMA) for the frames with a face: what the ablation tables read."""
    rows = {schema.VIDEO_ID: [], schema.FRAME_INDEX: [], schema.MODEL: [], schema.SCORES: [], schema.TRACK_ID: []}
    for key, values in sorted(scores.items()):
        ok = ~np.isnan(values).any(axis=1)
        rows[schema.VIDEO_ID] += [video_id] * int(ok.sum())
        rows[schema.FRAME_INDEX] += frames[ok].tolist()
        rows[schema.MODEL] += [key] * int(ok.sum())
        rows[schema.SCORES] += list(values[ok])
        rows[schema.TRACK_ID] += [int(track)] * int(ok.sum())
    return pa.table(rows, schema=schema.LOGITS_SCHEMA)


class SafeVideoPostprocess:
    """VideoPostprocess with failures as data: an error becomes a failure record, not a crashed job."""

    def __init__(self, **kwargs):
        self.inner = VideoPostprocess(**kwargs)
        self.output = kwargs["output"]

    @classmethod
    def step(cls, kwargs: dict, partitions: int) -> Step:
        # one actor, whole videos (the logits rows of one video, small); a group-by-video shuffle first
        return Step(cls, kwargs, Resources(num_cpus=0.25, batch_size=None), name="post-processing actor",
                    group_by=schema.VIDEO_ID, partitions=partitions)

    def __call__(self, batch: dict) -> dict:
        try:
            return self.inner(batch)
        except Exception as exc:  # noqa: BLE001 - recorded per video, the job goes on
            video_id = str(batch[schema.VIDEO_ID][0])
            message = f"{type(exc).__name__}: {exc}"
            shards.write_failure(self.output, video_id, "", "postprocess", message,
                                 fingerprint=self.inner.fingerprint_of(video_id))
            return {k: [v] for k, v in failed_row(video_id, message).items()}


def failed_row(video_id: str, error: str) -> dict:
    return {schema.VIDEO_ID: video_id, "status": "failed", "frames": 0, "faces": 0, "seconds": 0.0,
            schema.ERROR: error}
