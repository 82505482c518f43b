"""What every job does at start: logging, and joining a Ray cluster or starting a local one."""

from __future__ import annotations

import logging
import os

log = logging.getLogger("fer_ray")


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def init_ray(num_cpus: int | None = None) -> None:
    """Join the cluster named by RAY_ADDRESS (as under `ray job submit`) or one running on this machine;
    else start a local instance whose dashboard binds to 127.0.0.1 only."""
    import ray

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address="auto", log_to_driver=True)
        log.info("joined the Ray cluster at %s", os.environ["RAY_ADDRESS"])
        return
    try:
        ray.init(address="auto")
        log.info("joined the Ray cluster running on this machine")
    except ConnectionError:
        ray.init(num_cpus=num_cpus, include_dashboard=False, dashboard_host="127.0.0.1")
        log.info("started a local Ray instance (%s CPUs)", ray.cluster_resources().get("CPU"))
