"""evaluate_run end to end on a tiny run: metrics.json numbers, tables, and an HTML report whose images exist."""

import importlib.util
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from PIL import Image
from sklearn.metrics import f1_score

from fer_ray import labels, schema, storage
from fer_ray.evaluate import report
from fer_ray.evaluate.run import EvaluateConfig, evaluate_run
from tests.unit.test_ablations import PERFECT, TRUTH, _logits
from tests.unit.test_export import predictions_table, write_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parents[2]

# The run predicts v1 perfectly and gets v2 frames 0..4 wrong (Surprise); frames 15, 16 of v2 absent.
PREDICTED = {"v1": PERFECT["v1"], "v2": np.r_[np.full(5, labels.class_index("Surprise")), PERFECT["v2"][5:]]}


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])


def _make_run(base: str) -> tuple[str, str]:
    run = storage.join(base, "run")
    v2_frames = [f for f in range(20) if f not in (15, 16)]
    write_run(run, {"v1": predictions_table("v1", PREDICTED["v1"]),
                    "v2": predictions_table("v2", PREDICTED["v2"][v2_frames], frames=v2_frames),
                    "unlabelled": predictions_table("unlabelled", [0, 0])})
    logits = pa.Table.from_pandas(_logits().assign(**{schema.TRACK_ID: 0}), preserve_index=False).cast(schema.LOGITS_SCHEMA)
    storage.write_parquet(storage.join(run, "logits", "part-0.parquet"), logits)
    label_dir = storage.join(base, "labels")
    for video_id, values in TRUTH.items():
        labels.write_expr(storage.join(label_dir, f"{video_id}.txt"), values)
    return run, label_dir


def _expected_f1() -> float:
    y_true = np.r_[TRUTH["v1"], TRUTH["v2"]]
    y_pred = np.r_[PREDICTED["v1"], PREDICTED["v2"]]
    keep = y_true >= 0
    return f1_score(y_true[keep], y_pred[keep], labels=range(8), average="macro", zero_division=0)


def _check_report(output: str) -> _Links:
    page = storage.read_bytes(storage.join(output, "report.html")).decode("utf-8")
    links = _Links()
    links.feed(page)
    links.close()
    assert {"html", "body", "table", "img"} <= set(links.tags)
    for src in links.images:
        assert "://" not in src and not src.startswith("/"), src  # relative: the folder is self-contained
        data = storage.read_bytes(storage.join(output, src))
        assert data.startswith(PNG_SIGNATURE), src
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    return links


def test_evaluate_run_local(tmp_path):
    run, label_dir = _make_run(str(tmp_path))
    output = str(tmp_path / "eval")
    summary = evaluate_run(EvaluateConfig(predictions=run, labels=label_dir, output=output, logits=run,
                                          window=64, windows=[0, 4, 64], max_timelines=5))
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())  # strict JSON (no NaN)
    assert saved["overall"]["f1"] == pytest.approx(_expected_f1())
    assert summary["overall"]["f1"] == pytest.approx(_expected_f1())
    assert saved["videos"] == ["v1", "v2"] and saved["videos_without_labels"] == ["unlabelled"]
    headline = saved["headline"]
    assert headline["f1"] == pytest.approx(_expected_f1()) and headline["videos"] == 2
    assert headline["ci_low"] <= headline["f1"] <= headline["ci_high"]
    assert headline["majority_class"] == "Happiness"  # 24 of the 32 annotated frames
    assert saved["ablations"]["table4"][-1]["f1"] == pytest.approx(0.5)
    per_video = pd.read_csv(tmp_path / "eval" / "tables" / "per_video.csv").set_index(schema.VIDEO_ID)
    assert per_video.loc["v1", "accuracy"] == pytest.approx(1.0)
    assert per_video.loc["v2", "filled_frames"] == 2
    assert per_video.loc["v2", "pred_flips_per_min"] == pytest.approx(1 / (20 / 30 / 60))
    for name in ("overall", "per_class", "per_video", "table1", "table2", "table3", "table4"):
        assert (tmp_path / "eval" / "tables" / f"{name}.csv").exists()
        assert (tmp_path / "eval" / "tables" / f"{name}.md").read_text().startswith("| ")
    links = _check_report(output)
    names = sorted(Path(src).name for src in links.images)
    assert names == ["confusion_matrix.png", "per_class_f1.png", "timeline_v1.png", "timeline_v2.png",
                     "window_sweep.png"]


def test_labels_csv_and_no_logits(tmp_path):
    run, _ = _make_run(str(tmp_path))
    rows = [{schema.VIDEO_ID: v, schema.FRAME_INDEX: f, schema.LABEL: labels.ABAW_CLASSES[y]}
            for v, values in TRUTH.items() for f, y in enumerate(values) if y >= 0]
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    output = str(tmp_path / "eval_csv")
    summary = evaluate_run(EvaluateConfig(predictions=run, labels=str(tmp_path / "labels.csv"), output=output))
    # v1's last frame (unannotated) is absent from the CSV, so v1 has 12 frames instead of 13
    assert summary["overall"]["frames"] == 32
    assert summary["overall"]["f1"] == pytest.approx(_expected_f1())
    assert "table1" not in summary["ablations"]
    _check_report(output)


def test_markdown_and_json_helpers():
    table = pd.DataFrame({"a": [1.0, float("nan")], "b": ["x|y", "z"]})
    assert report.markdown_table(table) == "| a | b |\n|---|---|\n| 1.0000 | x\\|y |\n|  | z |\n"
    assert report.json_ready({"x": np.float32(float("nan")), "y": np.arange(2)}) == {"x": None, "y": [0, 1]}


def _load_job(name: str):
    spec = importlib.util.spec_from_file_location(f"job_{name}", ROOT / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_evaluate_job_cli(tmp_path, capsys):
    run, label_dir = _make_run(str(tmp_path))
    output = str(tmp_path / "cli")
    assert _load_job("evaluate").main(["--predictions", run, "--labels", label_dir, "--output", output]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["f1"] == pytest.approx(_expected_f1())
    assert (tmp_path / "cli" / "evaluate.yaml").exists()


def test_evaluate_to_s3(tmp_path, s3_bucket):
    run, label_dir = _make_run(str(tmp_path))
    output = storage.join(s3_bucket, "eval")
    evaluate_run(EvaluateConfig(predictions=run, labels=label_dir, output=output, logits=run,
                                window=64, windows=[0, 64]))
    assert storage.read_json(storage.join(output, "metrics.json"))["overall"]["f1"] == pytest.approx(_expected_f1())
    assert len(_check_report(output).images) == 5
