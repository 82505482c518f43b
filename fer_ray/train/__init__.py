"""Training: typed config (config.py), shard rows -> tensors (data.py), repeat-factor sampler, augmentations,
losses, the Ray Train worker loop and a local loop (loop.py), and the Tune launcher (launch.py).

    from fer_ray.train.launch import train_all      # Ray: every model of a TrainConfig, several at once
    from fer_ray.train.loop import train_local      # no Ray: one ModelSpec on in-memory rows
"""

from fer_ray.train.config import AugmentConfig, LossConfig, ModelSpec, OversampleConfig, TrainConfig

__all__ = ["AugmentConfig", "LossConfig", "ModelSpec", "OversampleConfig", "TrainConfig"]
