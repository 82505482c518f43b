"""fer_ray.video: chunked decoding equals whole decoding, timestamps, S3 download, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from fer_ray import storage
from fer_ray.video import VideoError, frame_indices, open_video, read_frames
from tests.conftest import need_shared

decord = pytest.importorskip("decord")


@pytest.fixture(scope="module")
def clip():
    return need_shared("videos", "unlabeled", "pyfeat_single_face.mp4")  # 72 frames, 640x360, 30 fps


def test_frame_indices():
    assert frame_indices(10).tolist() == list(range(10))
    assert frame_indices(10, stride=3).tolist() == [0, 3, 6, 9]
    assert frame_indices(10, stride=3, max_frames=2).tolist() == [0, 3]
    assert frame_indices(0).tolist() == []
    with pytest.raises(ValueError):
        frame_indices(10, stride=0)
    with pytest.raises(ValueError):
        frame_indices(10, max_frames=0)


@pytest.mark.parametrize(("chunk_size", "stride", "max_frames"), [(10, 1, None), (7, 3, None), (16, 2, 20)])
def test_chunked_decode_equals_whole_decode(clip, chunk_size, stride, max_frames):
    reader = decord.VideoReader(str(clip))
    wanted = list(range(0, len(reader), stride))[:max_frames]
    whole = reader.get_batch(wanted).asnumpy()
    with open_video(str(clip)) as video:
        assert video.num_frames == len(reader) == 72
        assert (video.width, video.height) == (640, 360)
        chunks = list(video.chunks(chunk_size=chunk_size, stride=stride, max_frames=max_frames))
    assert all(len(c) <= chunk_size for c in chunks)
    assert np.concatenate([c.indices for c in chunks]).tolist() == wanted
    np.testing.assert_array_equal(np.concatenate([c.frames for c in chunks]), whole)


def test_chunks_are_bounded_in_bytes(clip):
    frame_bytes = 640 * 360 * 3
    with open_video(str(clip)) as video:
        sizes = [len(c) for c in video.chunks(chunk_size=64, max_chunk_bytes=5 * frame_bytes)]
    assert max(sizes) == 5 and sum(sizes) == 72


def test_timestamps_from_the_stream(clip):
    chunk = read_frames(str(clip), stride=4)
    assert chunk.frames.shape == (18, 360, 640, 3)
    assert np.all(np.diff(chunk.timestamps) > 0)
    np.testing.assert_allclose(chunk.timestamps, chunk.indices / 30.0, atol=0.02)


def test_s3_video_is_downloaded_then_removed(clip, s3_bucket):
    uri = f"{s3_bucket}/videos/clip.mp4"
    storage.write_bytes(uri, clip.read_bytes())
    local = read_frames(str(clip), max_frames=12)
    with open_video(uri) as video:
        tmp = video.path
        frames = next(video.chunks(chunk_size=12)).frames
        assert video.num_frames == 72
    np.testing.assert_array_equal(frames, local.frames)
    assert not storage.exists(tmp)


def test_errors_name_the_file_and_the_problem(tmp_path, clip):
    missing = tmp_path / "missing.mp4"
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "text.mp4"
    text.write_text("not a video\n" * 20)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    folder = tmp_path / "folder.mp4"
    folder.mkdir()
    cases = [(missing, "no such file"), (empty, "empty file"), (text, "not a video container"),
             (truncated, "truncated video: "), (folder, "directory")]
    for path, message in cases:
        with pytest.raises(VideoError, match=message) as info:
            open_video(str(path))
        assert str(path) in str(info.value)


def test_frame_size_limit(clip):
    with pytest.raises(VideoError, match="over the limit"):
        open_video(str(clip), max_pixels=100 * 100)


def test_cut_after_the_index_is_an_error(tmp_path):
    """A faststart file (frame index first) cut short: the index promises frames that are gone. The header
    probe sees the data box end before its declared size and refuses the file before decoding."""
    pytest.importorskip("av")
    from tests.corpus import make_video

    full = make_video(tmp_path / "full.mp4", frames=60, container="mp4",
                      container_options={"movflags": "faststart"})
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(VideoError, match="truncated video: data ends early") as info:
        with open_video(str(cut)) as video:
            for _ in video.chunks(chunk_size=8):
                pass
    assert str(cut) in str(info.value)


def test_header_probe_reasons(tmp_path):
    """Each kind of bad header has its own reason; fer_ray.video.probe runs before decord."""
    pytest.importorskip("av")
    import av

    from fer_ray import video as v
    from tests.corpus import make_video

    audio = tmp_path / "audio.mp4"
    with av.open(str(audio), "w") as output:  # an MP4 with a sound track and no picture
        stream = output.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        output.mux(stream.encode(frame))
        output.mux(stream.encode())
    with pytest.raises(VideoError, match=v.REASON_NO_VIDEO_STREAM):
        open_video(str(audio))
    big = make_video(tmp_path / "big.mp4", frames=2, size=(640, 480))
    with pytest.raises(VideoError, match=r"frame size 640x480 is over the limit \(300000 pixels\)"):
        v.probe(str(big), str(big), max_pixels=300_000)
    v.probe(str(big), str(big), max_pixels=640 * 480)  # at the limit is fine
