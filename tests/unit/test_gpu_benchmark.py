"""benchmarks/gpu.py: one command, a table; skips cleanly without CUDA and runs its code paths on CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import SHARED_DATA, need_shared

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.py"


def run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")
def test_without_cuda_every_part_is_skipped_with_the_reason(tmp_path):
    out = tmp_path / "gpu.json"
    done = run("--out", str(out))
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [r["what"] for r in rows] == ["preprocess/*", "logits/*"]
    assert all(r["frames_per_s"] is None and "no CUDA device" in r["note"] for r in rows)
    assert "skipped: no CUDA device" in done.stdout


def test_cpu_quick_run_measures_every_row(tmp_path):
    need_shared("videos", "labeled", "tw_TW01.mp4")
    out = tmp_path / "gpu.json"
    done = run("--device", "cpu", "--quick", "--data", str(SHARED_DATA), "--out", str(out))
    assert done.returncode == 0, done.stderr
    rows = {r["what"]: r for r in json.loads(out.read_text())["rows"]}
    expected = {"preprocess/decode", "preprocess/detect+align", "preprocess/stage", "logits/CFC-SP ensemble",
                "logits/LogitsStage call", "logits/iresnet_tiny 112", "logits/swin_tiny_smoke 112",
                "logits/hrnet_smoke 128", "logits/repvgg_smoke 112"}
    assert set(rows) == expected
    assert all(r["frames_per_s"] > 0 for r in rows.values())
    # the test clip is one face on every frame: the stage finds it on all 48 (toy size) frames
    assert "48 faces" in rows["preprocess/stage"]["note"]
    assert "faces in 48/48 frames" in rows["preprocess/detect+align"]["note"]
    assert "GFLOP/frame" in rows["logits/CFC-SP ensemble"]["note"]
    assert rows["logits/CFC-SP ensemble"]["target"] == 4000 and rows["logits/CFC-SP ensemble"]["met"] is False
