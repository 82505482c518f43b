"""Face tracks downstream of the tracker, without Ray: face rows per (frame, track), short tracks dropped
with every frame keeping a row, and per-track post-processing (Smooth Predicting, the cascade and gap fill
on each track's own frames; one predictions part and one submission file per track). The models are
untrained smoke checkpoints: what is checked is that two people never mix, not accuracy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from fer_ray import labels, schema, shards, storage
from fer_ray.faces import Detection
from fer_ray.infer import systems
from fer_ray.infer.export import write_abaw
from fer_ray.infer.postprocess import PREDICTIONS, VideoPostprocess, name_tracks, submission_uri
from fer_ray.infer.readers import scored_rows, scored_table, scored_tracks, sorted_frames
from fer_ray.preprocess.faces import faces_table, frame_rows, keep_tracks
from tests.unit.test_postprocess import entries, face_bytes, faces_batch, for_system, permuted, stage  # noqa: F401


def _face(x: float) -> Detection:
    return Detection(np.array([x, 10, x + 50, 60], np.float32), np.full((5, 2), x, np.float32), 0.99)


def test_one_face_output_is_one_row_per_frame_on_track_zero():
    found = [_face(0), None, _face(3)]
    rows, detections, tracks = frame_rows(found)
    assert rows is None and detections == found and tracks == [0, 0, 0]


def test_every_face_output_is_a_row_per_face_or_one_no_face_row():
    a, b, c = _face(0), _face(100), _face(1)
    rows, detections, tracks = frame_rows([[(0, a), (1, b)], [], [(0, c)]])
    assert rows.tolist() == [0, 0, 1, 2]
    assert detections == [a, b, None, c]
    assert tracks == [0, 1, schema.NO_TRACK, 0]


def _chunk(rows: list[tuple[int, int]]) -> pa.Table:
    """Face rows (frame, track); NO_TRACK rows have no face."""
    return faces_table({
        schema.VIDEO_ID: ["v"] * len(rows), schema.FRAME_INDEX: [f for f, _ in rows],
        schema.TIMESTAMP: [f / 30 for f, _ in rows],
        schema.FACE: [b"" if t == schema.NO_TRACK else b"jpeg" for _, t in rows],
        schema.BBOX: [None if t == schema.NO_TRACK else [0.0, 0.0, 1.0, 1.0] for _, t in rows],
        schema.LANDMARKS: [None] * len(rows), schema.DET_SCORE: [None if t < 0 else 0.9 for _, t in rows],
        schema.LABEL: [3] * len(rows),
        schema.REASON: [schema.REASON_NO_FACE if t == schema.NO_TRACK else None for _, t in rows],
        schema.SUBJECT: ["s"] * len(rows), schema.NUM_FRAMES: [100] * len(rows),
        schema.TRACK_ID: [t for _, t in rows]})


def test_dropping_a_short_track_keeps_a_row_on_every_frame():
    # frame 0: tracks 0 and 2; frame 1: only track 2 (dropped: the frame becomes a no-face row);
    # frame 2: no face at all; frame 3: track 0
    table = _chunk([(0, 0), (0, 2), (1, 2), (2, schema.NO_TRACK), (3, 0)])
    out = keep_tracks(table, {0})
    rows = list(zip(out.column(schema.FRAME_INDEX).to_pylist(), out.column(schema.TRACK_ID).to_pylist(),
                    out.column(schema.REASON).to_pylist()))
    assert rows == [(0, 0, None), (1, schema.NO_TRACK, schema.REASON_NO_FACE),
                    (2, schema.NO_TRACK, schema.REASON_NO_FACE), (3, 0, None)]
    blank = out.slice(1, 1).to_pylist()[0]
    assert blank[schema.FACE] == b"" and blank[schema.BBOX] is None and blank[schema.LABEL] == 3
    assert keep_tracks(table, {0, 2}).equals(table)  # nothing dropped: the same rows


# ---------------------------------------------------------------- per-track post-processing
NUM_FRAMES = 40


def _two_tracks(face_bytes) -> tuple[dict, dict, dict]:  # noqa: F811 - the fixture's value
    """Logits-stage input of one video with two people: track 0 on frames 0-39 (no face on 10-14), track 1
    on frames 5-29 with other faces; frames 35-39 hold track 0 only. Also each track alone, as its own
    video on track 0."""
    first = [(f, b"" if 10 <= f < 15 else face_bytes[f % 3]) for f in range(NUM_FRAMES)]
    second = [(f, face_bytes[3 + f % 3]) for f in range(5, 30)]
    rows = [(f, 0, b) for f, b in first] + [(f, 1, b) for f, b in second]
    both = faces_batch("pair", [f for f, _, _ in rows], [b for _, _, b in rows], NUM_FRAMES)
    both[schema.TRACK_ID] = np.asarray([t for _, t, _ in rows], dtype=np.int64)
    alone = {name: faces_batch(name, [f for f, _ in part], [b for _, b in part], NUM_FRAMES)
             for name, part in (("first", first), ("second", second))}
    for batch in alone.values():
        batch[schema.TRACK_ID] = np.zeros(len(batch[schema.FRAME_INDEX]), dtype=np.int64)
    return both, alone["first"], alone["second"]


def _predictions(output: str, video_id: str) -> pd.DataFrame:
    return sorted_frames(storage.read_parquet_many(shards.complete_parts(output, PREDICTIONS, [video_id])))


@pytest.mark.parametrize("system", ["cfc_sp", "mao"])
def test_each_track_is_predicted_as_if_it_were_alone(tmp_path, entries, stage, face_bytes, system):  # noqa: F811
    chosen = systems.select(entries, system)
    both, first, second = _two_tracks(face_bytes)

    def run(batch):
        post = VideoPostprocess(str(tmp_path), chosen, system, window=8, version="t")
        return post(for_system(stage(permuted(batch, seed=3)), chosen))

    summary = run(both)
    run(first), run(second)
    pair = _predictions(str(tmp_path), "pair")
    assert pair.groupby(schema.TRACK_ID).size().to_dict() == {0: NUM_FRAMES, 1: NUM_FRAMES}  # every frame
    for track, alone in ((0, "first"), (1, "second")):
        mine = pair[pair[schema.TRACK_ID] == track].reset_index(drop=True)
        reference = _predictions(str(tmp_path), alone)
        assert mine[schema.LABEL].tolist() == reference[schema.LABEL].tolist(), track
        np.testing.assert_allclose(np.stack(mine[schema.PROBS]), np.stack(reference[schema.PROBS]), atol=1e-5)
        assert mine[schema.FILLED].tolist() == reference[schema.FILLED].tolist()
        submitted = labels.read_expr(submission_uri(str(tmp_path), "pair", track))
        assert submitted.tolist() == mine[schema.LABEL].tolist()
    # one face stream keeps today's file name; a video with two tracks has no file without a track
    assert storage.exists(submission_uri(str(tmp_path), "first"))
    assert not storage.exists(submission_uri(str(tmp_path), "pair"))
    marker = shards.read_marker(str(tmp_path), PREDICTIONS, "pair")
    assert marker["tracks"] == [0, 1] and summary["faces"] == [NUM_FRAMES - 5 + 25]


def test_a_video_without_any_track_is_one_filled_track(tmp_path, entries, stage):  # noqa: F811
    chosen = systems.select(entries, "cfc_sp")
    batch = faces_batch("empty", np.arange(10), [b""] * 10, 10)
    batch[schema.TRACK_ID] = np.full(10, schema.NO_TRACK, dtype=np.int64)
    VideoPostprocess(str(tmp_path), chosen, "cfc_sp", window=8, version="t")(for_system(stage(batch), chosen))
    rows = _predictions(str(tmp_path), "empty")
    assert rows[schema.TRACK_ID].tolist() == [0] * 10 and rows[schema.FILLED].all()
    assert storage.exists(submission_uri(str(tmp_path), "empty"))


# ---------------------------------------------------------------- which track is scored, exported
def _rows(video: str, track: int, found: list[bool]) -> pd.DataFrame:
    return pd.DataFrame({schema.VIDEO_ID: video, schema.FRAME_INDEX: np.arange(len(found)),
                         schema.TRACK_ID: track, schema.FACE_FOUND: found,
                         schema.LABEL: track + 1, schema.FILLED: [not f for f in found]})


def test_the_track_with_most_faces_is_scored_and_every_track_exported(tmp_path):
    frame = pd.concat([_rows("a", 0, [True, False, False]), _rows("a", 1, [True, True, False]),
                       _rows("b", 0, [True, True, True])], ignore_index=True)
    units = scored_tracks(frame)
    assert units == {("a", 1): "a", ("b", 0): "b"}
    scored = scored_rows(frame, units)
    assert scored.groupby(schema.VIDEO_ID)[schema.TRACK_ID].unique().map(list).to_dict() == {"a": [1], "b": [0]}
    logits = pa.table({schema.VIDEO_ID: ["a", "a", "b"], schema.TRACK_ID: [0, 1, 0], schema.FRAME_INDEX: [0, 0, 0]})
    assert scored_table(logits, units).column(schema.TRACK_ID).to_pylist() == [1, 0]

    written = write_abaw(sorted_frames(pa.Table.from_pandas(frame)), str(tmp_path))
    assert sorted(storage.stem(u) for u in written) == ["a_track0", "a_track1", "b"]
    assert labels.read_expr(str(tmp_path / "a_track1.txt")).tolist() == [2, 2, 2]


def test_named_subjects_are_scored_and_exported_under_their_names(tmp_path):
    frame = pd.concat([_rows("p", 0, [True, True]), _rows("p", 1, [True, False]), _rows("p", 2, [True, True])],
                      ignore_index=True)
    units = scored_tracks(frame, {"p": {"left": 2, "right": 0}})
    assert units == {("p", 0): "p_right", ("p", 2): "p_left"}  # track 1 is annotated, not scored
    scored = scored_rows(frame, units)
    assert scored.groupby(schema.VIDEO_ID)[schema.TRACK_ID].unique().map(list).to_dict() == \
        {"p_left": [2], "p_right": [0]}
    written = write_abaw(sorted_frames(pa.Table.from_pandas(frame)), str(tmp_path),
                         subjects={"p": {"left": 2, "right": 0}})
    assert sorted(storage.stem(u) for u in written) == ["p_left", "p_right", "p_track1"]


def test_subjects_name_the_main_tracks_left_to_right():
    def track(x: float, faces: int) -> dict:
        return {schema.FACE_FOUND: np.arange(10) < faces, schema.BBOX: [[x, 0, x + 50, 50]] * 10}

    tracks = [(0, track(300, 10)), (1, track(20, 8)), (2, track(150, 3))]
    assert name_tracks(tracks, ["left", "right"]) == {1: "left", 0: "right"}  # track 2: too few faces
    assert name_tracks(tracks, []) == {}


def test_preprocess_summary_lists_each_videos_tracks_and_their_lengths():
    from fer_ray.jobs.preprocess import summarise

    rows = [{"video_id": "pair", "status": "done", "frames": 45, "faces": 88, "error": None,
             "tracks": '{"0": 45, "1": 43}'},
            {"video_id": "one", "status": "skipped", "frames": 10, "faces": 10, "error": None, "tracks": ""}]
    summary = summarise(rows, [], 1.0)
    assert summary["tracks"] == {"pair": {0: 45, 1: 43}}
    assert (summary["frames"], summary["faces"]) == (55, 98)


def test_overlay_draws_each_track_in_its_colour_with_its_own_box():
    from fer_ray.render import Overlay, track_frame_rows

    n = 4
    probs = np.eye(labels.NUM_CLASSES, dtype=np.float32)[[4] * n]
    predictions = pa.table({
        schema.FRAME_INDEX: np.tile(np.arange(n), 2), schema.TRACK_ID: np.repeat([0, 1], n),
        schema.LABEL: [4] * 2 * n, schema.PROBS: list(np.concatenate([probs, probs])),
        schema.COARSE_PROBS: [[]] * 2 * n, schema.NEGATIVE_PROBS: [[]] * 2 * n, schema.FILLED: [False] * 2 * n})
    # track 0 on frames 0 and 2 (left), track 1 on frame 0 only (right); frame 2 decoded without track 1
    boxes = pa.table({schema.FRAME_INDEX: [0, 0, 2], schema.TRACK_ID: [0, 1, 0],
                      schema.BBOX: [[10.0, 40.0, 60.0, 100.0], [100.0, 40.0, 150.0, 100.0], [12.0, 40.0, 62.0, 100.0]]})
    rows = track_frame_rows(predictions, boxes)
    assert [r[schema.TRACK_ID] for r in rows[0]] == [0, 1]
    assert rows[1][1][schema.BBOX] == [100.0, 40.0, 150.0, 100.0]  # frame 1 not decoded: the last box held
    assert rows[2][0][schema.BBOX] == [12.0, 40.0, 62.0, 100.0] and rows[2][1][schema.BBOX] is None

    frame = np.full((128, 160, 3), 128, dtype=np.uint8)
    out = Overlay(160, 128)(frame, rows[0])
    assert tuple(out[70, 10]) == Overlay.TRACK_COLOURS[0] and tuple(out[70, 100]) == Overlay.TRACK_COLOURS[1]
    only_left = Overlay(160, 128)(frame, rows[2])
    assert tuple(only_left[70, 100]) != Overlay.TRACK_COLOURS[1]  # no face: no box for track 1
    assert (out[20:40, 10:60] != 128).any() and (out[20:40, 100:150] != 128).any()  # a tag above each box


def test_every_face_of_a_photo_is_a_row_numbered_left_to_right():
    from PIL import Image

    from fer_ray.preprocess import FacesConfig
    from fer_ray.preprocess.faces import FaceRows
    from tests.conftest import need_shared

    folder = need_shared("images", "taiwanese_dev", "images")
    left, right = (np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.jpg"))[:2])
    photo = np.concatenate([left, right], axis=1)  # two people, 256 x 512
    member = {schema.VIDEO_ID: "set/two", schema.LABEL: 4, schema.SUBJECT: None}
    for all_faces, expected in ((True, [0, 1]), (False, [0])):
        [table] = FaceRows(FacesConfig(all_faces=all_faces)).images([member], [photo])
        rows = table.to_pylist()
        assert [r[schema.TRACK_ID] for r in rows] == expected
        assert all(r[schema.FACE] and r[schema.LABEL] == 4 and r[schema.VIDEO_ID] == "set/two" for r in rows)
        if all_faces:
            assert rows[0][schema.BBOX][2] < 256 < rows[1][schema.BBOX][0]  # track 0 is the left face


def test_predictions_say_what_the_cascade_decided(tmp_path, entries, stage, face_bytes):  # noqa: F811
    """The decision column (#13): a frame routed to the negative net names both steps with each step's own
    share; any other frame its class and probability, matching the stored probabilities."""
    both, _, _ = _two_tracks(face_bytes)
    for system in ("cfc_sp", "baseline"):
        chosen = systems.select(entries, system)
        out = str(tmp_path / system)
        VideoPostprocess(out, chosen, system, window=8, version="t")(for_system(stage(both), chosen))
        rows = _predictions(out, "pair")
        for _, row in rows.iterrows():
            name, decision = row[schema.LABEL_NAME], row[schema.DECISION]
            if system == "cfc_sp" and labels.NEGATIVE_OF_ABAW[row[schema.LABEL]] >= 0:
                coarse = np.asarray(row[schema.COARSE_PROBS])
                negative = np.asarray(row[schema.NEGATIVE_PROBS])
                step = labels.NEGATIVE_OF_ABAW[row[schema.LABEL]]
                assert decision == f"Negative {coarse[labels.COARSE_NEGATIVE]:.2f} -> {name} {negative[step]:.2f}"
            elif system == "cfc_sp":
                coarse = np.asarray(row[schema.COARSE_PROBS])
                assert decision == f"{name} {coarse[labels.COARSE_OF_ABAW[row[schema.LABEL]]]:.2f}"
            else:
                assert decision == f"{name} {np.asarray(row[schema.PROBS])[row[schema.LABEL]]:.2f}"
