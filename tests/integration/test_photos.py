"""Photos given to annotate: a folder with an image set's labels.csv is preprocessed, annotated (one row
per face per photo, as a one-frame video: no Smooth Predicting to speak of, the cascade as for frames, no
ABAW txt) and scored by evaluate against the same labels.csv; a rerun skips them all. (Every face of a
photo with --all-faces: tests/unit/test_tracks.py.)"""

from __future__ import annotations

import csv
import shutil

import pytest

from fer_ray import schema, shards, storage
from fer_ray.infer.readers import read_predictions, sorted_frames
from tests.conftest import need_shared
from tests.helpers import load_job, write_untrained_models

pytestmark = pytest.mark.shared_data
PHOTOS = 6


@pytest.fixture(scope="module")
def photo_set(tmp_path_factory):
    """Six taiwanese_dev photos with their labels, as a user's own labelled folder."""
    source = need_shared("images", "taiwanese_dev")
    folder = tmp_path_factory.mktemp("photos") / "faces"
    (folder / "images").mkdir(parents=True)
    rows = list(csv.DictReader(open(source / "labels.csv")))[:PHOTOS]
    with open(folder / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "subject"])
        writer.writeheader()
        for row in rows:
            shutil.copy(source / row["path"], folder / "images" / storage.basename(row["path"]))
            writer.writerow({"path": f"images/{storage.basename(row['path'])}", "label": row["label"],
                             "subject": row["subject"]})
    models = str(folder.parent / "models")
    write_untrained_models(models)
    return folder, models


def test_photos_are_annotated_and_scored(photo_set, tmp_path, ray_local):
    folder, models = photo_set
    output = str(tmp_path / "out")
    argv = ["--input", str(folder), "--models", models, "--output", output, "--system", "cfc_sp", "--strict"]
    assert load_job("annotate").main(argv) == 0
    rows = sorted_frames(read_predictions(output))
    summary = storage.read_json(f"{output}/summary.json")
    assert summary["videos_annotated"] == PHOTOS and rows[schema.VIDEO_ID].nunique() == PHOTOS
    assert (rows[schema.FRAME_INDEX] == 0).all() and rows[schema.FACE_FOUND].all()  # one face each
    assert set(rows[schema.TRACK_ID]) == {0}
    assert not storage.exists(f"{output}/{schema.SUBMISSION_DIR}")  # no ABAW txt for a photo
    assert load_job("annotate").main(argv) == 0  # a rerun skips every photo
    again = storage.read_json(f"{output}/summary.json")
    assert (again["videos_annotated"], again["videos_skipped"]) == (0, PHOTOS)

    scored = str(tmp_path / "eval")
    assert load_job("evaluate").main(["--predictions", output, "--labels", str(folder / "labels.csv"),
                                      "--output", scored]) == 0
    metrics = storage.read_json(f"{scored}/metrics.json")
    assert metrics["headline"]["annotated"] == PHOTOS and metrics["headline"]["videos"] == PHOTOS
    faces_marker = next(iter(shards.done_markers(output, schema.FACES_TABLE).values()))
    assert sorted(faces_marker["members"]) == sorted(rows[schema.VIDEO_ID])
