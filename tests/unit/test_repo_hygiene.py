"""The repository holds code and configs only: no data, run outputs or weights derived from ../shared/data.

A benchmark run once committed its whole output folder (face crops of the shared dev performers, logits,
predictions); the shared data's licence forbids copying it into git history, so tracked files are checked.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA_SUFFIXES = {".parquet", ".pt", ".pth", ".ckpt", ".safetensors", ".npy", ".npz",
                 ".jpg", ".jpeg", ".png", ".mp4", ".avi", ".mov", ".mkv", ".webm"}
TOP_LEVEL = {".ci", ".gitignore", "Makefile", "README.md", "ARCHITECTURE.md", "pyproject.toml",
             "benchmarks", "cluster", "configs", "fer_ray", "jobs", "tests"}


def tracked_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"not a git checkout ({exc}): nothing to check")
    return [name for name in out.stdout.decode().split("\0") if name]


def test_no_data_or_weights_tracked():
    bad = [name for name in tracked_files() if Path(name).suffix.lower() in DATA_SUFFIXES]
    assert not bad, f"data, images or weights are tracked (run outputs belong in ignored folders): {bad[:10]}"


def test_only_project_folders_at_top_level():
    stray = sorted({name.split("/", 1)[0] for name in tracked_files()} - TOP_LEVEL)
    assert not stray, f"unexpected top-level paths tracked (benchmark outputs?): {stray}"


def test_library_and_benchmarks_never_import_tests():
    """Benchmarks and the library stand on their own (a user runs them without the test tree)."""
    import ast

    offenders = []
    for folder in ("fer_ray", "benchmarks", "jobs"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] == "tests"]
    assert not offenders, offenders
