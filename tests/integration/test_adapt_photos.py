"""Per-video normalisation of photos (annotate --adapt-bn): the annotate job on a labelled photo set groups
one person's photos as it groups a video's frames, across the Ray shuffle, and leaves a person with too few
photos to measure as they were. The job runs with the crop test too (annotate --crop-test), which its logits
actors apply as the stage does in-process."""

from __future__ import annotations

import numpy as np
import pytest

from fer_ray import schema, shards, storage
from fer_ray.infer import adapt, systems
from fer_ray.infer.logits import LogitsStage, column
from fer_ray.infer.readers import read_logits
from tests.helpers import load_job, photo_set, write_untrained_models

pytestmark = pytest.mark.shared_data
PEOPLE = {"TW01": 20, "TW07": adapt.MIN_FACES - 12}  # photos each: one person enough to measure, one not


def _people(rows: list[dict]) -> list[dict]:
    return [row for subject, count in PEOPLE.items()
            for row in sorted((r for r in rows if r["subject"] == subject), key=lambda r: r["path"])[:count]]


def _logits(output: str):
    table = read_logits(output).to_pandas()
    return table.set_index([schema.VIDEO_ID, schema.MODEL]).sort_index()[schema.SCORES].map(np.asarray)


def test_annotate_normalises_each_persons_photos_together(tmp_path, ray_local):
    folder = tmp_path / "photos"
    photo_set(folder, _people)
    models = str(tmp_path / "models")
    write_untrained_models(models)
    output = str(tmp_path / "out")
    argv = ["--input", str(folder), "--output", output, "--models", models, "--system", "cfc_sp", "--adapt-bn", "1",
            "--crop-test", "--keep-logits", "--strict"]
    assert load_job("annotate").main(argv) == 0

    logits = _logits(output)
    assert logits.index.is_unique and logits.index.get_level_values(0).nunique() == sum(PEOPLE.values())
    faces = shards.read_table(output, schema.FACES_TABLE, schema.FACES_SCHEMA).to_pandas()
    entries = [e for e in systems.entries(storage.read_json(f"{models}/{schema.MODELS_INDEX}"), models)
               if e.key in set(logits.index.get_level_values(1))]
    assert storage.read_json(f"{output}/summary.json")["crop_test"] is True
    plain, adapted = LogitsStage(entries, crop_test=True), LogitsStage(entries, adapt_bn=1.0, crop_test=True)
    for subject in PEOPLE:
        # in-process, one call holding all of this person's photos and nothing else
        mine = faces[faces[schema.SUBJECT] == subject]
        batch = {k: mine[k].to_numpy() for k in (schema.VIDEO_ID, schema.FRAME_INDEX, schema.FACE, schema.SUBJECT,
                                                 schema.NUM_FRAMES)}
        together, alone = adapted(batch), plain(batch)
        moved = 0.0
        for entry in entries:
            job = np.stack([logits[photo, entry.key] for photo in mine[schema.VIDEO_ID]])
            # the job grouped the person's photos whole: the scores they get together ...
            np.testing.assert_allclose(job, together[column(entry)], atol=1e-4)
            moved = max(moved, np.abs(job - alone[column(entry)]).max())
        # ... which are the trained statistics' for too few photos, and their own for enough (in the models
        # with BatchNorm layers: Swin has none)
        assert moved < 1e-5 if len(mine) < adapt.MIN_FACES else moved > 1e-4, (subject, moved)
