"""A corpus of bad (and a few good) inputs, built on demand in a temporary directory.

Nothing here is committed as a binary: `build_corpus(tmp_dir)` writes every file in about two
seconds with PyAV, numpy and byte patches of the MP4 boxes. Each entry documents what a correct
pipeline should report for it (`Entry.expect`), the phrase its failure row must contain (`Entry.reason`:
each bad entry has its own, so one generic message cannot pass for all of them) and whether decord can
decode it (`Entry.decord`), so the tests can check that the corpus really is what it claims to be.

Videos carry no face on purpose (moving grey and white shapes): they exercise decoding and the
failure paths, not detection.
"""

from __future__ import annotations

import csv
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

__all__ = ["ENTRIES", "Entry", "build_corpus", "make_video", "moving_square"]

EXPR_HEADER = "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other"
GOOD_FRAMES = 30
LONG_FRAMES = 600  # many chunks of 32 frames; memory per chunk is bounded in tests/unit/test_video.py
HUGE_SIDE = 30_000
ROTATION_90 = (0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)  # tkhd matrix, 16.16 / 2.30 fixed point


@dataclass(frozen=True)
class Entry:
    """One corpus file: how it is built, what decord does with it, what the pipeline must report."""

    name: str
    filename: str
    build: Callable[[Path], None]
    decord: str  # "decodes" (opens and reads every frame), "raises" (opening raises), "n/a" (not a video)
    expect: str  # what a correct pipeline reports for this input
    reason: str = ""  # the specific phrase of its failure row ("" when the input is accepted)


# --------------------------------------------------------------------------- video helpers


def moving_square(index: int, size: tuple[int, int]) -> np.ndarray:
    """An RGB frame: dark background, a white square moving diagonally (no face, cheap to draw)."""
    width, height = size
    frame = np.full((height, width, 3), 40, dtype=np.uint8)
    side = max(4, min(width, height) // 4)
    x = (index * 3) % max(1, width - side)
    y = (index * 2) % max(1, height - side)
    frame[y:y + side, x:x + side] = 255
    return frame


def make_video(
    path: Path,
    frames: int = GOOD_FRAMES,
    size: tuple[int, int] = (128, 128),
    fps: int = 30,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    container: str | None = None,
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
    timestamps_ms: Sequence[int] | None = None,
) -> Path:
    """Encode `frames` moving-square frames of `size` (width, height) with PyAV.

    `timestamps_ms` gives each frame's presentation time (variable frame rate); by default frames
    are evenly spaced at `fps`. `container` forces a format whatever the file extension says.
    """
    import av

    if timestamps_ms is not None:
        frames = len(timestamps_ms)
    with av.open(str(path), "w", format=container, options=container_options or {}) as output:
        stream = output.add_stream(codec, rate=fps, options=options or {})
        stream.width, stream.height = size
        stream.pix_fmt = pix_fmt
        if timestamps_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        output.start_encoding()  # writes the header even when no frame follows
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(moving_square(index, size), format="rgb24")
            if timestamps_ms is not None:
                frame.pts, frame.time_base = int(timestamps_ms[index]), Fraction(1, 1000)
            output.mux(stream.encode(frame))
        output.mux(stream.encode())
    return path


def find_box(data: bytes | bytearray, box: bytes, after: int = 0) -> int:
    """Offset of the first MP4 box of this type at or after `after` (the start of its size field)."""
    at = data.find(box, after)
    if at < 4:
        raise ValueError(f"no {box!r} box")
    return at - 4


def patch_tkhd(data: bytearray, matrix: Sequence[int] | None = None, size: tuple[int, int] | None = None) -> None:
    """Rewrite the track header's display matrix and/or display size in place (same length)."""
    start = find_box(data, b"tkhd")
    if data[start + 8] != 0:  # version 1 has 64-bit times and shifts every field below
        raise ValueError("only version-0 tkhd boxes are patched")
    if matrix is not None:
        struct.pack_into(">9i", data, start + 48, *matrix)
    if size is not None:
        struct.pack_into(">II", data, start + 84, size[0] << 16, size[1] << 16)


# --------------------------------------------------------------------------- video builders


def _good(path: Path) -> None:
    make_video(path)


def _good_small(path: Path) -> None:
    make_video(path, frames=GOOD_FRAMES, size=(64, 64))


def _zero_byte(path: Path) -> None:
    path.write_bytes(b"")


def _cut_in_half(path: Path, faststart: bool) -> None:
    full = path.with_suffix(".full.tmp")
    make_video(full, container="mp4", container_options={"movflags": "faststart"} if faststart else None)
    data = full.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    full.unlink()


def _truncated_no_index(path: Path) -> None:
    # PyAV writes the moov (frame index) after the data: half a file has frames but no index.
    _cut_in_half(path, faststart=False)


def _truncated_mid_data(path: Path) -> None:
    # With faststart the index comes first: the header promises 30 frames, half the data is gone.
    _cut_in_half(path, faststart=True)


def _text_as_mp4(path: Path) -> None:
    path.write_text("this is a text file, not a video\n" * 8, encoding="utf-8")


def _png_as_mp4(path: Path) -> None:
    from PIL import Image

    Image.fromarray(moving_square(0, (64, 64))).save(path, format="PNG")


def _valid_avi(path: Path) -> None:
    make_video(path, frames=10, size=(64, 64), codec="mpeg4")


def _valid_mkv(path: Path) -> None:
    make_video(path, frames=10, size=(64, 64))


def _mkv_named_mp4(path: Path) -> None:
    make_video(path, frames=10, size=(64, 64), container="matroska")


def _huge_declared_dims(path: Path) -> None:
    # MJPEG keeps the frame size in fixed 16-bit fields (JPEG SOF0, mp4v sample entry, tkhd),
    # so the patch keeps every length: a 4 KB file that claims 30000x30000 pixels.
    make_video(path, frames=5, size=(64, 64), codec="mjpeg", pix_fmt="yuvj420p", container="mp4")
    data = bytearray(path.read_bytes())
    at = data.find(b"\xff\xc0")
    while at >= 0:  # SOF0: marker, length(2), precision(1), height(2), width(2)
        struct.pack_into(">HH", data, at + 5, HUGE_SIDE, HUGE_SIDE)
        at = data.find(b"\xff\xc0", at + 2)
    entry = find_box(data, b"mp4v", after=find_box(data, b"stsd"))  # visual sample entry: width, height at offset 32
    struct.pack_into(">HH", data, entry + 32, HUGE_SIDE, HUGE_SIDE)
    patch_tkhd(data, size=(HUGE_SIDE, HUGE_SIDE))
    path.write_bytes(bytes(data))


def _wide_real(path: Path) -> None:
    make_video(path, frames=3, size=(4096, 64))


def _zero_frames(path: Path) -> None:
    make_video(path, frames=0, size=(64, 64), container="mp4")


def _variable_frame_rate(path: Path) -> None:
    gaps = [33, 33, 10, 100, 33, 5, 200, 33, 16, 66] * 3
    make_video(path, size=(64, 64), timestamps_ms=np.concatenate([[0], np.cumsum(gaps)[:-1]]).tolist())


def _rotated_90(path: Path) -> None:
    # A phone held upright: landscape pixels (96x64) plus a display matrix saying "rotate 90".
    make_video(path, frames=10, size=(96, 64), container="mp4")
    data = bytearray(path.read_bytes())
    patch_tkhd(data, matrix=ROTATION_90)
    path.write_bytes(bytes(data))


def _grayscale(path: Path) -> None:
    make_video(path, frames=10, size=(64, 64), pix_fmt="gray")


def _long_no_face(path: Path) -> None:
    make_video(path, frames=LONG_FRAMES, size=(64, 64), options={"preset": "ultrafast"})


# --------------------------------------------------------------------------- text builders


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def _labels_good(path: Path) -> None:
    _write_lines(path, [EXPR_HEADER] + [str(i % 8) for i in range(GOOD_FRAMES)])


def _labels_wrong_header(path: Path) -> None:
    _write_lines(path, ["Neutral,Happy,Sad"] + ["0"] * GOOD_FRAMES)


def _labels_wrong_length(path: Path) -> None:
    _write_lines(path, [EXPR_HEADER] + ["0"] * (GOOD_FRAMES - 5))


def _labels_out_of_range(path: Path) -> None:
    _write_lines(path, [EXPR_HEADER] + ["0"] * 10 + ["8", "-2"] + ["0"] * (GOOD_FRAMES - 12))


def _labels_non_integer(path: Path) -> None:
    _write_lines(path, [EXPR_HEADER] + ["0"] * 10 + ["1.5", "happy"] + ["0"] * (GOOD_FRAMES - 12))


def _labels_not_utf8(path: Path) -> None:
    path.write_bytes(EXPR_HEADER.encode() + b"\n" + b"\xff\xfe\x00\x01\n" * GOOD_FRAMES)


def _write_manifest(path: Path, rows: Sequence[tuple[str, str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video_id", "uri", "label_uri"])
        writer.writerows(rows)


def _manifest_duplicate_ids(path: Path) -> None:
    _write_manifest(path, [
        ("clip", "good.mp4", "labels_good.txt"),
        ("other", "good_small.mp4", ""),
        ("clip", "good_small.mp4", ""),
    ])


def _manifest_unsafe_ids(path: Path) -> None:
    # Ids become output names (submission/<video_id>.txt): these would escape or nest.
    _write_manifest(path, [
        ("../../escape", "good.mp4", ""),
        ("nested/id", "good.mp4", ""),
        ("..", "good.mp4", ""),
        ("/absolute", "good.mp4", ""),
    ])


def _spaces_and_unicode(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    make_video(path, frames=10, size=(64, 64))


# --------------------------------------------------------------------------- the corpus

ENTRIES: tuple[Entry, ...] = (
    Entry("good", "good.mp4", _good, "decodes",
          "accepted: 30 frames 128x128, every frame 'no_face'"),
    Entry("good_small", "good_small.mp4", _good_small, "decodes",
          "accepted: 30 frames 64x64, every frame 'no_face'"),
    Entry("zero_byte", "zero_byte.mp4", _zero_byte, "raises",
          "failure row: empty file (0 bytes), before any decoder is opened", reason="empty file (0 bytes)"),
    Entry("truncated_no_index", "truncated_no_index.mp4", _truncated_no_index, "raises",
          "failure row: truncated, the MP4 index (moov box) is missing", reason="truncated video: no frame index"),
    Entry("truncated_mid_data", "truncated_mid_data.mp4", _truncated_mid_data, "raises",
          "failure row: truncated video (index promises 30 frames, data ends early); no partial shard marked done",
          reason="truncated video: data ends early"),
    Entry("text_as_mp4", "text_as_mp4.mp4", _text_as_mp4, "raises",
          "failure row: not a video (no container recognised)", reason="not a video container"),
    Entry("png_as_mp4", "png_as_mp4.mp4", _png_as_mp4, "raises",
          "failure row: not a video (a still image; no duration or frame count)",
          reason="a still image, not a video"),
    Entry("valid_avi", "valid.avi", _valid_avi, "decodes",
          "accepted as a video (AVI is decodable), or rejected by extension with that reason; never silently skipped"),
    Entry("valid_mkv", "valid.mkv", _valid_mkv, "decodes",
          "accepted as a video, or rejected by extension with that reason"),
    Entry("mkv_named_mp4", "mkv_named_mp4.mp4", _mkv_named_mp4, "decodes",
          "accepted: the content is probed, the extension is only a hint"),
    Entry("huge_declared_dims", "huge_declared_dims.mp4", _huge_declared_dims, "raises",
          f"failure row: frame size {HUGE_SIDE}x{HUGE_SIDE} over the limit (check the header before decoding; never OOM)",
          reason=f"frame size {HUGE_SIDE}x{HUGE_SIDE} is over the limit"),
    Entry("wide_real", "wide_real.mp4", _wide_real, "decodes",
          "accepted: 4096x64 is real; frames are resized for detection, memory stays bounded by chunking"),
    Entry("zero_frames", "zero_frames.mp4", _zero_frames, "raises",
          "failure row: no video stream (the muxer writes no track for a stream without frames)",
          reason="no video stream"),
    Entry("variable_frame_rate", "variable_frame_rate.mp4", _variable_frame_rate, "decodes",
          "accepted: 30 frames; timestamps come from the stream (irregular), not frame_index / fps"),
    Entry("rotated_90", "rotated_90.mp4", _rotated_90, "decodes",
          "accepted: frames upright (decord applies the display matrix: 64 wide, 96 high); bbox in rotated pixels"),
    Entry("grayscale", "grayscale.mp4", _grayscale, "decodes",
          "accepted: grey pixels come back as 3 equal RGB channels"),
    Entry("long_no_face", "long_no_face.mp4", _long_no_face, "decodes",
          "accepted: 600 rows with reason 'no_face', decoded in bounded chunks; not a failure"),
    Entry("spaces_and_unicode", "dir with space/vidéo ñ 表情.mp4", _spaces_and_unicode, "decodes",
          "accepted: the path is used as given (no shell, no URL mangling); the derived id stays printable"),
    Entry("labels_good", "labels_good.txt", _labels_good, "n/a",
          "accepted: 30 labels, matches good.mp4"),
    Entry("labels_wrong_header", "labels_wrong_header.txt", _labels_wrong_header, "n/a",
          "LabelFormatError: wrong header (line 1), the header itself not quoted", reason=":1: wrong header"),
    Entry("labels_wrong_length", "labels_wrong_length.txt", _labels_wrong_length, "n/a",
          "failure row: 25 labels for a 30-frame video (length mismatch is an error, not a silent pad)",
          reason="25 labels for 30 frames"),
    Entry("labels_out_of_range", "labels_out_of_range.txt", _labels_out_of_range, "n/a",
          "LabelFormatError: value 8 outside -1..7 (line 12)", reason=":12: value 8 outside -1..7"),
    Entry("labels_non_integer", "labels_non_integer.txt", _labels_non_integer, "n/a",
          "LabelFormatError: not an integer (line 12), the line itself not quoted", reason=":12: not an integer"),
    Entry("labels_not_utf8", "labels_not_utf8.txt", _labels_not_utf8, "n/a",
          "LabelFormatError: unreadable label file, not UTF-8 text", reason="unreadable label file: not UTF-8"),
    Entry("manifest_duplicate_ids", "manifest_duplicate_ids.csv", _manifest_duplicate_ids, "n/a",
          "every row of the id is rejected: duplicate video_id 'clip' (rows 2, 4); the other rows run",
          reason="duplicate video_id 'clip'"),
    Entry("manifest_unsafe_ids", "manifest_unsafe_ids.csv", _manifest_unsafe_ids, "n/a",
          "job refuses to start (or the id is rejected per row): ids with '..', '/' or a leading '/' "
          "would write outside the output prefix"),
)


def build_corpus(tmp_dir: Path | str) -> dict[str, Path]:
    """Write every corpus entry under `tmp_dir`; returns entry name -> file path."""
    root = Path(tmp_dir)
    root.mkdir(parents=True, exist_ok=True)
    paths = {}
    for entry in ENTRIES:
        path = root / entry.filename
        entry.build(path)
        paths[entry.name] = path
    return paths
