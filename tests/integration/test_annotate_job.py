"""The bulk annotation job end to end on a local Ray cluster, reading videos from and writing to S3 (moto)."""

from __future__ import annotations

import boto3
import decord
import numpy as np
import pytest
import yaml

from fer_ray import labels, schema, shards, storage
from fer_ray.infer.postprocess import PREDICTIONS, submission_uri
from fer_ray.infer.readers import read_logits
from fer_ray.jobs import annotate
from tests.conftest import need_shared
from tests.helpers import load_job, stage_actors, write_untrained_models

pytestmark = pytest.mark.slow
VIDEOS = {"tw_TW01": "labeled/tw_TW01", "noface": "unlabeled/pyfeat_no_face"}


@pytest.fixture(scope="module")
def bucket(s3_server, ray_local):
    """Two real videos (one labelled) and a corrupt one under s3://.../videos/, untrained smoke models."""
    root = need_shared("videos")
    name = "annotate-job"
    client = boto3.client("s3")
    client.create_bucket(Bucket=name)
    frames = {}
    for video_id, rel in VIDEOS.items():
        path = next(root.glob(rel + ".*"))
        client.upload_file(str(path), name, f"videos/{video_id}{path.suffix}")
        frames[video_id] = len(decord.VideoReader(str(path)))
    client.upload_file(str(root / "labeled" / "tw_TW01.txt"), name, "videos/tw_TW01.txt")
    client.put_object(Bucket=name, Key="videos/corrupt.mp4", Body=b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    write_untrained_models(f"s3://{name}/models")
    return f"s3://{name}", frames


def _run(base: str, output: str, **kw) -> dict:
    options = {"input": f"{base}/videos/", "models": f"{base}/models", "output": output,
               "stride": 10, "max_frames": 12, "keep_logits": True} | kw
    return annotate.run(annotate.load_config(options))


@pytest.fixture(scope="module")
def first_run(bucket):
    base, frames = bucket
    return _run(base, f"{base}/out"), base, frames


def _predictions(output: str, video_id: str):
    parts = shards.complete_parts(output, PREDICTIONS, [video_id])
    return storage.read_parquet_many(parts).to_pandas()


def test_every_frame_has_exactly_one_prediction(first_run):
    summary, base, frames = first_run
    output = f"{base}/out"
    assert summary["videos_annotated"] == 2 and summary["videos_failed"] == 1
    for video_id, count in frames.items():
        rows = _predictions(output, video_id)
        assert rows[schema.FRAME_INDEX].tolist() == list(range(count))
        assert rows[schema.LABEL].between(0, 7).all()
        assert np.allclose(np.stack(rows[schema.PROBS]).sum(axis=1), 1.0, atol=1e-4)
        assert (rows[schema.LABEL_NAME] == np.asarray(labels.ABAW_CLASSES)[rows[schema.LABEL]]).all()
        assert len(rows[schema.COARSE_PROBS][0]) == 5 and len(rows[schema.NEGATIVE_PROBS][0]) == 4
        submitted = labels.read_expr(submission_uri(output, video_id))
        assert submitted.tolist() == rows[schema.LABEL].tolist()
        text = storage.read_bytes(submission_uri(output, video_id)).decode()
        assert len(text.splitlines()) == count + 1
    faces = _predictions(output, "tw_TW01")
    assert faces[schema.FACE_FOUND].sum() == 12  # the 12 decoded frames all show the performer
    assert (faces[schema.FILLED] == ~faces[schema.FACE_FOUND]).all()
    assert not _predictions(output, "noface")[schema.FACE_FOUND].any()


def test_failures_and_summary(first_run):
    summary, base, _ = first_run
    failures = {f["video_id"]: f for f in summary["failures"]}
    assert set(failures) == {"corrupt"} and failures["corrupt"]["error"]
    stored = storage.read_json(f"{base}/out/summary.json")
    assert stored["videos"]["tw_TW01"]["frames"] == 2466 and stored["model_version"] == summary["model_version"]
    # annotate.run (the library) saves no config; jobs/annotate.py does (test_prior_correction_... checks that)
    assert not storage.exists(f"{base}/out/annotate.yaml")


def test_kept_logits_hold_every_model(first_run):
    _, base, _ = first_run
    logits = read_logits(f"{base}/out").to_pandas()
    assert set(logits[schema.MODEL]) == {"coarse/coarse_iresnet", "coarse/coarse_swin", "coarse/coarse_hrnet",
                                         "negative/negative_repvgg", "expr/baseline"}
    assert (logits.groupby(schema.MODEL).size() == 12).all()


def test_rerun_skips_and_resume_redoes_only_the_lost_video(first_run):
    _, base, _ = first_run
    output = f"{base}/out"
    before = {v: storage.read_bytes(submission_uri(output, v)) for v in VIDEOS}
    table_before = _predictions(output, "tw_TW01")
    actors_before = stage_actors()
    again = _run(base, output)
    assert again["videos_annotated"] == 0 and again["videos_skipped"] == 2
    # the two finished videos never reach an actor: one detector actor for the corrupt video (retried, as
    # every run does), and nothing to predict, so no logits actor
    assert stage_actors() == actors_before + 1
    # a crash after the predictions were written but before the done marker
    storage.delete(shards.done_uri(output, PREDICTIONS, "tw_TW01"))
    resumed = _run(base, output)
    assert resumed["videos_annotated"] == 1 and resumed["videos_skipped"] == 1
    assert {v: storage.read_bytes(submission_uri(output, v)) for v in VIDEOS} == before
    after = _predictions(output, "tw_TW01")
    assert after.drop(columns=[schema.PROBS, schema.COARSE_PROBS, schema.NEGATIVE_PROBS]).equals(
        table_before.drop(columns=[schema.PROBS, schema.COARSE_PROBS, schema.NEGATIVE_PROBS]))
    assert np.allclose(np.stack(after[schema.PROBS]), np.stack(table_before[schema.PROBS]))


def test_temporal_system_from_face_shards(first_run):
    """PRL (a sequence head over the frame backbone's features) through the job, from the first run's face
    shards. One system is enough here: the baseline and Mao's clip heads take the same job path (the
    post-processing actor's TemporalHeads), and tests/unit/test_postprocess.py runs every system's rows."""
    _, base, frames = first_run
    system = "prl"
    output = f"{base}/{system}"
    summary = _run(base, output, input=f"{base}/out", system=system, window=32)
    assert summary["videos_annotated"] == 2, summary
    rows = _predictions(output, "tw_TW01")
    assert rows[schema.FRAME_INDEX].tolist() == list(range(frames["tw_TW01"]))
    assert set(rows[schema.SYSTEM]) == {system}
    assert len(rows[schema.COARSE_PROBS][0]) == 0  # no cascade parts outside CFC-SP


def test_prior_correction_subtracts_each_models_log_prior(first_run):
    first, base, _ = first_run
    with pytest.raises(ValueError, match="train_prior"):  # untrained smoke models record no prior
        _run(base, f"{base}/prior_missing", input=f"{base}/out", prior_correction=True)
    with pytest.raises(SystemExit) as caught:  # the job says so in one line, before any video is read
        load_job("annotate").main(["--input", f"{base}/out", "--models", f"{base}/models",
                                   "--output", f"{base}/prior_missing", "--prior-correction"])
    assert str(caught.value.code).startswith("annotate: invalid configuration: prior correction needs")
    saved = yaml.safe_load(storage.read_bytes(f"{base}/prior_missing/annotate.yaml"))  # the job saved its config
    assert saved["prior_correction"] is True and saved["input"] == f"{base}/out"
    assert not storage.exists(f"{base}/prior_missing/summary.json")
    index = storage.read_json(f"{base}/models/models.json")
    for entry in index["models"].values():  # the first class of every task was 90 % of "training"
        k = entry["num_classes"]
        entry["checkpoint"] = f"{base}/models/{entry['checkpoint']}"
        entry["train_prior"] = [0.9] + [0.1 / (k - 1)] * (k - 1)
    storage.write_json(f"{base}/models_prior/models.json", index)
    summary = _run(base, f"{base}/prior", input=f"{base}/out", models=f"{base}/models_prior",
                   prior_correction=True)
    assert summary["videos_annotated"] == 2 and summary["model_version"] != first["model_version"]
    key = [schema.VIDEO_ID, schema.FRAME_INDEX, schema.MODEL]
    raw = read_logits(f"{base}/out").to_pandas().set_index(key).sort_index()
    corrected = read_logits(f"{base}/prior").to_pandas().set_index(key).sort_index()
    assert corrected.index.equals(raw.index)
    for (_, _, model), got, want in zip(raw.index, corrected[schema.SCORES], raw[schema.SCORES]):
        k = len(want)
        shift = np.log([0.9] + [0.1 / (k - 1)] * (k - 1))
        np.testing.assert_allclose(got, np.asarray(want) - shift, atol=1e-4, err_msg=model)
