"""benchmarks/gpu.py: one command, a table; skips cleanly without CUDA and runs its code paths on CPU."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest
import torch

from tests.conftest import SHARED_DATA, need_shared

# the script's own main() in this process: the same code as its command line, without a second interpreter
# importing torch again
GPU = runpy.run_path(str(Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.py"), run_name="gpu")


def run(capsys, *args: str) -> str:
    """main(args) -> 0; returns what it printed. The torch thread count it sets is put back."""
    threads = torch.get_num_threads()
    try:
        assert GPU["main"](list(args)) == 0
    finally:
        torch.set_num_threads(threads)
    return capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")
def test_without_cuda_every_part_is_skipped_with_the_reason(tmp_path, capsys):
    out = tmp_path / "gpu.json"
    printed = run(capsys, "--out", str(out))
    rows = json.loads(out.read_text())["rows"]
    assert [r["what"] for r in rows] == ["preprocess/*", "logits/*"]
    assert all(r["frames_per_s"] is None and "no CUDA device" in r["note"] for r in rows)
    assert "skipped: no CUDA device" in printed


def test_cpu_quick_run_measures_every_row(tmp_path, capsys):
    need_shared("videos", "labeled", "tw_TW01.mp4")
    out = tmp_path / "gpu.json"
    run(capsys, "--device", "cpu", "--quick", "--data", str(SHARED_DATA), "--out", str(out))
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
