"""What every job does at start: logging, and joining a Ray cluster or starting a local one."""

from __future__ import annotations

import logging
import os

log = logging.getLogger("fer_ray")


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def init_ray(num_cpus: int | None = None, address: str | None = None) -> None:
    """Join the cluster at `address` or RAY_ADDRESS (set by `ray job submit`; "auto" finds a `ray start`
    cluster on this machine), else start a local instance whose dashboard binds to 127.0.0.1 only.

    A job never silently joins whatever Ray happens to run on the machine: that is asked for by name.
    """
    import ray

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
        log.info("joined the Ray cluster at %s", address)
        return
    ray.init(num_cpus=num_cpus, include_dashboard=False, dashboard_host="127.0.0.1")
    log.info("started a local Ray instance (%s CPUs)", ray.cluster_resources().get("CPU"))


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
