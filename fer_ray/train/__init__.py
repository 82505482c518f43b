"""Training: typed config (config.py), shard rows -> tensors (data.py), repeat-factor sampler, augmentations,
losses, the epoch loop run by Ray Train workers and by local runs (loop.py), and the Tune launcher (launch.py),
which trains on the datasets it is handed (fer_ray.jobs.train builds them).

    from fer_ray.jobs.train import run              # Ray: every model of a TrainConfig, several at once
    from fer_ray.train.loop import train_local      # no Ray: one ModelSpec on in-memory rows
"""

from fer_ray.train.config import AugmentConfig, LossConfig, ModelSpec, OversampleConfig, TrainConfig

__all__ = ["AugmentConfig", "LossConfig", "ModelSpec", "OversampleConfig", "TrainConfig"]
