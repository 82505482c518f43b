"""Run a job's command line in this process (jobs/<name>.py main(argv)): the benchmarks time the jobs as a
user runs them, on one Ray instance for all steps."""

from __future__ import annotations

import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_job(name: str, argv: list[str]) -> int:
    print(f"\n=== {name}: {' '.join(argv)}", flush=True)
    main = runpy.run_path(str(ROOT / "jobs" / f"{name}.py"), run_name=f"fer_ray_job_{name}")["main"]
    code = main(argv)
    if code:
        raise SystemExit(f"{name} failed with exit status {code}")
    return code
