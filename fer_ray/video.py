"""Chunked video decoding with decord: bounded memory, optional stride, per-frame timestamps.

    with open_video("s3://bucket/clip.mp4") as video:          # S3 objects go to a temp file first
        for chunk in video.chunks(chunk_size=32, stride=2, max_frames=300):
            chunk.indices, chunk.timestamps, chunk.frames       # int64 (n,), float64 (n,) s, uint8 (n,H,W,3)

A long video is never held whole: each chunk is one `get_batch` over an index range, and a chunk
holds at most `chunk_size` frames and at most `max_chunk_bytes` of pixels. Timestamps come from the
stream (`get_frame_timestamp`, so variable-frame-rate videos are right); index / fps is the fallback.

Every problem opening or decoding a file raises `VideoError` with a message naming the file and what is
wrong; decord's own exceptions never escape. Before decord sees a file its header is probed (MP4 boxes,
then PyAV), so each kind of bad file gets its own reason (the REASON_* phrases) instead of one generic
"cannot open", and a frame size over the limit is refused from the header, before any pixel is decoded.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from fer_ray import storage

__all__ = [
    "VIDEO_EXTENSIONS",
    "Chunk",
    "Video",
    "VideoError",
    "frame_indices",
    "open_video",
    "read_frames",
]

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
MAX_PIXELS = 8192 * 8192  # refuse frames larger than this before decoding a chunk of them
MAX_CHUNK_BYTES = 256 * 1024 * 1024

# Stable phrases each failure message contains (tests and users can match on them).
REASON_MISSING = "no such file"
REASON_EMPTY = "empty file (0 bytes)"
REASON_NO_INDEX = "truncated video: no frame index"
REASON_DATA_ENDS = "truncated video: data ends early"
REASON_NOT_CONTAINER = "not a video container"
REASON_STILL_IMAGE = "a still image, not a video"
REASON_NO_VIDEO_STREAM = "no video stream"
REASON_NO_FRAMES = "video has no frames"
REASON_TOO_LARGE = "is over the limit"  # "frame size WxH is over the limit (N pixels)"
REASON_UNDECODABLE = "cannot open as a video"

_MP4_TOP_LEVEL = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pdin", b"moof", b"mfra", b"styp",
                  b"sidx", b"uuid", b"meta")
_MP4_CONTAINERS = (b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts")
_MAX_MOOV_BYTES = 64 * 1024 * 1024


class VideoError(RuntimeError):
    """A video that cannot be opened or decoded; the message says which file and why."""


@dataclass
class Chunk:
    """Consecutive decoded frames (after stride) of one video."""

    indices: np.ndarray  # int64 (n,) frame numbers in the source video
    timestamps: np.ndarray  # float64 (n,) seconds from the start of the stream
    frames: np.ndarray  # uint8 (n, H, W, 3) RGB

    def __len__(self) -> int:
        return len(self.indices)


def frame_indices(num_frames: int, stride: int = 1, max_frames: int | None = None) -> np.ndarray:
    """The frames a job decodes: every `stride`-th frame from 0, at most `max_frames` of them."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
    indices = np.arange(0, max(0, int(num_frames)), int(stride), dtype=np.int64)
    return indices if max_frames is None else indices[:max_frames]


def _decord_errors() -> tuple[type[BaseException], ...]:
    import decord

    return (decord.DECORDError, RuntimeError, ValueError, IndexError)


class Video:
    """An open video file. Use `open_video(uri)` (a context manager) rather than this class directly."""

    def __init__(self, uri: str, max_pixels: int = MAX_PIXELS):
        self.uri = str(uri)
        self.max_pixels = int(max_pixels)
        self._tmpdir: str | None = None
        self._reader = None
        try:
            self.path = self._local_path()
            self._open()
        except BaseException:
            self.close()
            raise

    # -- opening ---------------------------------------------------------------------------------
    def _local_path(self) -> str:
        try:
            nbytes = storage.size(self.uri)
        except FileNotFoundError:
            raise VideoError(f"{self.uri}: {REASON_MISSING}") from None
        if storage.is_dir(self.uri):
            raise VideoError(f"{self.uri}: is a directory, not a video file")
        if nbytes == 0:
            raise VideoError(f"{self.uri}: {REASON_EMPTY}, not a video")
        if not storage.is_s3(self.uri):
            return storage.filesystem(self.uri)[1]
        # decord reads local files only: copy the object to a temp file (streamed, not held in memory;
        # a reset or timeout mid-copy restarts it, bounded: storage.download).
        path = storage.filesystem(self.uri)[1]
        self._tmpdir = tempfile.mkdtemp(prefix="fer-ray-video-")
        local = os.path.join(self._tmpdir, "video" + os.path.splitext(path)[1].lower())
        storage.download(self.uri, local)
        log.debug("downloaded %s (%d bytes) to %s", self.uri, nbytes, local)
        return local

    def _open(self) -> None:
        import decord

        probe(self.path, self.uri, self.max_pixels)
        try:
            self._reader = decord.VideoReader(self.path, ctx=decord.cpu(0), num_threads=1)
        except _decord_errors() as exc:
            raise VideoError(f"{self.uri}: {REASON_UNDECODABLE}: corrupt or unsupported "
                             f"(decord: {_short(exc)})") from None
        self.num_frames = len(self._reader)
        if self.num_frames <= 0:
            raise VideoError(f"{self.uri}: {REASON_NO_FRAMES}")
        try:
            first = self._reader[0].asnumpy()
        except _decord_errors() as exc:
            raise VideoError(f"{self.uri}: cannot decode the first frame ({_short(exc)})") from None
        self.height, self.width = int(first.shape[0]), int(first.shape[1])
        _check_size(self.uri, self.width, self.height, self.max_pixels)
        fps = float(self._reader.get_avg_fps() or 0.0)
        self.fps = fps if np.isfinite(fps) and fps > 0 else 0.0

    def close(self) -> None:
        self._reader = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> Video:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- decoding --------------------------------------------------------------------------------
    def timestamps(self, indices: np.ndarray) -> np.ndarray:
        """Start time (s) of each frame, from the stream; index / fps where the stream has none."""
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) == 0:
            return np.zeros(0, dtype=np.float64)
        try:
            stamps = np.asarray(self._reader.get_frame_timestamp(indices.tolist()), dtype=np.float64)
            stamps = stamps.reshape(len(indices), -1)[:, 0]
            if np.all(np.isfinite(stamps)):
                return stamps
        except _decord_errors():
            pass
        return indices / self.fps if self.fps > 0 else indices.astype(np.float64)

    def read(self, indices: np.ndarray) -> np.ndarray:
        """Decode the given frames: uint8 (n, H, W, 3)."""
        indices = np.asarray(indices, dtype=np.int64)
        try:
            frames = self._reader.get_batch(indices.tolist()).asnumpy()
        except _decord_errors() as exc:
            raise VideoError(f"{self.uri}: decoding frames {indices[0]}..{indices[-1]} of "
                             f"{self.num_frames} failed ({_short(exc)}); truncated or corrupt video") from None
        if frames.shape[0] != len(indices) or frames.ndim != 4 or frames.shape[-1] != 3:
            raise VideoError(f"{self.uri}: decoder returned {frames.shape} for {len(indices)} frames")
        return np.ascontiguousarray(frames, dtype=np.uint8)

    def chunks(self, chunk_size: int = 32, stride: int = 1, max_frames: int | None = None,
               max_chunk_bytes: int = MAX_CHUNK_BYTES) -> Iterator[Chunk]:
        """Decoded frames in order, `chunk_size` (or fewer, to stay under `max_chunk_bytes`) at a time."""
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        frame_bytes = self.height * self.width * 3
        step = max(1, min(int(chunk_size), int(max_chunk_bytes) // max(1, frame_bytes)))
        wanted = frame_indices(self.num_frames, stride, max_frames)
        for start in range(0, len(wanted), step):
            indices = wanted[start:start + step]
            yield Chunk(indices=indices, timestamps=self.timestamps(indices), frames=self.read(indices))


def open_video(uri: str, max_pixels: int = MAX_PIXELS) -> Video:
    """Open a local/file:// or s3:// video; raises VideoError with a clear reason when it cannot be read."""
    return Video(uri, max_pixels=max_pixels)


def read_frames(uri: str, stride: int = 1, max_frames: int | None = None) -> Chunk:
    """Every wanted frame of a (short) video in one array: for tests and small clips only."""
    with open_video(uri) as video:
        indices = frame_indices(video.num_frames, stride, max_frames)
        if len(indices) == 0:
            return Chunk(indices, np.zeros(0), np.zeros((0, video.height, video.width, 3), np.uint8))
        return Chunk(indices=indices, timestamps=video.timestamps(indices), frames=video.read(indices))


# --------------------------------------------------------------------------- header probe


def _check_size(uri: str, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels or width <= 0 or height <= 0:
        raise VideoError(f"{uri}: frame size {width}x{height} {REASON_TOO_LARGE} ({max_pixels} pixels)")


def _boxes(data: bytes, start: int, end: int):
    """(type, payload start, box end) of the MP4 boxes in data[start:end]; stops at a malformed size."""
    at = start
    while at + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, at)
        header = 8
        if size == 1 and at + 16 <= end:
            size, header = struct.unpack_from(">Q", data, at + 8)[0], 16
        elif size == 0:
            size = end - at
        if size < header:
            return
        yield kind, at + header, at + size
        at += size


def _top_level(path: str, nbytes: int) -> list[tuple[bytes, int, int]]:
    """Top-level MP4 boxes (type, offset, declared end), read box header by box header (no payload)."""
    out = []
    with open(path, "rb") as handle:
        at = 0
        while at + 8 <= nbytes:
            handle.seek(at)
            head = handle.read(16)
            size, kind = struct.unpack_from(">I4s", head)
            if size == 1 and len(head) >= 16:
                size = struct.unpack_from(">Q", head, 8)[0]
            elif size == 0:
                size = nbytes - at
            if size < 8:
                break
            out.append((kind, at, at + size))
            at += size
    return out


def _mp4_tracks(moov: bytes) -> list[tuple[int, int]]:
    """Display (width, height) of each track in a moov box's payload (tkhd, 16.16 fixed point)."""
    sizes = []

    def walk(start: int, end: int) -> None:
        for kind, body, stop in _boxes(moov, start, min(end, len(moov))):
            if kind in _MP4_CONTAINERS:
                walk(body, stop)
            elif kind == b"tkhd" and stop <= len(moov):
                offset = body + (88 if moov[body] == 1 else 76)  # version 1 has 64-bit times
                if offset + 8 <= stop:
                    width, height = struct.unpack_from(">II", moov, offset)
                    sizes.append((width >> 16, height >> 16))

    walk(0, len(moov))
    return sizes


def _probe_mp4(path: str, uri: str, max_pixels: int) -> list[tuple[int, int]] | None:
    """Checks of an MP4/MOV file's box structure; the tracks' display sizes, or None if not MP4."""
    nbytes = os.path.getsize(path)
    with open(path, "rb") as handle:
        head = handle.read(8)
    if len(head) < 8 or head[4:8] not in _MP4_TOP_LEVEL:
        return None
    boxes = _top_level(path, nbytes)
    kinds = {kind for kind, _, _ in boxes}
    if b"moov" not in kinds:
        raise VideoError(f"{uri}: {REASON_NO_INDEX} (the MP4 'moov' box is missing; the file was cut short "
                         f"or never finished)")
    cut = [(kind, end) for kind, _, end in boxes if end > nbytes]
    if cut:
        raise VideoError(f"{uri}: {REASON_DATA_ENDS} (the '{cut[0][0].decode('latin-1')}' box declares "
                         f"{cut[0][1]} bytes, the file has {nbytes})")
    _, start, end = next(b for b in boxes if b[0] == b"moov")
    if end - start > _MAX_MOOV_BYTES:
        return []
    with open(path, "rb") as handle:
        handle.seek(start)
        moov = handle.read(end - start)
    return _mp4_tracks(moov[8:])


def probe(path: str, uri: str, max_pixels: int = MAX_PIXELS) -> None:
    """Refuse a local file from its header, with a specific reason, before a decoder reads any frame."""
    import av

    tracks = _probe_mp4(path, uri, max_pixels)
    try:
        container = av.open(path)
    except (av.error.FFmpegError, ValueError, OSError):
        raise VideoError(f"{uri}: {REASON_NOT_CONTAINER} (no known format recognised)") from None
    with container:
        fmt = container.format.name or ""
        streams = list(container.streams.video)
        if fmt.endswith("_pipe") or fmt.startswith("image2"):
            raise VideoError(f"{uri}: {REASON_STILL_IMAGE} ({fmt.removesuffix('_pipe')} data)")
        if not streams:
            if any(w > 0 and h > 0 for w, h in tracks or []):
                raise VideoError(f"{uri}: {REASON_NO_FRAMES} (its video track is empty)")
            raise VideoError(f"{uri}: {REASON_NO_VIDEO_STREAM} (the container holds no video track)")
        width, height = streams[0].width, streams[0].height
    if width <= 0 or height <= 0:  # FFmpeg refused the header's size: take the track header's
        width, height = max(tracks or [(0, 0)], key=lambda s: s[0] * s[1])
    if width > 0 and height > 0:
        _check_size(uri, width, height, max_pixels)


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."
