"""Overlay videos for a person to watch: the annotation drawn on every frame of the source video.

    table = load_predictions("s3://bucket/run", "clip")                  # one video's predictions rows
    boxes = load_boxes("s3://bucket/run", "clip")                        # optional: faces table bboxes
    render_video("s3://bucket/videos/clip.mp4", table, "s3://bucket/run/clip.overlay.mp4", boxes)

Each frame gets (`Overlay`, drawn with PIL ImageDraw): the face box where the faces table has one, what
decided the label ("Negative 0.30 -> Disgust 0.83": the coarse step, then the negative net's share;
"Happiness 0.91" for a class decided in one step; fer_ray.infer.cascade.decision_text), a small bar chart
of the 8 ABAW class probabilities
(the predicted class highlighted) and, on frames whose label was filled from a neighbouring face frame
(schema.FILLED: no face found or frame not decoded), a "filled" marker. The source is decoded with decord
in chunks (fer_ray.video) and encoded with PyAV (libx264 when this PyAV build has it, else mpeg4) at the
source frame rate into a local temp file, which is then written to the output URI (local or s3://) whole.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image, ImageDraw, ImageFont

from fer_ray import labels, schema, shards, storage
from fer_ray.infer.cascade import decision_text
from fer_ray.infer.readers import read_predictions, table_tracks
from fer_ray.video import open_video

__all__ = ["RenderConfig", "Overlay", "pick_codec", "load_predictions", "load_boxes", "frame_rows", "track_frame_rows",
           "render_video", "run"]

log = logging.getLogger(__name__)

FACES_TABLE = schema.FACES_TABLE  # old name: the preprocessing table that holds schema.BBOX
DEFAULT_FPS = 25.0  # when the stream reports no frame rate
FILLED_TEXT = "filled (no face)"


@dataclass
class RenderConfig:
    """jobs/render.py options."""

    video: str  # the source video (local path, file:// or s3://)
    predictions: str  # an annotate output (holds predictions/) or one predictions Parquet file
    output: str  # the overlay .mp4 to write
    video_id: str | None = None  # default: the video file's stem
    faces: str | None = None  # a preprocess/annotate output with faces/, to draw the face box
    max_frames: int | None = None  # render only the first N frames
    chunk_size: int = 64  # frames decoded at a time
    codec: Literal["auto", "libx264", "mpeg4"] = "auto"

    def validate(self) -> None:
        if not self.video or not self.predictions or not self.output:
            raise ValueError("render needs video, predictions and output")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 or null, got {self.max_frames}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")


# ------------------------------------------------------------------------------------------ drawing


class Overlay:
    """`__call__(frame, row) -> frame`: one RGB uint8 (H, W, 3) frame with one predictions row drawn on it.

    `row` maps schema column names to values: LABEL, PROBS (8 floats), FILLED, and optionally BBOX
    ([x1, y1, x2, y2] source pixels, None/NaN when there is no box). A None row (a frame the predictions
    do not cover) leaves the frame as it is. The input frame is not modified.
    """

    BOX_COLOUR = (0, 255, 0)
    TEXT_COLOUR = (255, 255, 255)
    BAR_COLOUR = (90, 170, 255)
    TOP_COLOUR = (255, 200, 0)
    FILLED_COLOUR = (255, 60, 60)

    def __init__(self, width: int, height: int):
        self.width, self.height = int(width), int(height)
        unit = max(1, min(self.width, self.height))
        self.font = _font(max(8, unit // 18))
        self.small = _font(max(7, unit // 26))
        self.line = max(1, unit // 128)
        self.pad = max(2, unit // 64)
        # bar chart panel in the bottom-left corner: one row per class
        self.row_h = max(6, unit // 28)
        self.panel_w = max(60, int(self.width * 0.42))
        self.panel_h = self.row_h * labels.NUM_CLASSES + 2 * self.pad
        self.label_w = int(self.small.getlength("Happ") + self.pad)
        self.panel = (0, self.height - self.panel_h, min(self.width, self.panel_w), self.height)
        self.short = [name[:4] for name in labels.ABAW_CLASSES]

    # one colour per face track of a video with several (cycled)
    TRACK_COLOURS = ((0, 255, 0), (255, 140, 0), (0, 200, 255), (255, 0, 200), (255, 255, 0), (140, 90, 255))

    def __call__(self, frame: np.ndarray, row: dict | list[dict] | None) -> np.ndarray:
        frame = np.asarray(frame, dtype=np.uint8)
        if isinstance(row, list):  # one row per face track
            if len(row) > 1:
                return self.tracks(frame, row)
            row = row[0] if row else None
        if row is None:
            return frame.copy()
        out = frame.copy()
        x1, y1, x2, y2 = self.panel
        out[y1:y2, x1:x2] = out[y1:y2, x1:x2] // 3  # darkened panel behind the bars
        image = Image.fromarray(out)
        draw = ImageDraw.Draw(image)
        label = int(row[schema.LABEL])
        probs = np.asarray(row[schema.PROBS], dtype=np.float64)
        self._box(draw, row.get(schema.BBOX))
        self._title(draw, decision_text(label, probs, row.get(schema.COARSE_PROBS), row.get(schema.NEGATIVE_PROBS)))
        self._bars(draw, probs, label)
        if bool(row.get(schema.FILLED, False)):
            self._filled(draw)
        return np.asarray(image)

    def tracks(self, frame: np.ndarray, rows: list[dict]) -> np.ndarray:
        """Several face tracks on one frame: each box in its track's colour, tagged with the track id and
        what decided its label ("#1 Happiness 0.91"); no bar panel (one per face would cover the frame)."""
        image = Image.fromarray(frame.copy())
        draw = ImageDraw.Draw(image)
        for row in rows:
            track = int(row.get(schema.TRACK_ID) or 0)
            colour = self.TRACK_COLOURS[track % len(self.TRACK_COLOURS)]
            box = self._box(draw, row.get(schema.BBOX), colour)
            if box is None:
                continue
            probs = np.asarray(row[schema.PROBS], dtype=np.float64)
            text = f"#{track} " + decision_text(int(row[schema.LABEL]), probs, row.get(schema.COARSE_PROBS),
                                                row.get(schema.NEGATIVE_PROBS))
            if bool(row.get(schema.FILLED, False)):
                text += " (filled)"
            left, top, right, bottom = draw.textbbox((box[0], 0), text, font=self.small)
            y = max(0, box[1] - (bottom - top) - 2 * self.pad)
            draw.rectangle((box[0], y, box[0] + (right - left) + 2 * self.pad, y + (bottom - top) + 2 * self.pad),
                           fill=colour)
            draw.text((box[0] + self.pad, y + self.pad - top), text, font=self.small, fill=(0, 0, 0))
        return np.asarray(image)

    def _box(self, draw: ImageDraw.ImageDraw, bbox, colour=None) -> tuple[float, float, float, float] | None:
        """Draw a face box (source pixels; None/NaN: no box); returns it as drawn, or None."""
        if bbox is None:
            return None
        box = np.asarray(bbox, dtype=np.float64).reshape(-1)
        if box.size != 4 or not np.all(np.isfinite(box)):
            return None
        x1, y1, x2, y2 = np.clip(box, 0, [self.width - 1, self.height - 1] * 2)
        if x2 > x1 and y2 > y1:
            draw.rectangle((x1, y1, x2, y2), outline=colour or self.BOX_COLOUR, width=self.line * 2)
            return float(x1), float(y1), float(x2), float(y2)
        return None

    def _title(self, draw: ImageDraw.ImageDraw, text: str) -> None:
        left, top, right, bottom = draw.textbbox((self.pad, self.pad), text, font=self.font)
        draw.rectangle((0, 0, right + self.pad, bottom + self.pad), fill=(0, 0, 0))
        draw.text((self.pad, self.pad), text, font=self.font, fill=self.TEXT_COLOUR)

    def _bars(self, draw: ImageDraw.ImageDraw, probs: np.ndarray, label: int) -> None:
        x0, y0, x1, _ = self.panel
        bar_x = x0 + self.pad + self.label_w
        bar_len = max(1, x1 - bar_x - self.pad)
        for k, short in enumerate(self.short):
            top = y0 + self.pad + k * self.row_h
            draw.text((x0 + self.pad, top), short, font=self.small, fill=self.TEXT_COLOUR)
            value = float(probs[k]) if k < len(probs) and np.isfinite(probs[k]) else 0.0
            length = int(round(bar_len * min(max(value, 0.0), 1.0)))
            if length > 0:
                colour = self.TOP_COLOUR if k == label else self.BAR_COLOUR
                draw.rectangle((bar_x, top + 1, bar_x + length, top + self.row_h - 2), fill=colour)

    def _filled(self, draw: ImageDraw.ImageDraw) -> None:
        left, top, right, bottom = draw.textbbox((0, 0), FILLED_TEXT, font=self.small)
        x = self.width - (right - left) - 2 * self.pad
        draw.rectangle((x - self.pad, 0, self.width, bottom + 2 * self.pad), fill=self.FILLED_COLOUR)
        draw.text((x, self.pad), FILLED_TEXT, font=self.small, fill=self.TEXT_COLOUR)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


# ------------------------------------------------------------------------------------------ inputs


def load_predictions(predictions: str, video_id: str) -> pa.Table:
    """One video's predictions rows (schema.PREDICTIONS_SCHEMA) from an annotate output or a Parquet file."""
    if predictions.lower().endswith(".parquet") and not storage.is_dir(predictions):
        table = storage.read_parquet(predictions)
    elif shards.is_done(predictions, schema.PREDICTIONS_TABLE, video_id):  # only this video's parts
        table = storage.read_parquet_many(shards.complete_parts(predictions, schema.PREDICTIONS_TABLE, [video_id]),
                                          schema=schema.PREDICTIONS_SCHEMA)
    else:
        table = read_predictions(predictions)
    rows = table.filter(pc.equal(table.column(schema.VIDEO_ID), video_id))
    if rows.num_rows == 0:
        found = sorted(set(table.column(schema.VIDEO_ID).to_pylist()))
        shown = ", ".join(found[:10]) + (" ..." if len(found) > 10 else "")
        raise ValueError(f"{predictions}: no predictions for video {video_id!r}; videos there: {shown or 'none'}")
    return rows


def load_boxes(faces: str, video_id: str) -> pa.Table:
    """(frame_index, bbox[, track_id]) rows of one video from a preprocess/annotate output's faces table."""
    parts = shards.complete_parts(faces, schema.FACES_TABLE, [video_id])
    if not parts:
        raise FileNotFoundError(f"{faces}: no complete faces for video {video_id!r} under {schema.FACES_TABLE}/")
    every_face = shards.has_tracks(shards.read_marker(faces, schema.FACES_TABLE, video_id))
    return storage.read_parquet_many(parts, columns=[schema.FRAME_INDEX, schema.BBOX]
                                     + ([schema.TRACK_ID] if every_face else []))


def track_frame_rows(predictions: pa.Table, boxes: pa.Table | None = None) -> dict[int, list[dict]]:
    """frame index -> the rows the overlay draws, one per face track (by id), each with its own box
    (`frame_rows` per track; on a decoded frame where a track has no face, that track has no box)."""
    tracks = table_tracks(predictions)
    have_boxes = boxes is not None and boxes.num_rows > 0
    if have_boxes:  # the video's decoded frames, and each face row's (track, frame) -> box
        frames = boxes.column(schema.FRAME_INDEX).to_numpy(zero_copy_only=False).tolist()
        decoded = pa.array(sorted(set(frames)), pa.int64())
        bbox = {(int(t), f): b for t, f, b in zip(table_tracks(boxes), frames, boxes.column(schema.BBOX).to_pylist())}
    out: dict[int, list[dict]] = {}
    for track in sorted(set(tracks.tolist())):
        track_boxes = None
        if have_boxes:
            track_boxes = pa.table({schema.FRAME_INDEX: decoded,
                                    schema.BBOX: [bbox.get((track, f)) for f in decoded.to_pylist()]})
        for frame, row in frame_rows(predictions.filter(pa.array(tracks == track)), track_boxes).items():
            out.setdefault(frame, []).append({**row, schema.TRACK_ID: track})
    return out


def frame_rows(predictions: pa.Table, boxes: pa.Table | None = None) -> dict[int, dict]:
    """frame index -> the row the overlay draws. A frame the faces table does not hold (not decoded, e.g.
    with a stride) keeps the box of the last decoded frame before it; a decoded frame without a face has none."""
    keep = [schema.FRAME_INDEX, schema.LABEL, schema.PROBS, schema.COARSE_PROBS, schema.NEGATIVE_PROBS,
            schema.FILLED]
    rows = {int(r[schema.FRAME_INDEX]): r for r in predictions.select(keep).to_pylist()}
    if boxes is None or boxes.num_rows == 0 or not rows:
        return rows
    frames = np.asarray(boxes.column(schema.FRAME_INDEX).to_pylist(), dtype=np.int64)
    order = np.argsort(frames, kind="stable")
    frames = frames[order]
    bboxes = [boxes.column(schema.BBOX)[int(i)].as_py() for i in order]
    wanted = np.fromiter(rows, dtype=np.int64)
    source = np.searchsorted(frames, wanted, side="right") - 1
    for frame, j in zip(wanted.tolist(), source.tolist()):
        rows[frame][schema.BBOX] = bboxes[j] if j >= 0 else None
    return rows


# ------------------------------------------------------------------------------------------ encoding


def pick_codec(codec: str = "auto") -> str:
    """libx264 when this PyAV build can encode with it, else mpeg4 (or exactly the codec asked for)."""
    import av

    if codec != "auto":
        av.codec.Codec(codec, "w")  # fails with PyAV's message when the encoder is missing
        return codec
    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except Exception:  # noqa: BLE001 - any failure to find the encoder means: fall back
        return "mpeg4"


def _rate(fps: float) -> Fraction:
    fps = fps if fps and np.isfinite(fps) and fps > 0 else DEFAULT_FPS
    return Fraction(fps).limit_denominator(1001)


def run(config: RenderConfig) -> dict:
    """The render job: one video's overlay from its predictions (and face boxes), the resolved config saved
    beside it (<output>.yaml); returns render_video's figures with the video id."""
    from fer_ray import config as config_module

    video_id = config.video_id or storage.stem(config.video)
    predictions = load_predictions(config.predictions, video_id)
    boxes = load_boxes(config.faces, video_id) if config.faces else None
    info = render_video(config.video, predictions, config.output, boxes=boxes, max_frames=config.max_frames,
                        chunk_size=config.chunk_size, codec=config.codec)
    config_module.save(config, config.output + ".yaml")
    return info | {"video_id": video_id}


def render_video(video_uri: str, predictions: pa.Table, output: str, boxes: pa.Table | None = None,
                 max_frames: int | None = None, chunk_size: int = 64, codec: str = "auto") -> dict:
    """Draw `predictions` (one video's rows) over `video_uri` and write an .mp4 to `output`.

    Returns {"frames", "fps", "codec", "width", "height", "bytes", "uncovered"}; "uncovered" counts
    frames the predictions have no row for (drawn unchanged).
    """
    import av

    rows = track_frame_rows(predictions, boxes)
    name = pick_codec(codec)
    written = uncovered = 0
    with tempfile.TemporaryDirectory(prefix="fer-ray-render-") as tmp:
        local = os.path.join(tmp, "overlay.mp4")
        with open_video(video_uri) as video:
            rate = _rate(video.fps)
            overlay = Overlay(video.width, video.height)
            # yuv420p needs even sides: odd frames get one black row/column
            width, height = video.width + video.width % 2, video.height + video.height % 2
            with av.open(local, mode="w") as container:
                stream = container.add_stream(name, rate=rate)
                stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
                if name == "libx264":
                    stream.options = {"crf": "20", "preset": "veryfast"}
                else:
                    stream.bit_rate = int(max(1_000_000, width * height * float(rate) * 0.25))
                for chunk in video.chunks(chunk_size=chunk_size, max_frames=max_frames):
                    for index, frame in zip(chunk.indices.tolist(), chunk.frames):
                        row = rows.get(index)
                        uncovered += row is None
                        drawn = overlay(frame, row)
                        if drawn.shape[:2] != (height, width):
                            drawn = np.pad(drawn, ((0, height - drawn.shape[0]), (0, width - drawn.shape[1]),
                                                   (0, 0)))
                        container.mux(stream.encode(av.VideoFrame.from_ndarray(drawn, format="rgb24")))
                        written += 1
                container.mux(stream.encode(None))
        with open(local, "rb") as handle:
            data = handle.read()
    storage.write_bytes(output, data)
    if uncovered:
        log.warning("%s: %d of %d frames have no prediction row (drawn without overlay)", video_uri,
                    uncovered, written)
    return {"frames": written, "fps": float(rate), "codec": name, "width": width, "height": height,
            "bytes": len(data), "uncovered": uncovered}
