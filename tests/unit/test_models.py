"""fer_ray.models: registry, every model's shapes and a training step, weights I/O, RepVGG fusion, indexing."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import timm
import torch
import torch.nn as nn

from fer_ray.models import (
    chunk_indices,
    clip_indices,
    clip_length,
    create_model,
    data_config,
    input_size,
    list_models,
    load_checkpoint,
    load_pretrained,
    model_info,
    model_kind,
    reparameterize,
    save_checkpoint,
    transforms,
)

SMOKE = [n for n in list_models() if model_info(n).smoke]
BIG = [n for n in list_models() if not model_info(n).smoke]
# Expected parameter counts (millions) with an 8-class head; IResNet checked against insightface below.
BIG_PARAMS_M = {
    "baseline_resnet50": 23.52, "resnet50": 23.52, "hrnet_w18": 19.27, "hrnet_w32": 39.20,
    "iresnet18": 24.03, "iresnet34": 34.14, "iresnet50": 43.59, "iresnet100": 65.16, "iresnet152": 70.77,
    "mao_cnn_gru": 29.02, "mao_cnn_transformer": 28.77, "prl_fusion": 10.46, "regnety_016": 10.32,
    "repvgg_a2": 26.81, "repvgg_b1": 55.38, "swin_s": 48.84,
    "fer_cnn": 0.66,  # RECIPES.md's small CNN: 0.66 M
}
# Big models cheap enough for one batch-1 forward on a CPU core.
BIG_FORWARD = ["iresnet50", "resnet50", "regnety_016", "repvgg_a2", "hrnet_w18"]


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _input(name: str, batch: int, frames: int | None = None, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    side = input_size(name)
    if model_kind(name) == "frame":
        return torch.randn(batch, 3, side, side, generator=gen)
    t = frames or clip_length(name)
    return torch.randn(batch, t, 3, side, side, generator=gen)


def _output_shape(name: str, batch: int, frames: int, num_classes: int) -> tuple:
    return (batch, frames, num_classes) if model_kind(name) == "sequence" else (batch, num_classes)


# ------------------------------------------------------------------------------------------------ registry

def test_list_models_covers_the_three_systems():
    names = set(list_models())
    assert {"iresnet50", "iresnet100", "iresnet152", "swin_s", "hrnet_w18", "repvgg_a2", "repvgg_b1",
            "resnet50", "regnety_016", "baseline_resnet50", "mao_cnn_gru", "mao_cnn_transformer",
            "prl_fusion"} <= names
    for family in ("iresnet", "swin", "hrnet", "repvgg", "resnet", "regnet", "mao", "prl"):
        assert any(model_info(n).family == family for n in SMOKE), family


def test_input_sizes_and_kinds():
    assert input_size("iresnet100") == 112 and input_size("resnet50") == 112
    assert input_size("regnety_016") == 112 and input_size("repvgg_b1") == 112
    assert input_size("baseline_resnet50") == 112
    assert input_size("hrnet_w18") == input_size("hrnet_w32") == input_size("hrnet_smoke") == 128
    assert input_size("swin_s") == 224
    assert all(input_size(n) % 32 == 0 for n in list_models() if n.startswith("hrnet"))
    assert model_kind("resnet50") == "frame"
    assert model_kind("mao_cnn_gru") == model_kind("mao_cnn_transformer_smoke") == "clip"
    assert model_kind("prl_fusion") == "sequence"
    assert clip_length("mao_cnn_gru") == 9 and clip_length("prl_fusion") == 64 and clip_length("iresnet50") == 1
    # any timm name: a frame model, 112 unless the architecture fixes its input size
    assert model_kind("resnet18") == "frame" and input_size("resnet18") == 112
    assert input_size("vit_tiny_patch16_224") == 224


def test_data_config_is_each_models_side_and_the_statistics_it_was_trained_with():
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    for name in [*list_models(), "resnet18", "vit_tiny_patch16_224"]:
        config = data_config(name)
        assert config.input_size == input_size(name) and (config.mean, config.std) == imagenet, name
        assert config.interpolation == "bilinear"
    assert data_config("swin_tiny_smoke", 96).input_size == 96  # a spec's / models.json's own side wins
    assert (data_config().mean, data_config().std) == imagenet
    image = torch.randint(0, 256, (2, 3, 40, 50), dtype=torch.uint8)
    out = transforms.model_transform("hrnet_smoke")(image)
    mean, std = torch.tensor(imagenet[0]).view(3, 1, 1), torch.tensor(imagenet[1]).view(3, 1, 1)
    resized = torch.nn.functional.interpolate(image.float(), (128, 128), mode="bilinear", antialias=True)
    assert out.shape == (2, 3, 128, 128) and out.dtype == torch.float32
    assert torch.allclose(out, (resized / 255 - mean) / std, atol=0.05)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        create_model("resnet5O", 8)
    message = str(err.value)
    assert "resnet5O" in message and "iresnet50" in message and "prl_fusion" in message
    assert "timm" in message
    for func in (input_size, model_kind):
        with pytest.raises(ValueError, match="iresnet50"):
            func("no_such_model")


def test_create_model_drops_none_and_refuses_pretrained():
    model = create_model("resnet_smoke", 5, drop_rate=None, global_pool=None)
    assert model.get_classifier().out_features == 5
    with pytest.raises(ValueError, match="load_pretrained"):
        create_model("resnet_smoke", 8, pretrained=True)
    with pytest.raises(ValueError, match="never downloads"):
        timm.create_model("iresnet_tiny", pretrained=True)


def test_plain_timm_name_is_a_baseline():
    model = create_model("resnet10t", 8).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 112, 112)).shape == (1, 8)


@pytest.mark.parametrize("name", list_models())
def test_timm_create_model_finds_registered_names(name):
    if name in BIG:
        assert timm.is_model(name)
        return
    model = timm.create_model(name, num_classes=3)
    assert model.get_classifier().out_features == 3
    assert timm.data.resolve_data_config({}, model=model)["input_size"][-1] == input_size(name)


# ------------------------------------------------------------------------------------------------ smoke models

@pytest.mark.parametrize("name", SMOKE)
def test_smoke_forward_and_train_step(name):
    torch.manual_seed(0)
    model = create_model(name, 8)
    kind = model_kind(name)
    batch, frames = (4, 1) if kind == "frame" else ((2, 9) if kind == "clip" else (2, 8))
    x = _input(name, batch, frames)
    target_shape = _output_shape(name, batch, frames, 8)
    y = torch.randint(0, 8, target_shape[:-1], generator=torch.Generator().manual_seed(1))

    model.eval()
    with torch.no_grad():
        out = model(x)
    assert out.shape == target_shape and torch.isfinite(out).all()
    for attr in ("forward_features", "forward_head"):
        assert callable(getattr(model, attr))

    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x).reshape(-1, 8), y.reshape(-1))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses)), losses
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("name", [n for n in SMOKE if model_kind(n) == "frame"])
def test_frame_models_pre_logits(name):
    model = create_model(name, 8).eval()
    with torch.no_grad():
        feats = model.forward_features(_input(name, 2))
        pre = model.forward_head(feats, pre_logits=True)
        logits = model.forward_head(feats)
    assert pre.shape == (2, model.head_hidden_size if hasattr(model, "head_hidden_size") else model.num_features)
    assert torch.allclose(model.get_classifier()(pre), logits, atol=1e-5)
    # num_classes=0 gives the pooled features: what the temporal models consume
    assert create_model(name, 0).eval()(_input(name, 2)).shape == pre.shape


# ------------------------------------------------------------------------------------------------ big models

@pytest.mark.parametrize("name", sorted(BIG_PARAMS_M))
def test_big_model_parameter_counts(name):
    # built on the meta device: same parameters, no weight init (seconds of CPU per model otherwise)
    with torch.device("meta"):
        model = create_model(name, 8)
    assert _count(model) / 1e6 == pytest.approx(BIG_PARAMS_M[name], abs=0.01)


def test_big_model_table_covers_every_big_model():
    assert set(BIG) == set(BIG_PARAMS_M)


@pytest.mark.parametrize("name,expected_m", [("iresnet50", 43.6), ("iresnet100", 65.2)])
def test_iresnet_matches_insightface(name, expected_m):
    with torch.device("meta"):
        backbone = create_model(name, 0)  # the 512-d embedding network, no classifier
    assert isinstance(backbone.get_classifier(), nn.Identity)
    assert _count(backbone) / 1e6 == pytest.approx(expected_m, rel=0.01)
    names = dict(backbone.named_parameters())
    # insightface arcface_torch attribute names, so its backbone.pth loads as is
    for key in ("conv1.weight", "prelu.weight", "layer1.0.bn1.weight", "layer1.0.downsample.0.weight",
                "layer4.2.conv2.weight", "bn2.weight", "fc.weight", "features.weight"):
        assert key in names, key
    assert names["fc.weight"].shape == (512, 512 * 7 * 7)


@pytest.mark.parametrize("name", BIG_FORWARD)
def test_big_model_forward_batch1(name):
    model = create_model(name, 8).eval()
    with torch.no_grad():
        out = model(_input(name, 1))
    assert out.shape == (1, 8) and torch.isfinite(out).all()


# ------------------------------------------------------------------------------------------------ temporal

@pytest.mark.parametrize("name", ["mao_cnn_gru_smoke", "mao_cnn_transformer_smoke", "prl_fusion_smoke"])
def test_frame_features_then_temporal_head_equals_forward(name):
    torch.manual_seed(0)
    model = create_model(name, 8).eval()
    frames = 9 if model_kind(name) == "clip" else 12
    x = _input(name, 2, frames)
    with torch.no_grad():
        direct = model(x)
        feats = model.frame_features(x.flatten(0, 1)).reshape(2, frames, -1)
        split = model.temporal_head(feats)
        all_frames = model.forward_all_frames(x)
    assert feats.shape[-1] == model.backbone_dim
    assert torch.allclose(direct, split, atol=1e-5)
    assert all_frames.shape == (2, frames, 8)
    if model_kind(name) == "clip":
        assert torch.allclose(all_frames[:, frames // 2], direct, atol=1e-5)


def test_prl_fusion_structure_follows_paper():
    model = create_model("prl_fusion", 8)
    assert model.backbone_dim == 888  # RegNetY-1.6GF pooled features
    layer = model.encoder.layers[0]
    assert len(model.encoder.layers) == 1 and layer.self_attn.num_heads == 2
    assert layer.self_attn.embed_dim == 64 and layer.linear1.out_features == 512
    assert model.head.in_features == 888 + 64 and model.head_drop.p == 0.5


def test_prl_mask_keeps_padding_out_of_attention():
    torch.manual_seed(0)
    model = create_model("prl_fusion_smoke", 8).eval()
    feats = torch.randn(1, 8, model.backbone_dim)
    mask = torch.tensor([[True] * 5 + [False] * 3])
    changed = feats.clone()
    changed[:, 5:] = torch.randn(1, 3, model.backbone_dim)
    with torch.no_grad():
        a = model.temporal_head(feats, mask)
        b = model.temporal_head(changed, mask)
    assert torch.allclose(a[:, :5], b[:, :5], atol=1e-5)


def test_mao_models_default_to_resnet50_and_two_layer_gru():
    gru = create_model("mao_cnn_gru", 8, freeze_backbone=True)
    assert gru.backbone_name == "resnet50" and gru.gru.num_layers == 2 and gru.backbone_dim == 2048
    assert create_model("mao_cnn_transformer", 8).backbone_name == "resnet50"


def test_freeze_backbone():
    model = create_model("mao_cnn_gru_smoke", 8, freeze_backbone=True).train()
    assert not model.backbone.training and model.gru.training
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loss = model(_input("mao_cnn_gru_smoke", 2)).sum()
    loss.backward()
    opt.step()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.gru.weight_ih_l0.grad is not None
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats untouched too


def test_sinusoidal_encoding_values():
    from fer_ray.models import SinusoidalPositionalEncoding

    pe = SinusoidalPositionalEncoding(6, max_len=10).pe
    assert torch.allclose(pe[0], torch.tensor([0.0, 1.0] * 3))
    assert pe[3, 0] == pytest.approx(np.sin(3.0)) and pe[3, 1] == pytest.approx(np.cos(3.0))
    assert pe[3, 2] == pytest.approx(np.sin(3.0 / 10000 ** (2 / 6)), rel=1e-5)


# ------------------------------------------------------------------------------------------------ indices

def test_clip_indices_repeat_edges():
    assert clip_indices(100, 50).tolist() == list(range(46, 55))
    assert clip_indices(100, 0).tolist() == [0] * 5 + [1, 2, 3, 4]
    assert clip_indices(100, 99).tolist() == [95, 96, 97, 98] + [99] * 5
    assert clip_indices(1, 0).tolist() == [0] * 9
    assert clip_indices(5, 0, t=5).tolist() == [0, 0, 0, 1, 2]
    batch = clip_indices(3, np.array([0, 1, 2]), t=3)
    assert batch.tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 2]]
    with pytest.raises(ValueError):
        clip_indices(5, 5)


def test_chunk_indices_pad_with_last_frame():
    idx, mask = chunk_indices(130)
    assert idx.shape == mask.shape == (3, 64)
    assert idx[0].tolist() == list(range(64)) and idx[1].tolist() == list(range(64, 128))
    assert idx[2].tolist() == [128, 129] + [129] * 62
    assert mask[:2].all() and mask[2].tolist() == [True, True] + [False] * 62
    assert mask.sum() == 130
    idx, mask = chunk_indices(128)
    assert idx.shape == (2, 64) and mask.all()
    idx, mask = chunk_indices(5, t=4)
    assert idx.tolist() == [[0, 1, 2, 3], [4, 4, 4, 4]]
    assert mask.tolist() == [[True] * 4, [True, False, False, False]]
    idx, mask = chunk_indices(0)
    assert idx.shape == (0, 64) and mask.shape == (0, 64)


# ------------------------------------------------------------------------------------------------ weights I/O

@dataclasses.dataclass
class _Cfg:
    lr: float = 0.1
    layers: tuple = (1, 2)


def _meta(name, num_classes=8, **extra):
    return {"name": name, "task": "expr", "num_classes": num_classes, "config": _Cfg(),
            "metrics": {"f1": np.float32(0.25)}, **extra}


@pytest.mark.parametrize("name,kwargs", [
    ("iresnet_tiny", {}),
    ("repvgg_smoke", {"channels": [24, 48, 96, 192], "stem_width": 24}),
    ("mao_cnn_gru_smoke", {"hidden_size": 16, "bidirectional": True}),
    ("prl_fusion_smoke", {"embed_dim": 8, "pos_embed": "sinusoidal"}),
])
def test_checkpoint_roundtrip_identical_logits(tmp_path, name, kwargs):
    torch.manual_seed(0)
    model = create_model(name, 5, **kwargs)
    model.train()
    model(_input(name, 2, 9 if model_kind(name) != "frame" else None))  # move BN running stats off init
    model.eval()
    uri = str(tmp_path / "ckpt" / "model.pt")
    save_checkpoint(uri, model, _meta(name, 5, model_kwargs=kwargs))
    loaded, meta = load_checkpoint(uri)
    assert not loaded.training
    assert meta["name"] == name and meta["num_classes"] == 5 and meta["kind"] == model_kind(name)
    assert meta["input_size"] == input_size(name) and meta["config"]["lr"] == 0.1
    assert meta["metrics"]["f1"] == pytest.approx(0.25)
    x = _input(name, 2, 9 if model_kind(name) != "frame" else None, seed=3)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_checkpoint_roundtrip_s3(s3_bucket):
    model = create_model("resnet_smoke", 8).eval()
    uri = f"{s3_bucket}/models/resnet_smoke/model.pt"
    save_checkpoint(uri, model, _meta("resnet_smoke"))
    loaded, _ = load_checkpoint(uri)
    x = _input("resnet_smoke", 2)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    fresh = create_model("resnet_smoke", 8)
    assert load_pretrained(fresh, uri) == []


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(str(tmp_path / "missing.pt"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match="not a fer-ray checkpoint"):
        load_checkpoint(str(junk))
    plain = tmp_path / "plain.pt"
    torch.save(create_model("resnet_smoke", 8).state_dict(), plain)
    with pytest.raises(ValueError, match="load_pretrained"):
        load_checkpoint(str(plain))
    with pytest.raises(ValueError, match="needs 'num_classes'"):
        save_checkpoint(str(tmp_path / "x.pt"), create_model("resnet_smoke", 8), {"name": "resnet_smoke"})
    with pytest.raises(TypeError, match="plain data"):
        save_checkpoint(str(tmp_path / "x.pt"), create_model("resnet_smoke", 8), _meta("resnet_smoke", fn=object()))


def test_load_pretrained_timm_state_dict_other_classifier(tmp_path):
    torch.manual_seed(0)
    source = timm.create_model("resnet_smoke", num_classes=1000)
    path = tmp_path / "resnet_smoke_imagenet.pth"
    torch.save({"module." + k: v for k, v in source.state_dict().items()}, path)  # DDP-style prefix
    target = create_model("resnet_smoke", 8)
    missing = load_pretrained(target, str(path))
    assert sorted(missing) == ["fc.bias", "fc.weight"]
    assert torch.equal(target.conv1.weight, source.conv1.weight)
    assert target.fc.weight.shape == (8, 128)
    # strict tolerates only the classifier: an extra tensor in the file fails
    assert sorted(load_pretrained(create_model("resnet_smoke", 8), str(path), strict=True)) == ["fc.bias", "fc.weight"]
    torch.save({**source.state_dict(), "extra.weight": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="strict load failed"):
        load_pretrained(create_model("resnet_smoke", 8), str(path), strict=True)


def test_load_pretrained_errors(tmp_path):
    model = create_model("resnet_smoke", 8)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_pretrained(model, str(tmp_path / "nope.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00\x01garbage")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        load_pretrained(model, str(junk))
    other = tmp_path / "other.pth"
    torch.save({"unrelated.weight": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match="no tensor matches"):
        load_pretrained(model, str(other))


def test_frame_checkpoint_initialises_temporal_backbone(tmp_path):
    torch.manual_seed(0)
    frame = create_model("resnet_smoke", 8)
    uri = str(tmp_path / "frame.pt")
    save_checkpoint(uri, frame, _meta("resnet_smoke"))
    clip = create_model("mao_cnn_gru_smoke", 8, backbone_pretrained=uri, freeze_backbone=True)
    assert torch.equal(clip.backbone.conv1.weight, frame.conv1.weight)
    # the same through load_pretrained on the whole temporal model (keys gain the "backbone." prefix)
    other = create_model("mao_cnn_transformer_smoke", 8)
    missing = load_pretrained(other, uri)
    assert torch.equal(other.backbone.conv1.weight, frame.conv1.weight)
    assert not any(k.startswith("backbone.") for k in missing) and "head.weight" in missing
    # rebuilding a checkpoint whose kwargs name the (possibly gone) backbone file does not re-read it
    ckpt = str(tmp_path / "clip.pt")
    save_checkpoint(ckpt, clip, _meta("mao_cnn_gru_smoke", model_kwargs={"backbone_pretrained": uri}))
    (tmp_path / "frame.pt").unlink()
    loaded, _ = load_checkpoint(ckpt)
    assert torch.equal(loaded.backbone.conv1.weight, frame.conv1.weight)


def test_insightface_style_state_dict_loads_into_iresnet(tmp_path):
    torch.manual_seed(0)
    source = create_model("iresnet_tiny", 0)  # insightface backbones have no classifier
    path = tmp_path / "backbone.pth"
    torch.save(source.state_dict(), path)
    target = create_model("iresnet_tiny", 8)
    assert sorted(load_pretrained(target, str(path), strict=True)) == ["head.bias", "head.weight"]
    source.eval()
    target.eval()
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        assert torch.allclose(target.forward_head(target.forward_features(x), pre_logits=True), source(x))


# ------------------------------------------------------------------------------------------------ RepVGG

@pytest.mark.parametrize("name", ["repvgg_smoke", "repvgg_a2"])
def test_repvgg_reparameterize_keeps_logits(name):
    torch.manual_seed(0)
    model = create_model(name, 8)
    gen = torch.Generator().manual_seed(0)
    for module in model.modules():  # non-trivial BN statistics so the fusion has something to fold
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=gen) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
            module.weight.data.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
            module.bias.data.copy_(torch.randn(module.num_features, generator=gen) * 0.1)
    model.eval()
    x = _input(name, 2 if name == "repvgg_smoke" else 1)
    with torch.no_grad():
        before = model(x)
    n_convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    fused = reparameterize(model)
    assert sum(isinstance(m, nn.Conv2d) for m in fused.modules()) < n_convs
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.stages.modules())
    with torch.no_grad():
        after = fused(x)
    assert torch.allclose(before, after, atol=1e-4), (before - after).abs().max()


def test_iresnet_grad_checkpointing_and_size_check():
    torch.manual_seed(0)
    model = create_model("iresnet_tiny", 8).eval()
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        plain = model(x)
    model.set_grad_checkpointing(True)
    out = model(x.requires_grad_())
    out.sum().backward()
    assert torch.allclose(out, plain, atol=1e-5) and x.grad is not None
    with pytest.raises(ValueError, match="img_size=128"):
        model(torch.randn(1, 3, 128, 128))
    assert create_model("iresnet_tiny", 8, img_size=128).eval()(torch.randn(1, 3, 128, 128)).shape == (1, 8)


def test_wrapped_models_save_and_load_bare_keys(tmp_path):
    model = create_model("resnet_smoke", 8).eval()
    uri = str(tmp_path / "wrapped.pt")
    save_checkpoint(uri, nn.DataParallel(model), _meta("resnet_smoke"))
    assert all(not k.startswith("module.") for k in torch.load(uri, weights_only=True)["state_dict"])
    target = nn.DataParallel(create_model("resnet_smoke", 8))
    assert load_pretrained(target, uri) == []
    assert torch.equal(target.module.conv1.weight, model.conv1.weight)


def test_repvgg_smoke_widths():
    wide = create_model("repvgg_smoke", 4, channels=[32, 64, 128, 256], stem_width=32)
    assert wide.stem.conv_kxk.conv.out_channels == 32 and wide.head.fc.in_features == 256
    assert sum(p.numel() for p in wide.parameters()) > 3 * sum(p.numel() for p in create_model("repvgg_smoke", 4).parameters())
    with pytest.raises(ValueError, match="needs 4 widths"):
        create_model("repvgg_smoke", 4, channels=[8, 16])


# ------------------------------------------------------------------------------------------------ FerCNN

@pytest.mark.parametrize("name", ["fer_cnn", "fer_cnn_smoke"])
def test_fer_cnn_sees_grey_standardised_faces(name):
    """Grey and per-image standardisation inside the model: a face and its brightness / contrast change
    give the same logits, so a grey 48-px crop and a colour photo meet on one scale in training and
    inference alike; a colour face and its grey copy (equal channels) differ only by the luma mix."""
    torch.manual_seed(0)
    model = create_model(name, 8).eval()
    x = torch.rand(3, 3, 48, 48)
    with torch.inference_mode():
        a, b = model(x), model(x * 0.5 + 0.3)
        grey = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True).expand(-1, 3, -1, -1)
        c = model(grey)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-4)
    assert model(torch.zeros(1, 3, 48, 48)).isfinite().all()  # a blank face does not divide by zero
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 8)  # any side: global pooling
