"""The bad-input corpus is what it claims to be, and what decord does with each entry.

These tests document the inputs the preprocessing pipeline will face: which files decord opens,
which raise, and the quirks of the ones that open (rotation applied, grey as RGB, irregular
timestamps). If a decord or FFmpeg upgrade changes any of this, these fail first.
"""

from __future__ import annotations

import csv
import time

import numpy as np
import pytest

from tests.corpus import ENTRIES, GOOD_FRAMES, HUGE_SIDE, LONG_FRAMES, build_corpus

decord = pytest.importorskip("decord")

DECODES = [entry.name for entry in ENTRIES if entry.decord == "decodes"]
RAISES = [entry.name for entry in ENTRIES if entry.decord == "raises"]
FRAME_COUNTS = {"good": GOOD_FRAMES, "good_small": GOOD_FRAMES, "valid_avi": 10, "valid_mkv": 10,
                "mkv_named_mp4": 10, "wide_real": 3, "variable_frame_rate": GOOD_FRAMES, "rotated_90": 10,
                "grayscale": 10, "long_no_face": LONG_FRAMES, "spaces_and_unicode": 10}
DECORD_ERRORS = (RuntimeError, decord.DECORDError)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    start = time.perf_counter()
    paths = build_corpus(tmp_path_factory.mktemp("corpus"))
    return paths, time.perf_counter() - start


@pytest.fixture(scope="module")
def paths(corpus):
    return corpus[0]


def test_build_writes_every_entry_quickly(corpus):
    paths, seconds = corpus
    assert set(paths) == {entry.name for entry in ENTRIES}
    assert all(path.exists() for path in paths.values())
    assert seconds < 20, f"corpus took {seconds:.1f} s to build"


def test_every_entry_documents_an_expectation():
    assert len({entry.name for entry in ENTRIES}) == len(ENTRIES)
    for entry in ENTRIES:
        assert entry.decord in {"decodes", "raises", "n/a"}, entry.name
        assert entry.expect.strip(), entry.name
        assert bool(entry.reason) == entry.expect.startswith(("failure row", "LabelFormatError", "every row")), \
            entry.name
    assert set(DECODES) == set(FRAME_COUNTS)


def test_every_bad_entry_has_its_own_reason():
    reasons = [entry.reason for entry in ENTRIES if entry.reason]
    assert len(reasons) >= 12 and len(set(reasons)) == len(reasons), reasons
    for a in reasons:  # no reason is a fragment of another, so matching one cannot match a sibling's message
        assert not [b for b in reasons if a != b and a in b], a


@pytest.mark.parametrize("name", RAISES)
def test_open_video_reports_the_specific_reason(paths, name):
    """fer_ray.video names what is wrong with each bad file (header probe before decord), one reason each."""
    from fer_ray.video import VideoError, open_video

    entry = next(e for e in ENTRIES if e.name == name)
    start = time.perf_counter()
    with pytest.raises(VideoError) as info:
        open_video(str(paths[name]))
    message = str(info.value)
    assert entry.reason in message and message.startswith(str(paths[name])), message
    assert time.perf_counter() - start < 2  # refused from the header, nothing decoded
    others = [e.reason for e in ENTRIES if e.reason and e.name != name]
    assert not [r for r in others if r in message], message


@pytest.mark.parametrize("name", DECODES)
def test_open_video_accepts_the_good_ones(paths, name):
    from fer_ray.video import open_video

    with open_video(str(paths[name])) as video:
        assert video.num_frames == FRAME_COUNTS[name]


def test_frame_size_guard_uses_the_configured_limit(paths):
    from fer_ray.video import VideoError, open_video

    with pytest.raises(VideoError, match=r"frame size 4096x64 is over the limit \(100000 pixels\)"):
        open_video(str(paths["wide_real"]), max_pixels=100_000)  # a real stream's size, from PyAV's header


@pytest.mark.parametrize("name", DECODES)
def test_decord_decodes(paths, name):
    reader = decord.VideoReader(str(paths[name]))
    assert len(reader) == FRAME_COUNTS[name]
    first_and_last = reader.get_batch([0, len(reader) - 1]).asnumpy()
    assert first_and_last.dtype == np.uint8 and first_and_last.shape[-1] == 3


@pytest.mark.parametrize("name", RAISES)
def test_decord_raises_on_open(paths, name):
    with pytest.raises(DECORD_ERRORS):
        decord.VideoReader(str(paths[name]))


def test_zero_byte_is_empty(paths):
    assert paths["zero_byte"].stat().st_size == 0


def test_huge_dims_is_a_tiny_file_that_pyav_cannot_size(paths):
    import av

    assert paths["huge_declared_dims"].stat().st_size < 10_000
    assert f"{HUGE_SIDE}x{HUGE_SIDE}" in next(e.expect for e in ENTRIES if e.name == "huge_declared_dims")
    with av.open(str(paths["huge_declared_dims"])) as container:
        stream = container.streams.video[0]
        # FFmpeg refuses the size while probing, so the header reports no usable size at all.
        assert (stream.width, stream.height) == (0, 0)
        with pytest.raises(av.error.InvalidDataError):
            next(container.decode(stream))


def test_decord_applies_rotation_and_pyav_does_not(paths):
    import av

    frame = decord.VideoReader(str(paths["rotated_90"]))[0].asnumpy()
    assert frame.shape == (96, 64, 3)  # stored 96 wide x 64 high, shown upright
    with av.open(str(paths["rotated_90"])) as container:
        raw = next(container.decode(video=0))
    assert (raw.width, raw.height, raw.rotation) == (96, 64, -90)


def test_grayscale_comes_back_as_equal_rgb_channels(paths):
    frame = decord.VideoReader(str(paths["grayscale"]))[5].asnumpy().astype(int)
    assert np.abs(frame[..., 0] - frame[..., 1]).max() <= 1
    assert np.abs(frame[..., 0] - frame[..., 2]).max() <= 1


def test_variable_frame_rate_timestamps_are_irregular(paths):
    reader = decord.VideoReader(str(paths["variable_frame_rate"]))
    starts = reader.get_frame_timestamp(list(range(len(reader))))[:, 0]
    gaps = np.round(np.diff(starts), 3)
    assert np.all(gaps > 0) and len(set(gaps.tolist())) > 3
    # The average rate is not the nominal 30 fps: frame_index / fps would misplace frames.
    assert abs(reader.get_avg_fps() - 30) > 5
    assert np.abs(starts - np.arange(len(starts)) / 30).max() > 0.1


def test_label_files(paths):
    from fer_ray.labels import LabelFormatError, read_expr

    assert len(read_expr(str(paths["labels_good"]))) == GOOD_FRAMES
    assert len(read_expr(str(paths["labels_wrong_length"]))) == GOOD_FRAMES - 5  # only the video shows the error
    for entry in ENTRIES:
        if not entry.name.startswith("labels_") or entry.name in ("labels_good", "labels_wrong_length"):
            continue
        with pytest.raises(LabelFormatError) as info:
            read_expr(str(paths[entry.name]))
        assert entry.reason in str(info.value), (entry.name, str(info.value))
        assert "happy" not in str(info.value) and "Happy" not in str(info.value)  # lines are never quoted


def read_ids(path):
    with path.open(newline="", encoding="utf-8") as handle:
        return [row["video_id"] for row in csv.DictReader(handle)]


def test_manifest_duplicates_and_unsafe_ids(paths):
    ids = read_ids(paths["manifest_duplicate_ids"])
    assert len(ids) != len(set(ids))
    unsafe = read_ids(paths["manifest_unsafe_ids"])
    assert unsafe and all(".." in video_id or "/" in video_id for video_id in unsafe)


def test_spaces_and_unicode_path(paths):
    path = paths["spaces_and_unicode"]
    assert " " in str(path) and not str(path).isascii()


@pytest.mark.parametrize("name", DECODES)
def test_pyav_reference_frame_counts(paths, name):
    """tests.helpers.count_frames (PyAV, the tests' independent reference) agrees with the corpus's truth."""
    from tests.helpers import count_frames, expected_frames

    assert count_frames(paths[name]) == FRAME_COUNTS[name]
    assert expected_frames(paths[name], stride=4, max_frames=3) == [0, 4, 8][: (FRAME_COUNTS[name] + 3) // 4]
