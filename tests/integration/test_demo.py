"""`make demo` (fer_ray.jobs.demo, behind jobs/demo.py) end to end with OUTPUT=s3://...: every step's output
lands on the S3 server.

Test-sized: one held-out performer's video, 120 + 60 + 60 training faces, two of the smoke models (one coarse
net and the negative net: what the cascade needs, trained at once as one wave of Tune trials), the first 240
frames annotated, a 48-frame overlay. The full-size demo (the README's `make demo`) is measured, not tested.
"""

from __future__ import annotations

import html.parser
import tempfile

import boto3
import pytest
import yaml

from fer_ray import schema, storage
from fer_ray.infer import readers
from fer_ray.jobs import demo
from fer_ray.jobs.demo import DemoConfig
from tests.conftest import ROOT, SHARED_DATA, need_shared

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FRAMES, RENDER_FRAMES = 240, 48
MODELS = ("coarse_iresnet", "negative_repvgg")


def _train_config(path) -> str:
    """configs/smoke.yaml cut to MODELS, with a few short epochs: a test-sized train_all step."""
    raw = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
    raw["models"] = [m | {"epochs": 2, "max_steps_per_epoch": 3, "max_val_steps": 2, "batch_size": 8}
                     for m in raw["models"] if m["name"] in MODELS]
    path.write_text(yaml.safe_dump(raw))
    return str(path)


class _Images(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


def test_demo_writes_everything_to_s3(ray_local, s3_bucket, s3_server, tmp_path):
    need_shared("videos", "labeled", "tw_TW01.mp4")
    out = f"{s3_bucket}/demo"
    result = demo.run(DemoConfig(data=str(SHARED_DATA), output=out, videos=["tw_TW01"],
                                 train_config=_train_config(tmp_path / "train.yaml"), taiwanese_limit=120,
                                 fer2013_limit=60, ckplus_limit=60, max_frames=FRAMES,
                                 render_frames=RENDER_FRAMES))
    assert list(result["seconds"]) == ["preprocess", "train_all", "annotate", "evaluate", "render"]
    head = result["headline"]  # what the demo prints: macro-F1 beside majority-class and chance figures
    assert head["annotated"] > 0 and 0.0 <= head["majority_f1"] <= 1.0 and 0.0 <= head["chance_f1"] <= 1.0
    keys = {o["Key"] for page in boto3.client("s3", endpoint_url=s3_server).get_paginator("list_objects_v2")
            .paginate(Bucket=s3_bucket[len("s3://"):]) for o in page.get("Contents", [])}
    # training: every model of the train config has a checkpoint and is indexed
    index = storage.read_json(f"{out}/models/models.json")
    assert set(index["models"]) == set(MODELS)
    for name, entry in index["models"].items():
        assert f"demo/models/{entry['checkpoint']}" in keys, name
    # annotation: one prediction per annotated frame of the held-out video, in order
    predictions = readers.read_predictions(f"{out}/annotate").to_pandas()
    rows = predictions[predictions[schema.VIDEO_ID] == "tw_TW01"]
    frames = rows[schema.FRAME_INDEX].sort_values().tolist()
    assert len(frames) == len(set(frames)) and frames[:FRAMES] == list(range(FRAMES))
    # evaluation: metrics and a report whose every image is a PNG on S3
    metrics = storage.read_json(f"{out}/evaluate/metrics.json")
    assert metrics["videos"] == ["tw_TW01"] and 0.0 <= metrics["overall"]["f1"] <= 1.0
    parser = _Images()
    parser.feed(storage.read_bytes(f"{out}/evaluate/report.html").decode("utf-8"))
    assert len(parser.sources) >= 4
    for source in parser.sources:
        assert storage.read_bytes(f"{out}/evaluate/{source}").startswith(PNG_SIGNATURE), source
    # the overlay video decodes and has the frames asked for
    import decord

    with tempfile.NamedTemporaryFile(suffix=".mp4") as local:
        local.write(storage.read_bytes(f"{out}/overlay_tw_TW01.mp4"))
        local.flush()
        assert len(decord.VideoReader(local.name)) == RENDER_FRAMES
