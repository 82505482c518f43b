"""What every job does at start: logging, and joining a Ray cluster or starting a local one."""

from __future__ import annotations

import logging
import os

log = logging.getLogger("fer_ray")


VERBOSE_ENV = "FER_RAY_VERBOSE"  # "1": Ray's own INFO lines and worker output on the console too
# A local instance keeps up to 10 idle workers for a minute instead of Ray's default (as many as it has CPUs,
# for one second): a job's read and write tasks come in short bursts, and a worker killed between bursts is
# a new Python process importing Ray (about 2 CPU-seconds) for the next one. Measured on 2 cores
# (benchmarks/README.md, `python benchmarks/overhead.py`): annotate from faces 1.7x faster, from videos 1.08x.
LOCAL_RAY_SYSTEM_CONFIG = {"idle_worker_killing_time_threshold_ms": 60_000, "num_workers_soft_limit": 10}


def setup_logging(level: int = logging.INFO, verbose: bool | None = None) -> None:
    """Our log lines at `level` on the console. `verbose` (a job's --verbose) also prints Ray's own INFO
    lines and its workers' output there; without it they go only to Ray's session log files."""
    if verbose is not None:
        os.environ[VERBOSE_ENV] = "1" if verbose else "0"
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_ray_console()


def add_verbose_flag(parser) -> None:
    """A job's --verbose (argparse), the one wording every job shows."""
    parser.add_argument("--verbose", action="store_true",
                        help="also print Ray's own log lines and its workers' output (default: its log files only)")


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "0") == "1"


def quiet_ray_console() -> None:
    """Unless verbose: Ray's console handlers (the "ray" and "ray.*" loggers': Ray Data's progress reports,
    Train and Tune status lines) print warnings and errors only. Their file handlers keep every line. Ray
    adds these handlers when its modules are imported, so this runs again after each such import."""
    level = logging.INFO if verbose() else logging.WARNING
    for name in ["ray", *(n for n in list(logging.root.manager.loggerDict) if n.startswith("ray."))]:
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setLevel(level)


def init_ray(num_cpus: int | None = None, address: str | None = None) -> None:
    """Join the cluster at `address` or RAY_ADDRESS (set by `ray job submit`; "auto" finds a `ray start`
    cluster on this machine), else start a local instance whose dashboard binds to 127.0.0.1 only.

    A job never silently joins whatever Ray happens to run on the machine: that is asked for by name.
    """
    import ray

    quiet_ray_console()  # importing ray just added its console handler
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    quiet = "" if verbose() else "; Ray's own log lines go to its session logs (--verbose prints them here)"
    if address:
        ray.init(address=address, log_to_driver=verbose())
        quiet_ray_console()
        log.info("joined the Ray cluster at %s%s", address, quiet)
        return
    ray.init(num_cpus=num_cpus, include_dashboard=False, dashboard_host="127.0.0.1", log_to_driver=verbose(),
             _system_config=LOCAL_RAY_SYSTEM_CONFIG)
    quiet_ray_console()
    log.info("started a local Ray instance (%s CPUs)%s", ray.cluster_resources().get("CPU"), quiet)


def machine_info() -> dict:
    """What a benchmark ran on: CPU model and count, load, library versions, the GPU if any."""
    import platform
    from pathlib import Path

    import numpy as np
    import torch

    model = platform.processor()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), model)
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpus": os.cpu_count(), "cpu_model": model, "platform": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_average_at_start": [round(x, 2) for x in load] if load else None,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
