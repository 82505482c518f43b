"""Overlay rendering: what Overlay draws, and jobs/render.py end to end on a real dev clip and a synthetic one."""

from __future__ import annotations

import importlib.util
from fractions import Fraction
from pathlib import Path

import decord
import numpy as np
import pyarrow as pa
import pytest

from fer_ray import labels, schema, shards, storage
from fer_ray.render import FACES_TABLE, Overlay, frame_rows, load_predictions, render_video
from tests.conftest import need_shared

ROOT = Path(__file__).resolve().parents[2]


def _job():
    spec = importlib.util.spec_from_file_location("job_render", ROOT / "jobs" / "render.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    return job


def _predictions(video_id: str, n: int, filled: np.ndarray, seed: int = 0) -> pa.Table:
    probs = np.random.default_rng(seed).dirichlet(np.full(labels.NUM_CLASSES, 0.3), size=n).astype(np.float32)
    label = probs.argmax(axis=1)
    return pa.table({
        schema.VIDEO_ID: [video_id] * n,
        schema.FRAME_INDEX: np.arange(n, dtype=np.int64),
        schema.TIMESTAMP: np.arange(n) / 30.0,
        schema.LABEL: label,
        schema.LABEL_NAME: np.asarray(labels.ABAW_CLASSES)[label],
        schema.PROBS: list(probs),
        schema.COARSE_PROBS: [[]] * n,
        schema.NEGATIVE_PROBS: [[]] * n,
        schema.FACE_FOUND: ~filled,
        schema.FILLED: filled,
        schema.SYSTEM: ["baseline"] * n,
        schema.MODEL_VERSION: ["test"] * n,
        schema.TRACK_ID: [0] * n,
        schema.DECISION: [None] * n,
    }, schema=schema.PREDICTIONS_SCHEMA)


def _row(probs, filled=False, bbox=None) -> dict:
    probs = np.asarray(probs, dtype=np.float32)
    return {schema.LABEL: int(probs.argmax()), schema.PROBS: probs, schema.FILLED: filled, schema.BBOX: bbox}


def test_overlay_draws_box_title_bars_and_filled_marker():
    frame = np.full((128, 160, 3), 128, dtype=np.uint8)
    overlay = Overlay(160, 128)
    probs = np.eye(labels.NUM_CLASSES)[labels.class_index("Happiness")] * 0.9 + 0.0125
    out = overlay(frame, _row(probs, bbox=[40.0, 20.0, 120.0, 100.0]))
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert (frame == 128).all()  # the input is left alone
    assert tuple(out[60, 40]) == Overlay.BOX_COLOUR and tuple(out[20, 80]) == Overlay.BOX_COLOUR
    assert (out[60, 80] == 128).all()  # inside the box: untouched
    assert (out[:8, :40] != 128).any()  # title
    x1, y1, x2, y2 = overlay.panel
    panel = out[y1:y2, x1:x2].reshape(-1, 3)
    assert (panel == Overlay.TOP_COLOUR).all(axis=1).sum() > 20  # the predicted class's long bar
    # no marker unless filled; then the top-right corner turns red
    assert not (out[:6, -6:] == Overlay.FILLED_COLOUR).all(axis=-1).any()
    marked = overlay(frame, _row(probs, filled=True))
    assert (marked[:6, -6:] == Overlay.FILLED_COLOUR).all(axis=-1).any()
    # no box where the faces table has none (None or NaN); no row at all: the frame unchanged
    for bbox in (None, [np.nan] * 4):
        assert tuple(overlay(frame, _row(probs, bbox=bbox))[60, 40]) != Overlay.BOX_COLOUR
    assert np.array_equal(overlay(frame, None), frame)


def test_overlay_title_shows_the_cascade_steps():
    frame = np.full((128, 160, 3), 128, dtype=np.uint8)
    overlay = Overlay(160, 128)
    probs = np.full(labels.NUM_CLASSES, 0.1)
    plain = overlay(frame, {**_row(probs), schema.LABEL: labels.class_index("Disgust")})
    routed = overlay(frame, {**_row(probs), schema.LABEL: labels.class_index("Disgust"),
                             schema.COARSE_PROBS: [0.25, 0.2, 0.15, 0.1, 0.3],
                             schema.NEGATIVE_PROBS: [0.05, 0.83, 0.07, 0.05]})
    title_rows = slice(0, overlay.panel[1])
    # "Negative 0.30 -> Disgust 0.83" is a longer title than "Disgust 0.10": more of the top band is drawn
    assert (routed[title_rows] != 128).sum() > (plain[title_rows] != 128).sum() * 1.5


def test_frame_rows_hold_the_last_decoded_box():
    table = _predictions("v", 6, np.zeros(6, dtype=bool))
    boxes = pa.table({schema.FRAME_INDEX: [4, 0, 2], schema.BBOX: [[4, 4, 8, 8], [0, 0, 5, 5], None]},
                     schema=pa.schema([(schema.FRAME_INDEX, pa.int64()), (schema.BBOX, pa.list_(pa.float32(), 4))]))
    rows = frame_rows(table, boxes)
    assert [rows[i][schema.BBOX] for i in range(6)] == [[0, 0, 5, 5], [0, 0, 5, 5], None, None,
                                                       [4, 4, 8, 8], [4, 4, 8, 8]]


def test_render_job_on_real_clip(tmp_path):
    """Predictions as the annotate job stores them (shards + done marker) for the first 60 frames of a dev
    clip, face boxes from a faces table; the overlay keeps the source's size, rate and frame count."""
    video = need_shared("videos", "labeled", "tw_TW01.mp4")
    n, video_id = 60, "tw_TW01"
    run = str(tmp_path / "run")
    filled = np.zeros(n, dtype=bool)
    filled[30:40] = True
    part = shards.write_part(run, schema.PREDICTIONS_TABLE, video_id, 0, _predictions(video_id, n, filled))
    shards.mark_done(run, schema.PREDICTIONS_TABLE, video_id, [part])
    faces = schema.FACES_SCHEMA.empty_table().to_pydict()
    for i in range(0, n, 2):  # a stride-2 faces table, no face on the filled frames
        has = not filled[i]
        row = {schema.VIDEO_ID: video_id, schema.FRAME_INDEX: i, schema.TIMESTAMP: i / 30, schema.FACE: b"",
               schema.BBOX: [60.0, 50.0, 200.0, 220.0] if has else None, schema.LANDMARKS: None,
               schema.DET_SCORE: None, schema.LABEL: -1, schema.REASON: None if has else schema.REASON_NO_FACE,
               schema.SUBJECT: None, schema.NUM_FRAMES: 2466, schema.TRACK_ID: 0}
        for key, value in row.items():
            faces[key].append(value)
    part = shards.write_part(run, FACES_TABLE, video_id, 0, pa.table(faces, schema=schema.FACES_SCHEMA))
    shards.mark_done(run, FACES_TABLE, video_id, [part])
    out = str(tmp_path / "out" / "overlay.mp4")
    assert _job().main(["--video", str(video), "--predictions", run, "--faces", run, "--output", out,
                        "--max-frames", str(n)]) == 0
    source, rendered = decord.VideoReader(str(video)), decord.VideoReader(out)
    assert len(rendered) == n
    assert rendered[0].shape == source[0].shape
    assert rendered.get_avg_fps() == pytest.approx(source.get_avg_fps(), rel=1e-3)
    assert storage.exists(out + ".yaml")
    src, dst = source.get_batch(list(range(n))).asnumpy(), rendered.get_batch(list(range(n))).asnumpy()
    diff = np.abs(src.astype(np.int16) - dst.astype(np.int16)).mean(axis=-1)  # (n, H, W)
    overlay = Overlay(src.shape[2], src.shape[1])
    x1, y1, x2, y2 = overlay.panel
    assert (diff[:, y1:y2, x1:x2].mean(axis=(1, 2)) > 20).all()  # the bar panel on every frame
    assert (diff[:, 100:140, 120:180].mean(axis=(1, 2)) < 6).all()  # inside the face box: only codec noise
    assert y1 > 170
    box_edge = diff[:, 80:170, 59:62].mean(axis=(1, 2))  # the box's left edge, x = 60
    assert (box_edge[:30] > 20).all() and (box_edge[30:40] < 10).all()  # no box while no face
    corner = dst[:, 3:8, -20:-4].astype(np.int16)
    red = (corner[..., 0] - corner[..., 1]).mean(axis=(1, 2)) > 80
    assert red.tolist() == filled.tolist()  # the filled marker exactly on the filled frames


def _synthetic_video(path: Path, frames: int, size=(96, 64), fps=Fraction(25)) -> None:
    import av

    width, height = size
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            image = np.zeros((height, width, 3), dtype=np.uint8)
            image[..., 0] = (np.arange(width) * 2 + i) % 256
            image[..., 1] = 120
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))


@pytest.mark.parametrize("codec", ["auto", "mpeg4"])
def test_render_synthetic_video_every_frame(tmp_path, codec):
    source = tmp_path / "clip.mp4"
    _synthetic_video(source, 20)
    predictions = str(tmp_path / "predictions.parquet")
    filled = np.zeros(20, dtype=bool)
    filled[:5] = True
    storage.write_parquet(predictions, pa.concat_tables([_predictions("clip", 20, filled),
                                                         _predictions("other", 3, filled[:3])]))
    table = load_predictions(predictions, "clip")
    assert table.num_rows == 20
    out = str(tmp_path / f"overlay-{codec}.mp4")
    info = render_video(str(source), table, out, codec=codec, chunk_size=7)
    assert info["frames"] == 20 and info["uncovered"] == 0 and info["fps"] == pytest.approx(25.0)
    if codec == "mpeg4":
        assert info["codec"] == "mpeg4"
    rendered = decord.VideoReader(out)
    assert len(rendered) == 20 and rendered[0].shape == (64, 96, 3)
    assert rendered.get_avg_fps() == pytest.approx(25.0, rel=1e-3)


def test_unknown_video_id_names_the_available_ones(tmp_path):
    predictions = str(tmp_path / "p.parquet")
    storage.write_parquet(predictions, _predictions("clip", 3, np.zeros(3, dtype=bool)))
    with pytest.raises(ValueError, match="no predictions for video 'nope'.*clip"):
        load_predictions(predictions, "nope")
