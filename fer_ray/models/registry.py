"""One factory for every fer-ray model, plus the checkpoint format shared by training and inference.

fer-ray's own models are registered with ``timm.models.register_model`` (so ``timm.create_model`` finds them
too); any other timm name is accepted as a frame classifier. Models are always created with
``pretrained=False``: weights only ever come from local or S3 files through :func:`load_pretrained`.

Checkpoint format (:func:`save_checkpoint` / :func:`load_checkpoint`): a ``torch.save`` of
``{"state_dict": ..., "meta": {...}, "format": "fer-ray-checkpoint", "version": 1}``; ``meta`` carries at
least ``name``, ``task``, ``num_classes``, ``input_size``, ``kind``, ``config``, ``metrics`` and optionally
``model_kwargs`` (the extra ``create_model`` arguments needed to rebuild the architecture).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
from dataclasses import dataclass

import timm
import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from fer_ray import storage

# Importing the model modules registers their entrypoints with timm.
from fer_ray.models import backbones as _backbones  # noqa: F401
from fer_ray.models import fercnn as _fercnn  # noqa: F401
from fer_ray.models import fusion as _fusion  # noqa: F401
from fer_ray.models import iresnet as _iresnet  # noqa: F401
from fer_ray.models import temporal as _temporal  # noqa: F401
from fer_ray.safe_load import load_data

__all__ = [
    "ModelInfo", "DataConfig", "create_model", "list_models", "input_size", "model_kind", "model_info",
    "clip_length", "data_config",
    "load_pretrained", "save_checkpoint", "load_checkpoint", "CHECKPOINT_FORMAT",
]

_LOG = logging.getLogger(__name__)
CHECKPOINT_FORMAT = "fer-ray-checkpoint"
FRAME, CLIP, SEQUENCE = "frame", "clip", "sequence"


@dataclass(frozen=True)
class ModelInfo:
    """What the pipeline needs to know about a model name without building it."""

    name: str
    input_size: int          # square input side in pixels
    kind: str = FRAME        # "frame" (B,3,H,W)->(B,C) | "clip" (B,9,3,H,W)->(B,C) | "sequence" (B,64,..)->(B,64,C)
    clip_length: int = 1     # frames per model input: 1, 9 (Mao clip, centre prediction) or 64 (PRL chunk)
    family: str = ""
    smoke: bool = False      # a tiny variant for tests and smoke runs
    sized: bool = False      # built for one input side (create with img_size=<side> for another one)
    # The pixel statistics every fer-ray model is trained and run with. Not the timm pretrained_cfg of the
    # model (IResNet's says insightface's 0.5/0.5): checkpoints were trained with these, so they stay.
    mean: tuple[float, float, float] = IMAGENET_DEFAULT_MEAN
    std: tuple[float, float, float] = IMAGENET_DEFAULT_STD


@dataclass(frozen=True)
class DataConfig:
    """What a model's input needs (timm's data config, for a square face crop): side, resize, normalisation."""

    input_size: int  # square side in pixels
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"  # a torchvision InterpolationMode value


def _infos() -> dict[str, ModelInfo]:
    rows = [
        # IResNet (ArcFace IR), CFC-SP coarse ensemble / face-recognition backbones
        *(ModelInfo(n, 112, family="iresnet", sized=True) for n in
          ("iresnet18", "iresnet34", "iresnet50", "iresnet100", "iresnet152")),
        ModelInfo("iresnet_tiny", 112, family="iresnet", smoke=True, sized=True),
        # CFC-SP coarse ensemble members
        ModelInfo("swin_s", 224, family="swin", sized=True),
        ModelInfo("swin_tiny_smoke", 112, family="swin", smoke=True, sized=True),
        ModelInfo("hrnet_w18", 128, family="hrnet"),
        ModelInfo("hrnet_w32", 128, family="hrnet"),
        ModelInfo("hrnet_smoke", 128, family="hrnet", smoke=True),
        # CFC-SP negative net
        ModelInfo("repvgg_a2", 112, family="repvgg"),
        ModelInfo("repvgg_b1", 112, family="repvgg"),
        ModelInfo("repvgg_smoke", 112, family="repvgg", smoke=True),
        # Mao frame CNN / baseline, PRL backbone
        ModelInfo("resnet50", 112, family="resnet"),
        ModelInfo("baseline_resnet50", 112, family="resnet"),
        ModelInfo("resnet_smoke", 112, family="resnet", smoke=True),
        ModelInfo("regnety_016", 112, family="regnet"),
        ModelInfo("regnet_smoke", 112, family="regnet", smoke=True),
        # RECIPES.md's small CNN for 48-px faces of the "fer" geometry (greys its input, standardises per image)
        ModelInfo("fer_cnn", 48, family="fercnn"),
        ModelInfo("fer_cnn_smoke", 48, family="fercnn", smoke=True),
        # Mao temporal models (9-frame clips, centre prediction)
        ModelInfo("mao_cnn_gru", 112, CLIP, 9, family="mao"),
        ModelInfo("mao_cnn_transformer", 112, CLIP, 9, family="mao"),
        ModelInfo("mao_cnn_gru_smoke", 112, CLIP, 9, family="mao", smoke=True),
        ModelInfo("mao_cnn_transformer_smoke", 112, CLIP, 9, family="mao", smoke=True),
        # PRL fusion (64-frame chunks, per-frame outputs)
        ModelInfo("prl_fusion", 112, SEQUENCE, 64, family="prl"),
        ModelInfo("prl_fusion_smoke", 112, SEQUENCE, 64, family="prl", smoke=True),
    ]
    return {row.name: row for row in rows}


_MODELS: dict[str, ModelInfo] = _infos()


def list_models() -> list[str]:
    """The fer-ray model names (sorted). Any timm model name is accepted by :func:`create_model` as well."""
    return sorted(_MODELS)


def _unknown(name: str) -> ValueError:
    return ValueError(
        f"unknown model name {name!r}; fer-ray models: {', '.join(list_models())} "
        "(any timm model name, see timm.list_models(), is also accepted)"
    )


def _base_name(name: str) -> str:
    return str(name).split(".", 1)[0]  # timm "arch.tag" names


def model_info(name: str) -> ModelInfo:
    """:class:`ModelInfo` for a fer-ray name, or a frame-model default for another timm name."""
    base = _base_name(name)
    if base in _MODELS:
        return _MODELS[base]
    if not timm.is_model(base):
        raise _unknown(name)
    side, fixed = 112, False
    if base.startswith("hrnet"):
        side = 128
    else:
        cfg = timm.models.get_pretrained_cfg(base)
        fixed = bool(cfg and cfg.fixed_input_size) or base.startswith(("swin", "vit", "deit", "beit", "eva"))
        if fixed and cfg is not None:
            side = int(cfg.input_size[-1])
    return ModelInfo(base, side, family="timm", sized=fixed)


def input_size(name: str) -> int:
    """Default square input side: 112 (IResNet, ResNet, RegNet, RepVGG, baseline, temporal), 128 (hrnet_*),
    224 (swin_s); for other timm names 112 unless the architecture needs its pretrained size (ViT/Swin/...)."""
    return model_info(name).input_size


def model_kind(name: str) -> str:
    """``"frame"``, ``"clip"`` (Mao: T=9, prediction at the centre frame) or ``"sequence"`` (PRL: T=64, per frame)."""
    return model_info(name).kind


def clip_length(name: str) -> int:
    """Frames per model input: 1 for frame models, 9 for Mao clips, 64 for PRL sequences."""
    return model_info(name).clip_length


def data_config(name: str | None = None, input_size: int | None = None) -> DataConfig:
    """The one source of a model's eval-time input: its registry side (or `input_size`, what it was trained
    at, from its spec or models.json) and its mean/std. ``name=None``: the statistics every model uses."""
    info = model_info(name) if name is not None else ModelInfo("", 112)
    return DataConfig(int(input_size or info.input_size), tuple(info.mean), tuple(info.std))


def create_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build a model by fer-ray or timm name, never downloading weights.

    ``None`` keyword arguments are dropped (so configs can leave options unset). ``pretrained`` is refused:
    load weights with :func:`load_pretrained`. Raises ``ValueError`` for an unknown name.
    """
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if kwargs.pop("pretrained", False):
        raise ValueError("fer-ray never downloads weights: drop pretrained=True and call "
                         "fer_ray.models.load_pretrained(model, uri)")
    base = _base_name(name)
    if base not in _MODELS and not timm.is_model(base):
        raise _unknown(name)
    return timm.create_model(name, pretrained=False, num_classes=int(num_classes), **kwargs)


# ---------------------------------------------------------------------------------------------- weights

_PREFIXES = ("module.", "model.", "_orig_mod.")


def _read_state_dict(uri: str) -> dict[str, torch.Tensor]:
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError:
        raise FileNotFoundError(f"weights file not found: {uri}") from None
    obj = load_data(data, uri, "cpu", kind="PyTorch checkpoint or state dict")  # weights only: data, never code
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "state_dict_ema", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{uri}: not a state dict (expected a mapping of parameter names to tensors, or a "
                         "checkpoint dict with 'state_dict')")
    return obj


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if state and all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def _classifier_keys(model: nn.Module) -> set[str]:
    names: set[str] = set()
    heads = []
    get = getattr(model, "get_classifier", None)
    if callable(get):
        heads.append(get())
    cfg_name = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
    for head_name in ([cfg_name] if isinstance(cfg_name, str) else list(cfg_name or [])):
        try:
            heads.append(model.get_submodule(head_name))
        except AttributeError:
            pass
    ids = {id(h) for h in heads if isinstance(h, nn.Module)}
    for module_name, module in model.named_modules():
        if id(module) in ids:
            names.update(f"{module_name}.{p}" if module_name else p for p, _ in module.named_parameters())
    return names


def _align_prefix(model_keys: set[str], state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a frame-backbone state dict onto a temporal model (``backbone.`` prefix) when that matches better."""
    best, best_hits = state, len(model_keys & set(state))
    for prefix in ("backbone.",):
        moved = {prefix + k: v for k, v in state.items()}
        hits = len(model_keys & set(moved))
        if hits > best_hits:
            best, best_hits = moved, hits
        if all(k.startswith(prefix) for k in state):
            dropped = {k[len(prefix):]: v for k, v in state.items()}
            hits = len(model_keys & set(dropped))
            if hits > best_hits:
                best, best_hits = dropped, hits
    return best


def _unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DataParallel / DistributedDataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def load_pretrained(model: nn.Module, uri: str, strict: bool = False) -> list[str]:
    """Load weights from a timm/insightface state dict or a fer-ray checkpoint (local path or s3://).

    'module.' / 'model.' prefixes are stripped; a frame-backbone state dict loads into the ``backbone`` of a
    temporal model; classifier tensors whose shape differs (another number of classes) are skipped. Returns
    the model's keys that were not loaded. With ``strict=True`` any missing key outside the classifier, any
    unexpected key or any other shape mismatch raises ``ValueError``.
    """
    model = _unwrap(model)
    state = _strip_prefixes(_read_state_dict(uri))
    own = model.state_dict()
    state = _align_prefix(set(own), state)
    classifier = _classifier_keys(model)
    loadable, mismatched, skipped_head = {}, [], []
    for key, value in state.items():
        if key not in own:
            continue
        if own[key].shape != value.shape:
            (skipped_head if key in classifier else mismatched).append(
                f"{key}: file {tuple(value.shape)} vs model {tuple(own[key].shape)}")
            continue
        loadable[key] = value
    unexpected = sorted(set(state) - set(own))
    if not loadable:
        raise ValueError(f"{uri}: no tensor matches the model ({type(model).__name__}); file keys start with "
                         f"{sorted(state)[:3]}")
    missing = sorted(set(own) - set(loadable))
    if strict:
        problems = [k for k in missing if k not in classifier]
        if problems or unexpected or mismatched:
            raise ValueError(f"{uri}: strict load failed; missing {problems[:10]}, unexpected {unexpected[:10]}, "
                             f"shape mismatches {mismatched[:10]}")
    if skipped_head:
        _LOG.info("%s: classifier not loaded (shape differs): %s", uri, "; ".join(skipped_head))
    if mismatched:
        _LOG.warning("%s: %d tensors skipped for shape mismatch: %s", uri, len(mismatched), "; ".join(mismatched[:5]))
    if unexpected:
        _LOG.info("%s: %d unexpected keys ignored, e.g. %s", uri, len(unexpected), unexpected[:5])
    model.load_state_dict(loadable, strict=False)
    return missing


def save_checkpoint(uri: str, model: nn.Module, meta: dict) -> None:
    """Write ``{"state_dict", "meta"}`` atomically to a local path or s3:// URI.

    ``meta`` must have ``name`` and ``num_classes``; ``input_size`` and ``kind`` default from the name; it is
    stored as plain data (dataclasses become dicts, tuples lists, numpy scalars numbers). DDP / DataParallel /
    torch.compile wrappers are unwrapped, so the keys are those of the bare model.
    Put extra ``create_model`` arguments (e.g. ``backbone`` of a temporal model) in ``meta["model_kwargs"]``.
    """
    for key in ("name", "num_classes"):
        if key not in meta:
            raise ValueError(f"checkpoint meta needs {key!r}; got keys {sorted(meta)}")
    meta = _plain(dict(meta), "meta")
    meta.setdefault("input_size", input_size(meta["name"]))
    meta.setdefault("kind", model_kind(meta["name"]))
    meta.setdefault("model_kwargs", {})
    state = {k: v.detach().cpu().contiguous() for k, v in _unwrap(model).state_dict().items()}
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "version": 1, "state_dict": state, "meta": meta}, buffer)
    storage.write_bytes(uri, buffer.getvalue())


def _plain(value, where: str):
    """Checkpoint meta as plain Python (dict/list/str/int/float/bool/None), loadable with weights_only=True."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", None) == 0:
        return value.item()  # numpy / torch scalars
    if hasattr(value, "tolist") and callable(value.tolist):
        return value.tolist()
    raise TypeError(f"checkpoint {where}: {type(value).__name__} is not plain data (dict/list/str/number/bool/None)")


_REBUILD_DROP = ("backbone_pretrained",)  # weights come from the checkpoint itself


def load_checkpoint(uri: str, device: str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model recorded in a :func:`save_checkpoint` file; returns ``(model in eval(), meta)``."""
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint not found: {uri}") from None
    obj = load_data(data, uri, "cpu", kind="fer-ray checkpoint")  # weights only: data, never code
    if not isinstance(obj, dict) or "state_dict" not in obj or not isinstance(obj.get("meta"), dict):
        raise ValueError(f"{uri}: not a fer-ray checkpoint (needs 'state_dict' and 'meta'; "
                         "use load_pretrained for plain state dicts)")
    meta = obj["meta"]
    kwargs = {k: v for k, v in dict(meta.get("model_kwargs") or {}).items() if k not in _REBUILD_DROP}
    model = create_model(meta["name"], meta["num_classes"], **kwargs)
    model.load_state_dict(_strip_prefixes(obj["state_dict"]), strict=True)
    return model.to(device).eval(), meta
