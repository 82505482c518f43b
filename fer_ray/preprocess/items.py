"""Work items in, summary rows out: what every face stage reads from a batch and reports per item."""

from __future__ import annotations

import io
import json
import time
from contextlib import contextmanager

import numpy as np

from fer_ray import labels, schema, storage
from fer_ray.inputs import MEMBERS
from fer_ray.video import VideoError, open_video

FACES = schema.FACES_TABLE  # table name under the output
STAGE_NAME = "preprocess"
STATUS_DONE, STATUS_SKIPPED, STATUS_FAILED = "done", "skipped", "failed"
# Where an item's seconds went, measured by the fused stage (PhaseClock): reading and decoding, detection and
# tracking, alignment + JPEG encoding, Parquet writes. The split path reports its total seconds only.
PHASES = ("decode", "detect", "align", "write")
PHASE_COLUMNS = tuple(f"{phase}_seconds" for phase in PHASES)
# `tracks`: with all_faces, the kept face tracks as JSON ({"<track id>": frames with that face}); else "".
SUMMARY_COLUMNS = ("video_id", "kind", "status", "frames", "faces", "seconds", "error", "started_at", "tracks",
                   *PHASE_COLUMNS)


class LabelMismatchError(ValueError):
    """A label file whose frame count differs from the video's."""


# Errors whose message says what is wrong with the input; anything else is reported with its type.
INPUT_ERRORS = (VideoError, labels.LabelFormatError, LabelMismatchError, FileNotFoundError)


def error_text(exc: BaseException) -> str:
    if isinstance(exc, INPUT_ERRORS):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def batch_items(batch) -> list[dict]:
    """Work items of a Ray Data batch (dict of columns or a pandas DataFrame) as plain dicts."""
    if hasattr(batch, "to_dict") and hasattr(batch, "columns"):  # pandas
        rows = batch.to_dict("records")
    else:
        columns = {k: list(v) for k, v in batch.items()}
        count = len(next(iter(columns.values()))) if columns else 0
        rows = [{k: v[i] for k, v in columns.items()} for i in range(count)]
    out = []
    for row in rows:
        item = {k: plain(v) for k, v in row.items()}
        members = item.get(MEMBERS)
        if isinstance(members, str):
            members = json.loads(members)
        item[MEMBERS] = [dict(m) for m in (members or [])]
        out.append(item)
    return out


def plain(value):
    """numpy scalars / NaN (from pandas) to plain Python; None stays None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    return value


def summary_row(item: dict) -> dict:
    """A work item's summary row before it ran: failed until it says otherwise."""
    return {"video_id": str(item.get(schema.VIDEO_ID) or ""), "kind": item.get(schema.KIND) or "video",
            "status": STATUS_FAILED, "frames": 0, "faces": 0, "seconds": 0.0, "error": None,
            "started_at": time.time(), "tracks": "", **dict.fromkeys(PHASE_COLUMNS, 0.0)}


class PhaseClock:
    """Seconds per phase (PHASES) of one work item, for its summary row: where a job's time goes."""

    def __init__(self):
        self.seconds = dict.fromkeys(PHASES, 0.0)

    @contextmanager
    def phase(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start

    def timed(self, name: str, iterable):
        """`iterable`'s items, the time spent producing each counted under `name` (a decoder's chunks)."""
        iterator = iter(iterable)
        while True:
            with self.phase(name):
                try:
                    value = next(iterator)
                except StopIteration:
                    return
            yield value

    def columns(self) -> dict[str, float]:
        return {f"{phase}_seconds": round(seconds, 3) for phase, seconds in self.seconds.items()}


def load_image(uri: str) -> np.ndarray:
    """RGB uint8 (H,W,3) of a still image; grey images come back with 3 equal channels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(storage.read_bytes(uri))) as image:
            return np.asarray(image.convert("RGB"))
    except UnidentifiedImageError:
        raise ValueError(f"{uri}: not an image") from None
    except OSError as exc:
        raise ValueError(f"{uri}: unreadable image ({exc})") from None


class LabelledVideo:
    """`with LabelledVideo(item, max_pixels) as (video, labels_of):` the open video of a work item and a
    function from frame indices to their labels (the EXPR file's, or the item's one label); a label file
    whose length is not the video's frame count raises LabelMismatchError."""

    def __init__(self, item: dict, max_pixels: int):
        self.item, self.max_pixels = item, max_pixels
        self.video = None

    def __enter__(self):
        item = self.item
        label_uri = item.get(schema.LABEL_URI)
        frame_labels = labels.read_expr(label_uri) if label_uri else None
        item_label = labels.UNANNOTATED if item.get(schema.LABEL) is None else int(item[schema.LABEL])
        self.video = video = open_video(item[schema.URI], max_pixels=self.max_pixels)
        if frame_labels is not None and len(frame_labels) != video.num_frames:
            video.close()
            raise LabelMismatchError(
                f"{label_uri}: {len(frame_labels)} labels for {video.num_frames} frames of {item[schema.URI]}; "
                "label count must equal the frame count")

        def labels_of(indices: np.ndarray) -> np.ndarray:
            if frame_labels is not None:
                return frame_labels[indices]
            return np.full(len(indices), item_label, dtype=np.int64)

        return video, labels_of

    def __exit__(self, *exc) -> None:
        if self.video is not None:
            self.video.close()
