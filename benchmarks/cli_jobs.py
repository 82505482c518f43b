"""Run a job's command line in this process (jobs/<name>.py main(argv)): the benchmarks time the jobs as a
user runs them, on one Ray instance for all steps."""

from __future__ import annotations

import runpy
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_job(name: str, argv: list[str]) -> int:
    print(f"\n=== {name}: {' '.join(argv)}", flush=True)
    main = runpy.run_path(str(ROOT / "jobs" / f"{name}.py"), run_name=f"fer_ray_job_{name}")["main"]
    code = main(argv)
    if code:
        raise SystemExit(f"{name} failed with exit status {code}")
    return code


class TimedSteps:
    """`step(name, argv)` runs a job (run_job) and adds its wall time to `seconds[name]`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, argv: list[str]) -> None:
        start = time.perf_counter()
        run_job(name, argv)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
