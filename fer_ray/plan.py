"""A plan is a list of steps; a step is a stage class, its constructor arguments and what each of its actors
asks for. Stages declare their step (`Stage.step(...)`); `fer_ray.raydata` alone turns a plan into Ray Data
operations. Plain Python: stages and plans are built and tested without Ray.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Resources:
    """What one actor of a stage reserves and how it is fed."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    batch_size: int | None = 1  # rows per call; None: a whole block (or a whole group)
    batch_format: str = "numpy"  # or "pandas"
    concurrency: int = 1  # actors at most
    eager: bool = False  # start all `concurrency` actors up front instead of one


@dataclass(frozen=True)
class Step:
    """One stage of a plan: `stage(**kwargs)` once per actor, then `stage_instance(batch) -> batch`."""

    stage: type
    kwargs: dict = field(default_factory=dict)
    resources: Resources = Resources()
    name: str = ""  # what its actors are, for messages ("face detector actors")
    group_by: str | None = None  # each call gets all rows of one value of this column (a shuffle first)
    # with group_by: a function batch -> batch that adds the group_by column before the shuffle (run as
    # light tasks, no actors); None when the rows already carry it
    group_key: Callable[[dict], dict] | None = None
    partitions: int = 1  # shuffle partitions when grouping
