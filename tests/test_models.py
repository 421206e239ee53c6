"""Split ViT models: parameter counts, shapes, FLOP accounting, seeding and timm weight mapping."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from sflam_opt.errors import TrainingConfigError
from sflam_opt.training.models import (
    PRESETS,
    DeviceModel,
    FullModel,
    Preset,
    ServerModel,
    build_split_model,
    load_timm_state_dict,
    model_spec,
)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def vit_b32() -> tuple[DeviceModel, ServerModel, object]:
    return build_split_model("vit-b32")


def test_vit_b32_device_part_is_exactly_the_patch_embedding(vit_b32):
    device, server, spec = vit_b32
    assert _count(device) == 2_360_064 == 3 * 32 * 32 * 768 + 768
    assert spec.device_params == 2_360_064
    assert spec.activation_elems == 49 * 768 == 37_632
    # ViT-B/32 body (timm: 88.2 M with a 1000-class head) + our LayerNorm/Linear 10-class head.
    assert _count(server) == spec.server_params
    assert (spec.image_size, spec.in_chans, spec.patch, spec.dim, spec.depth, spec.heads) == (
        224,
        3,
        32,
        768,
        12,
        12,
    )


@pytest.mark.parametrize("preset", sorted(set(PRESETS) - {"vit-b32"}))
def test_spec_parameter_counts_match_built_models(preset):
    device, server, spec = build_split_model(preset, num_classes=7)
    assert _count(device) == spec.device_params
    assert _count(server) == spec.server_params
    assert spec == model_spec(preset, num_classes=7)


def test_vit_s32_preset_is_vit_small_patch32():
    spec = model_spec("vit-s32")
    assert (spec.image_size, spec.patch, spec.dim, spec.depth, spec.heads) == (224, 32, 384, 12, 6)


def test_shapes_and_overrides_for_cifar_sized_input():
    device, server, spec = build_split_model("vit-tiny", image_size=32, in_chans=3, num_classes=100)
    x = torch.randn(5, 3, 32, 32)
    tokens = device(x)
    assert tokens.shape == (5, spec.num_patches, spec.dim) == (5, 64, 64)
    assert server(tokens).shape == (5, 100)
    assert spec.activation_elems == 64 * 64


def test_patch_embedding_equals_the_convolution_it_holds():
    device, _, spec = build_split_model("vit-tiny", image_size=16, in_chans=3)
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    reference = device.patch_embed.proj(x).flatten(2).transpose(1, 2)
    torch.testing.assert_close(device(x), reference, rtol=1e-5, atol=1e-6)
    assert isinstance(device.patch_embed.proj, nn.Conv2d)


def test_full_model_is_device_then_server():
    device, server, spec = build_split_model("vit-tiny")
    full = FullModel(device, server)
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(full(x), server(device(x)))
    assert _count(full) == spec.device_params + spec.server_params


def test_same_seed_same_weights_and_global_rng_untouched():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    d1, s1, _ = build_split_model("vit-tiny", seed=5)
    after = torch.rand(1)
    assert torch.equal(before, after)  # building consumed no global randomness
    d2, s2, _ = build_split_model("vit-tiny", seed=5)
    d3, s3, _ = build_split_model("vit-tiny", seed=6)
    for a, b in zip(
        [*d1.state_dict().values(), *s1.state_dict().values()],
        [*d2.state_dict().values(), *s2.state_dict().values()],
        strict=True,
    ):
        assert torch.equal(a, b)
    assert not torch.equal(s1.blocks[0].attn.qkv.weight, s3.blocks[0].attn.qkv.weight)
    assert not torch.equal(d1.patch_embed.proj.weight, d3.patch_embed.proj.weight)


@pytest.mark.parametrize(
    ("preset", "kwargs"),
    [
        ("vit-tiny", {}),
        ("vit-tiny", {"image_size": 16, "in_chans": 3, "num_classes": 4}),
        ("vit-s32", {"image_size": 64}),
        ("vit-b32", {}),
    ],
)
def test_analytic_forward_flops_match_flop_counter(preset, kwargs):
    spec = model_spec(preset, **kwargs)
    # Meta tensors: same modules and ops, no memory or arithmetic, so ViT-B/32 costs nothing.
    with torch.device("meta"):
        device = DeviceModel(spec.in_chans, spec.dim, spec.patch)
        server = ServerModel(spec.num_patches, spec.dim, spec.depth, spec.heads, spec.num_classes)
        x = torch.empty(2, spec.in_chans, spec.image_size, spec.image_size)
    with FlopCounterMode(display=False) as fc_device:
        tokens = device(x)
    with FlopCounterMode(display=False) as fc_server:
        logits = server(tokens)
    assert logits.shape == (2, spec.num_classes)
    assert fc_device.get_total_flops() == 2 * spec.device_forward_flops
    assert fc_server.get_total_flops() == 2 * spec.server_forward_flops
    assert spec.device_flops_per_sample == 3 * spec.device_forward_flops
    assert spec.server_flops_per_sample == 3 * spec.server_forward_flops


def test_backward_convention_is_exact_for_server_and_an_upper_bound_for_device():
    device, server, spec = build_split_model("vit-tiny")
    x = torch.randn(4, 1, 8, 8)
    tokens = device(x)
    smashed = tokens.detach().requires_grad_(True)  # SFL: the token gradient is sent back
    loss = server(smashed).sum()
    with FlopCounterMode(display=False) as fc_server:
        loss.backward()
    with FlopCounterMode(display=False) as fc_device:
        tokens.backward(smashed.grad)
    # Server backward = 2x forward exactly (input and weight gradient of every matmul), so the
    # spec's forward+backward figure is exact for it; the device part needs no input gradient, so
    # its true backward is 1x forward and the spec's 3x forward is an upper bound.
    assert fc_server.get_total_flops() == 4 * 2 * spec.server_forward_flops
    assert fc_device.get_total_flops() == 4 * spec.device_forward_flops


def test_unknown_preset_lists_valid_names():
    with pytest.raises(TrainingConfigError, match="vit-tiny.*vit-s32.*vit-b32"):
        build_split_model("vit-huge")
    with pytest.raises(TrainingConfigError, match="vit-l16"):
        model_spec("vit-l16")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"image_size": 30}, "image_size"),
        ({"image_size": 0}, "image_size"),
        ({"in_chans": 0}, "in_chans"),
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": 2.5}, "num_classes"),
        ({"seed": -1}, "seed"),
    ],
)
def test_invalid_overrides_are_rejected(kwargs, field):
    with pytest.raises(TrainingConfigError, match=field) as info:
        build_split_model("vit-tiny", **kwargs)
    assert "\n" not in str(info.value)


def test_wrong_input_shape_raises_config_error():
    device, _, _ = build_split_model("vit-tiny")
    assert device(torch.randn(2, 1, 10, 10)).shape == (2, 4, 64)  # resized to the model's 8 px
    with pytest.raises(TrainingConfigError, match="multiples of 4"):
        DeviceModel(1, 64, 4)(torch.randn(2, 1, 10, 10))  # no input size: no resize
    with pytest.raises(TrainingConfigError, match=r"\(B, 1, H, W\)"):
        device(torch.randn(2, 3, 8, 8))


# ---------------------------------------------------------------------------------------------
# timm weight mapping, tested without timm: a state dict with timm's key names and a reference
# forward pass written from timm's VisionTransformer maths.


def _timm_state_dict(chans: int, patch: int, dim: int, depth: int, grid: int, seed: int):
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=g) * 0.1

    sd = {
        "patch_embed.proj.weight": r(dim, chans, patch, patch),
        "patch_embed.proj.bias": r(dim),
        "cls_token": r(1, 1, dim),
        "pos_embed": r(1, grid * grid + 1, dim),
        "norm.weight": 1 + r(dim),
        "norm.bias": r(dim),
        "head.weight": r(1000, dim),
        "head.bias": r(1000),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        sd |= {
            b + "norm1.weight": 1 + r(dim),
            b + "norm1.bias": r(dim),
            b + "attn.qkv.weight": r(3 * dim, dim),
            b + "attn.qkv.bias": r(3 * dim),
            b + "attn.proj.weight": r(dim, dim),
            b + "attn.proj.bias": r(dim),
            b + "norm2.weight": 1 + r(dim),
            b + "norm2.bias": r(dim),
            b + "mlp.fc1.weight": r(4 * dim, dim),
            b + "mlp.fc1.bias": r(4 * dim),
            b + "mlp.fc2.weight": r(dim, 4 * dim),
            b + "mlp.fc2.bias": r(dim),
        }
    return sd


def _timm_reference_features(sd: dict[str, Tensor], x: Tensor, depth: int, heads: int) -> Tensor:
    """timm VisionTransformer.forward_features(x)[:, 0] (class token after the final norm)."""
    f = nn.functional
    w = sd["patch_embed.proj.weight"]
    t = f.conv2d(x, w, sd["patch_embed.proj.bias"], stride=w.shape[-1]).flatten(2).transpose(1, 2)
    b, _, dim = t.shape
    t = torch.cat([sd["cls_token"].expand(b, -1, -1), t], dim=1) + sd["pos_embed"]
    for i in range(depth):
        p = f"blocks.{i}."
        h = f.layer_norm(t, (dim,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
        qkv = f.linear(h, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"])
        q, k, v = qkv.reshape(b, -1, 3, heads, dim // heads).permute(2, 0, 3, 1, 4).unbind(0)
        a = f.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, -1, dim)
        t = t + f.linear(a, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        h = f.layer_norm(t, (dim,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
        h = f.linear(f.gelu(f.linear(h, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])),
                     sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])  # fmt: skip
        t = t + h
    return f.layer_norm(t, (dim,), sd["norm.weight"], sd["norm.bias"], eps=1e-6)[:, 0]


def test_timm_state_dict_loads_exactly_and_reproduces_timm_features():
    # vit-tiny geometry (4x4 patches, 64 wide, 2 blocks, 4 heads) on 8x8 one-channel input.
    device, server, spec = build_split_model("vit-tiny", num_classes=3)
    sd = _timm_state_dict(spec.in_chans, spec.patch, spec.dim, spec.depth, 2, seed=3)
    head_before = {k: v.clone() for k, v in server.head.state_dict().items()}
    load_timm_state_dict(device, server, sd)

    assert torch.equal(device.patch_embed.proj.weight, sd["patch_embed.proj.weight"])
    loaded = {f"patch_embed.{k}": v for k, v in device.patch_embed.state_dict().items()}
    loaded |= {k: v for k, v in server.state_dict().items() if not k.startswith("head.")}
    assert set(loaded) == set(sd) - {"head.weight", "head.bias"}
    for key, value in loaded.items():
        assert torch.equal(value, sd[key]), key
    for key, value in server.head.state_dict().items():
        assert torch.equal(value, head_before[key])  # the task head stays new

    features: list[Tensor] = []
    server.head.register_forward_hook(lambda m, inp, out: features.append(inp[0]))
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        server(device(x))
        expected = _timm_reference_features(sd, x, spec.depth, spec.heads)
    torch.testing.assert_close(features[0], expected, rtol=1e-4, atol=1e-5)


def test_timm_position_embedding_is_resampled_for_another_grid():
    device, server, spec = build_split_model("vit-tiny", image_size=16)  # 4x4 grid
    sd = _timm_state_dict(spec.in_chans, spec.patch, spec.dim, spec.depth, 2, seed=5)  # 2x2 grid
    load_timm_state_dict(device, server, sd)
    assert server.pos_embed.shape == (1, 17, spec.dim)
    assert torch.equal(server.pos_embed[:, 0], sd["pos_embed"][:, 0])  # class slot untouched
    # Bicubic upsampling of a constant grid is that constant.
    sd["pos_embed"][:, 1:] = 0.25
    load_timm_state_dict(device, server, sd)
    torch.testing.assert_close(server.pos_embed[:, 1:], torch.full((1, 16, spec.dim), 0.25))


def test_timm_state_dict_mismatches_are_reported():
    device, server, spec = build_split_model("vit-tiny")
    sd = _timm_state_dict(spec.in_chans, spec.patch, spec.dim, spec.depth, 2, seed=0)
    missing = dict(sd)
    del missing["blocks.1.mlp.fc2.bias"]
    with pytest.raises(TrainingConfigError, match="lacks 1 key"):
        load_timm_state_dict(device, server, missing)
    wrong = _timm_state_dict(3, spec.patch, spec.dim, spec.depth, 2, seed=0)  # RGB weights
    with pytest.raises(TrainingConfigError, match="patch_embed.proj.weight.*in_chans"):
        load_timm_state_dict(device, server, wrong)


def test_pretrained_from_a_local_checkpoint_file(tmp_path, monkeypatch):
    # A small preset that claims timm weights, so the whole file route runs in milliseconds.
    monkeypatch.setitem(PRESETS, "vit-mini", Preset(16, 3, 8, 32, 2, 2, timm_name="vit_mini"))
    src_device, src_server, _ = build_split_model("vit-mini", seed=1)
    # timm layout: our module names are timm's, except the new head (timm's has 1000 classes).
    sd = {f"patch_embed.{k}": v for k, v in src_device.patch_embed.state_dict().items()}
    sd |= {k: v for k, v in src_server.state_dict().items() if not k.startswith("head.")}
    sd |= {"head.weight": torch.zeros(1000, 32), "head.bias": torch.zeros(1000)}
    path = tmp_path / "vit_mini.pth"
    torch.save({"state_dict": sd}, path)  # a training checkpoint wrapping the state dict

    device, server, _ = build_split_model("vit-mini", pretrained=True, weights_path=path, seed=0)
    _, fresh_server, _ = build_split_model("vit-mini", seed=0)
    assert torch.equal(device.patch_embed.proj.weight, src_device.patch_embed.proj.weight)
    assert torch.equal(server.pos_embed, src_server.pos_embed)
    assert torch.equal(server.blocks[1].mlp.fc2.weight, src_server.blocks[1].mlp.fc2.weight)
    assert torch.equal(server.head[1].weight, fresh_server.head[1].weight)  # new, seeded head


def test_pretrained_errors_are_one_line_and_actionable(tmp_path):
    with pytest.raises(TrainingConfigError, match="unsupported for model preset 'vit-tiny'"):
        build_split_model("vit-tiny", pretrained=True)
    with pytest.raises(TrainingConfigError, match="does not exist.*sflam-opt\\[timm\\]"):
        build_split_model("vit-b32", pretrained=True, weights_path=tmp_path / "nope.pth")
    with pytest.raises(TrainingConfigError, match="pretrained=True"):
        build_split_model("vit-b32", weights_path=tmp_path / "nope.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingConfigError, match="unreadable") as info:
        build_split_model("vit-b32", pretrained=True, weights_path=garbage)
    assert "\n" not in str(info.value)


def test_pretrained_without_timm_or_weights_says_how_to_get_them():
    try:
        import timm  # noqa: F401
    except ImportError:
        with pytest.raises(TrainingConfigError, match=r"pip install 'sflam-opt\[timm\]'"):
            build_split_model("vit-b32", pretrained=True)
    else:  # timm present but (offline) no cached weights: still a one-line config error
        pytest.skip("timm installed; its cache may hold weights")


def test_vit_b32_cost_model_numbers_are_consistent(vit_b32):
    _, _, spec = vit_b32
    assert spec.num_patches == (224 // 32) ** 2
    assert spec.device_forward_flops == 2 * 49 * 768 * 3 * 32 * 32
    # ~4.4 GMACs per image for ViT-B/32 (as reported by timm / fvcore).
    assert math.isclose(spec.server_forward_flops / 2, 4.37e9, rel_tol=0.03)


def test_input_size_upscales_to_the_preset_and_honours_an_override():
    from sflam_opt.training.models import input_size

    assert input_size("vit-b32", 32) == 224 and input_size("vit-s32", 32) == 224
    assert input_size("vit-tiny", 8) == 8 and input_size("vit-tiny", 32) == 32  # never down
    assert input_size("vit-b32", 32, 64) == 64
    with pytest.raises(TrainingConfigError, match="--image-size: 100 is not a multiple"):
        input_size("vit-b32", 32, 100)
    device, _, spec = build_split_model("vit-b32", image_size=224)
    with torch.no_grad():
        tokens = device(torch.randn(1, 3, 32, 32))
    assert tokens.shape == (1, 49, 768) and spec.activation_elems == 37_632


def test_train_weights_option_loads_a_state_dict_file(tmp_path, monkeypatch):
    from test_data import write_fake_cifar

    from sflam_opt.training import TrainConfig, train

    monkeypatch.setitem(PRESETS, "vit-mini", Preset(16, 3, 8, 32, 2, 2, timm_name="vit_mini"))
    src_device, src_server, _ = build_split_model("vit-mini", seed=1)
    sd = {f"patch_embed.{k}": v for k, v in src_device.patch_embed.state_dict().items()}
    sd |= {k: v for k, v in src_server.state_dict().items() if not k.startswith("head.")}
    path = tmp_path / "vit_mini.pt"
    torch.save(sd, path)
    write_fake_cifar(tmp_path / "cifar", per_file=4)
    config = TrainConfig(
        protocol="sfl", model="vit-mini", dataset="cifar10", data_dir=str(tmp_path / "cifar"),
        devices=2, rounds=1, local_iters=1, batch_size=2, lr=1e-30, momentum=0.0,
        solver="equal", alpha=100.0, threads=1, weights=str(path),
    )  # fmt: skip
    assert config.pretrained  # --weights implies --pretrained
    res = train(config)
    assert res.spec.image_size == 32  # 32 px data are not downscaled to the preset's 16
    trained = res.model.device_model.patch_embed.proj.weight
    torch.testing.assert_close(trained, src_device.patch_embed.proj.weight)
    with pytest.raises(TrainingConfigError, match="weights: invalid value"):
        TrainConfig(weights=str(tmp_path / "missing.pt"))
