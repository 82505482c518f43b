"""Every face of a video (`all_faces`): two dev performers side by side in one video are two face tracks,
each annotated as its own video would be, and a video with one face keeps today's rows.

In-process (fer_ray.annotate_video, no Ray), and once as the annotate job on the session's Ray (which
preprocesses the video itself) on a folder that also holds a labelled photo set: the same rows, files
named per person, photos annotated and scored. The halves and the side-by-side video are
encoded losslessly (x264 qp 0, 4:2:0 split on the seam), so each half decodes to exactly the pixels of its
side of the pair; the detector runs at full resolution (detect_size null), where MTCNN's scales depend on
the shorter side only, so both see the faces at the same scales.
"""

from __future__ import annotations

import numpy as np
import pytest

import fer_ray
from fer_ray import schema, shards, storage
from tests.conftest import need_shared
from tests.helpers import write_untrained_models

pytestmark = pytest.mark.shared_data
FRAMES = 45
OPTIONS = {"track_every": 5, "preprocess": {"detector": {"detect_size": None}}, "window": 64}


def _decode(name: str) -> np.ndarray:
    import decord

    reader = decord.VideoReader(str(need_shared("videos", "labeled", f"{name}.mp4")))
    return reader.get_batch(list(range(FRAMES))).asnumpy()


def _encode(path, frames: np.ndarray) -> str:
    import av

    with av.open(str(path), "w") as output:
        stream = output.add_stream("libx264", rate=30, options={"qp": "0"})
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            output.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        output.mux(stream.encode())
    return str(path)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("multi_face")
    left, right = _decode("tw_TW01"), _decode("tw_TW07")
    return {"left": _encode(folder / "left.mp4", left), "right": _encode(folder / "right.mp4", right),
            "pair": _encode(folder / "pair.mp4", np.concatenate([left, right], axis=2)),
            "models": str(folder / "models"), "_": write_untrained_models(str(folder / "models"))}


@pytest.fixture(scope="module")
def pair(videos):
    return _annotate(videos, "pair", all_faces=True)


def _annotate(videos, name: str, **extra):
    return fer_ray.annotate_video(videos[name], videos["models"], system="cfc_sp", **OPTIONS, **extra)


def test_two_people_are_two_tracks_each_annotated_as_if_alone(videos, pair):
    assert sorted(pair[schema.TRACK_ID].unique()) == [0, 1]  # left face first: ids go left to right
    for track, half in ((0, "left"), (1, "right")):
        mine = pair[pair[schema.TRACK_ID] == track].reset_index(drop=True)
        alone = _annotate(videos, half)
        assert mine[schema.FRAME_INDEX].tolist() == list(range(FRAMES))  # every frame, once per track
        assert mine[schema.FACE_FOUND].all() and alone[schema.FACE_FOUND].all()
        same = (mine[schema.LABEL] == alone[schema.LABEL]).mean()
        assert same >= 0.99, (half, same)
        np.testing.assert_allclose(np.stack(mine[schema.PROBS]), np.stack(alone[schema.PROBS]), atol=0.02)


def test_one_face_video_in_every_face_mode_is_one_track_like_one_face_mode(videos):
    """Same frames and faces; the boxes come from a different refinement schedule (seeded at the last full
    detection), so probabilities agree closely rather than exactly."""
    one, every = _annotate(videos, "left"), _annotate(videos, "left", all_faces=True)
    assert set(every[schema.TRACK_ID]) == {0} and set(one[schema.TRACK_ID]) == {0}
    for column in (schema.FRAME_INDEX, schema.FACE_FOUND):
        assert every[column].tolist() == one[column].tolist(), column
    assert (every[schema.LABEL] == one[schema.LABEL]).mean() >= 0.99
    np.testing.assert_allclose(np.stack(every[schema.PROBS]), np.stack(one[schema.PROBS]), atol=0.02)


PHOTOS = 6


def test_the_annotate_job_names_the_two_people_annotates_photos_and_evaluate_scores_both(
        videos, pair, tmp_path, ray_local):
    """One folder, one annotate job: pair.mp4 with Aff-Wild2's label pair pair_left.txt / pair_right.txt
    (each half's real labels), and a photo set (labels.csv). The job names track 0 (left) and track 1
    (right) after the label files and writes pair_left.txt / pair_right.txt; each photo is annotated as a
    one-frame video (no ABAW txt); a rerun skips everything; evaluate scores each person against their label
    file, and the photos against their labels.csv."""
    import shutil

    from fer_ray import labels
    from fer_ray.evaluate import metrics
    from fer_ray.infer.postprocess import submission_uri
    from fer_ray.infer.readers import read_predictions, sorted_frames
    from tests.helpers import load_job, photo_set, stage_actors

    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(videos["pair"], folder / "pair.mp4")
    truth = {}
    for side, name in (("left", "tw_TW01"), ("right", "tw_TW07")):
        truth[side] = labels.read_expr(str(need_shared("videos", "labeled", f"{name}.txt")))[:FRAMES]
        labels.write_expr(str(folder / f"pair_{side}.txt"), truth[side])
    photo_set(folder / "photos", lambda rows: rows[:PHOTOS])  # six photos, as a user's own labelled ones
    output = str(tmp_path / "job")
    argv = ["--input", str(folder), "--models", videos["models"], "--output", output, "--system", "cfc_sp",
            "--window", str(OPTIONS["window"]), "--track-every", "5", "--all-faces", "--strict"]
    config = tmp_path / "detector.yaml"  # full-resolution detection, as in-process above
    config.write_text("preprocess:\n  detector:\n    detect_size: null\n")
    assert load_job("annotate").main(argv + ["--config", str(config)]) == 0

    everything = sorted_frames(read_predictions(output))
    rows = everything[everything[schema.VIDEO_ID] == "pair"]  # the same rows as in-process
    assert rows[schema.TRACK_ID].tolist() == pair[schema.TRACK_ID].tolist()
    assert rows[schema.LABEL].tolist() == pair[schema.LABEL].tolist()
    np.testing.assert_allclose(np.stack(rows[schema.PROBS]), np.stack(pair[schema.PROBS]), atol=1e-5)
    for track, side in ((0, "left"), (1, "right")):
        written = labels.read_expr(submission_uri(output, "pair", subject=side))
        assert written.tolist() == rows.loc[rows[schema.TRACK_ID] == track, schema.LABEL].tolist()
    assert not storage.exists(submission_uri(output, "pair")) and not storage.exists(submission_uri(output, "pair", 0))
    assert shards.read_marker(output, schema.FACES_TABLE, "pair")["tracks"] == {"0": FRAMES, "1": FRAMES}
    summary = storage.read_json(f"{output}/summary.json")
    assert summary["videos"]["pair"]["tracks"] == [0, 1]
    assert summary["videos"]["pair"]["subjects"] == {"left": 0, "right": 1}
    # the photos: one row each (one face, frame 0, track 0), no ABAW txt
    photos = everything[everything[schema.VIDEO_ID] != "pair"]
    assert summary["videos_annotated"] == 1 + PHOTOS and photos[schema.VIDEO_ID].nunique() == PHOTOS
    assert (photos[schema.FRAME_INDEX] == 0).all() and photos[schema.FACE_FOUND].all()
    assert set(photos[schema.TRACK_ID]) == {0} and len(photos) == PHOTOS
    assert sorted(storage.stem(u) for u in storage.list_files(f"{output}/{schema.SUBMISSION_DIR}")) == \
        ["pair_left", "pair_right"]
    actors = stage_actors()
    assert load_job("annotate").main(argv + ["--config", str(config)]) == 0  # a rerun skips every item ...
    again = storage.read_json(f"{output}/summary.json")
    assert (again["videos_annotated"], again["videos_skipped"]) == (0, 1 + PHOTOS)
    assert stage_actors() == actors  # ... on the driver: no actor started

    scored = str(tmp_path / "eval")
    assert load_job("evaluate").main(["--predictions", output, "--labels", str(folder), "--output", scored]) == 0
    per_video = {r[schema.VIDEO_ID]: r for r in storage.read_json(f"{scored}/metrics.json")["per_video"]}
    assert set(per_video) == {"pair_left", "pair_right"}
    tracks = storage.read_bytes(f"{scored}/tables/tracks.csv").decode().splitlines()
    assert tracks[1:] == [f"pair,0,{FRAMES},pair_left", f"pair,1,{FRAMES},pair_right"], tracks
    assert "Face tracks" in storage.read_bytes(f"{scored}/report.html").decode()
    for track, side in ((0, "left"), (1, "right")):
        predicted = rows.loc[rows[schema.TRACK_ID] == track, schema.LABEL].to_numpy()
        assert per_video[f"pair_{side}"]["f1"] == pytest.approx(metrics.macro_f1(truth[side], predicted))
    scored_photos = str(tmp_path / "eval_photos")
    assert load_job("evaluate").main(["--predictions", output, "--labels", str(folder / "photos" / "labels.csv"),
                                      "--output", scored_photos]) == 0
    headline = storage.read_json(f"{scored_photos}/metrics.json")["headline"]
    assert headline["annotated"] == PHOTOS and headline["videos"] == PHOTOS


@pytest.mark.parametrize("chunk", [10, 15])
def test_split_decode_detect_path_gives_the_fused_paths_tracks(videos, tmp_path, chunk):
    """--decode-workers: each chunk tracked by its own tracker, the ids linked video-wide by the driver's
    collector. Chunks of 10 start on key frames (track_every 5): the same rows as one tracker over the
    video. Chunks of 15 do not: the same two tracks, each on every frame."""
    from fer_ray.jobs.preprocess import PreprocessConfig
    from fer_ray.preprocess import DetectorConfig
    from tests.unit.test_redo_safety import fused, split

    item = {schema.VIDEO_ID: "pair", schema.URI: videos["pair"], schema.KIND: "video", schema.LABEL: -1}
    settings = {"track_every": 5, "all_faces": True, "detector": DetectorConfig(detect_size=None)}
    outputs = {}
    for name, path, extra in (("fused", fused, {}), ("split", split, {"decode_workers": 1})):
        outputs[name] = str(tmp_path / name)
        path(PreprocessConfig(output=outputs[name], chunk_size=chunk, worker_cpus=1, **settings, **extra), item)
    rows = {name: shards.read_table(out, schema.FACES_TABLE, schema.FACES_SCHEMA).to_pandas()
            .sort_values([schema.FRAME_INDEX, schema.TRACK_ID]).reset_index(drop=True)
            for name, out in outputs.items()}
    a, b = rows["fused"], rows["split"]
    assert sorted(a[schema.TRACK_ID].unique()) == sorted(b[schema.TRACK_ID].unique()) == [0, 1]
    for table in (a, b):
        assert table.groupby(schema.TRACK_ID).size().to_dict() == {0: FRAMES, 1: FRAMES}
    left = {name: np.stack(t.loc[t[schema.TRACK_ID] == 0, schema.BBOX])[:, 0] for name, t in rows.items()}
    assert (left["fused"] < 256).all() and (left["split"] < 256).all()  # track 0 is the left face in both
    if chunk % 5 == 0:
        assert a[[schema.FRAME_INDEX, schema.TRACK_ID]].equals(b[[schema.FRAME_INDEX, schema.TRACK_ID]])
        np.testing.assert_allclose(np.stack(a[schema.BBOX]), np.stack(b[schema.BBOX]), atol=0.05)
    marker = shards.read_marker(outputs["split"], schema.FACES_TABLE, "pair")
    assert marker["tracks"] == {"0": FRAMES, "1": FRAMES}
