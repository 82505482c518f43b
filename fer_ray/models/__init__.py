"""fer-ray models: IResNet, timm frame backbones, Mao's CNN-GRU / CNN-Transformer, PRL fusion.

Create every model through :func:`create_model` (or ``timm.create_model``, which finds the same names).
"""

from fer_ray.models.backbones import reparameterize
from fer_ray.models.fusion import PRLFusion, chunk_indices
from fer_ray.models.iresnet import IResNet
from fer_ray.models.registry import (
    CHECKPOINT_FORMAT,
    DataConfig,
    ModelInfo,
    clip_length,
    create_model,
    data_config,
    input_size,
    list_models,
    load_checkpoint,
    load_pretrained,
    model_info,
    model_kind,
    save_checkpoint,
)
from fer_ray.models.temporal import CNNGRU, CNNTransformer, SinusoidalPositionalEncoding, clip_indices

__all__ = [
    "CHECKPOINT_FORMAT", "CNNGRU", "CNNTransformer", "DataConfig", "IResNet", "ModelInfo", "PRLFusion",
    "SinusoidalPositionalEncoding", "chunk_indices", "clip_indices", "clip_length", "create_model", "data_config",
    "input_size", "list_models", "load_checkpoint", "load_pretrained", "model_info", "model_kind",
    "reparameterize", "save_checkpoint",
]
