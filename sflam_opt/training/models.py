"""Split vision transformers for SFLAM, in plain torch (no timm, no torchvision).

SFLAM (arXiv 2504.09114) keeps the *embedding layer* of a vision transformer on each device and runs
the transformer blocks on the server; the uplink carries the (quantized) patch tokens. This module
builds such a split ViT:

- :class:`DeviceModel`: the patch embedding, ``Conv2d(in_chans, dim, kernel=patch, stride=patch)``
  flattened to tokens, ``(B, C, H, W) -> (B, num_patches, dim)`` (evaluated as the equivalent
  linear map of non-overlapping patches, which needs far less memory in backward on CPU).
- :class:`ServerModel`: class token, position embedding, pre-norm transformer blocks, final
  LayerNorm and a new head (LayerNorm + Linear) on the class token, ``tokens -> logits``.
- :class:`FullModel`: both in sequence, for plain federated learning (whole model on the device).

Module and parameter names follow timm's ``VisionTransformer`` so that pretrained timm weights map
one to one (:func:`load_timm_state_dict`). The split point defines the cost-model quantities of the
formulation (§1, §2): ``d = num_patches * dim`` (``ModelSpec.activation_elems``), the device model
size ``M`` (``ModelSpec.device_params``) and the per-sample compute ``c_d``/``c_s`` (from
``ModelSpec.device_flops_per_sample``/``server_flops_per_sample``).

FLOP convention (used by :func:`model_spec`): one multiply-accumulate is 2 FLOPs; only matrix
products are counted (patch-embedding convolution, linear layers, the two attention matmuls and the
head), not element-wise work (LayerNorm, softmax, GELU, bias adds, residuals) -- the same convention
as ``torch.utils.flop_counter.FlopCounterMode``. Backward is counted as 2x forward (gradients with
respect to inputs and to weights), so forward+backward = 3x forward. For the device part this is an
upper bound: its input needs no gradient, so its true backward is about 1x forward.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from sflam_opt.errors import TrainingConfigError
from sflam_opt.training.data import resize_images
from sflam_opt.validation import is_int

__all__ = [
    "PRESETS",
    "Preset",
    "ModelSpec",
    "DeviceModel",
    "ServerModel",
    "FullModel",
    "build_split_model",
    "model_spec",
    "input_size",
    "load_timm_state_dict",
]

logger = logging.getLogger(__name__)

_MLP_RATIO = 4
_LN_EPS = 1e-6  # timm's ViT LayerNorm epsilon; needed for pretrained weights to reproduce timm.


@dataclass(frozen=True)
class Preset:
    """Architecture of a split ViT preset.

    Attributes
    ----------
    image_size : int
        Default input side length, pixels (square images).
    in_chans : int
        Default number of input channels.
    patch : int
        Patch side length, pixels.
    dim : int
        Token embedding width.
    depth : int
        Number of transformer blocks (all on the server).
    heads : int
        Attention heads per block.
    timm_name : str or None
        timm model whose pretrained weights fit this preset, if any.
    """

    image_size: int
    in_chans: int
    patch: int
    dim: int
    depth: int
    heads: int
    timm_name: str | None = None


PRESETS: dict[str, Preset] = {
    # 8x8 one-channel digits: 4 patches of 4x4 (d = 4 * 64 = 256 uplink values per sample).
    # Measured on 2 CPU cores (sklearn digits, 75/25 split, SGD momentum 0.9, lr 0.05, batch 32):
    # >= 95 % test accuracy after ~12 epochs (~2 s) with fp32 or 4-bit activations, ~24 epochs at
    # 2 bits; 1 bit stalls near 40 %. Patch 2 (16 tokens) stayed below 95 % in 60 epochs.
    "vit-tiny": Preset(image_size=8, in_chans=1, patch=4, dim=64, depth=2, heads=4),
    # ViT-S/32.
    "vit-s32": Preset(
        image_size=224, in_chans=3, patch=32, dim=384, depth=12, heads=6,
        timm_name="vit_small_patch32_224",
    ),
    # ViT-B/32, the SFLAM paper's model: device part = 3*32*32*768 + 768 = 2,360,064 parameters.
    "vit-b32": Preset(
        image_size=224, in_chans=3, patch=32, dim=768, depth=12, heads=12,
        timm_name="vit_base_patch32_224",
    ),
}  # fmt: skip


@dataclass(frozen=True)
class ModelSpec:
    """What the cost model needs to know about a split ViT (docs/formulation.md §1-§2).

    Attributes
    ----------
    preset : str
        Preset name.
    image_size, in_chans, patch, dim, depth, heads, num_classes : int
        Architecture (pixels, channels, pixels, width, blocks, heads, classes).
    num_patches : int
        Tokens produced by the device part per sample, ``(image_size // patch) ** 2``.
    activation_elems : int
        Values per sample sent uplink, ``num_patches * dim`` (the formulation's ``d``).
    device_params, server_params : int
        Trainable parameters of each part (the device count is the formulation's ``M``).
    device_flops_per_sample, server_flops_per_sample : float
        Forward+backward FLOPs per sample of each part (module docstring gives the convention).
    """

    preset: str
    image_size: int
    in_chans: int
    patch: int
    dim: int
    depth: int
    heads: int
    num_classes: int
    num_patches: int
    activation_elems: int
    device_params: int
    server_params: int
    device_flops_per_sample: float
    server_flops_per_sample: float

    @property
    def device_forward_flops(self) -> float:
        """Forward FLOPs per sample of the device part."""
        return self.device_flops_per_sample / 3.0

    @property
    def server_forward_flops(self) -> float:
        """Forward FLOPs per sample of the server part."""
        return self.server_flops_per_sample / 3.0


# --------------------------------------------------------------------------------------------
# Modules


class DeviceModel(nn.Module):
    """Device part: patch embedding, ``(B, C, H, W) -> (B, num_patches, dim)``.

    Parameters
    ----------
    in_chans : int
        Input channels ``C``.
    dim : int
        Token width.
    patch : int
        Patch side length, pixels; ``H`` and ``W`` must be multiples of it.
    """

    def __init__(self, in_chans: int, dim: int, patch: int, image_size: int | None = None) -> None:
        super().__init__()
        self.image_size = image_size
        self.patch_embed = _PatchEmbed(in_chans, dim, patch)

    def forward(self, x: Tensor) -> Tensor:
        """Embed images ``x`` (B, C, H, W) into tokens (B, (S/patch)**2, dim).

        Images whose side is not ``image_size`` (when set) are first resized to ``S = image_size``
        by :func:`sflam_opt.training.data.resize_images`, the same deterministic map on every
        device; otherwise ``S = H = W``.
        """
        if self.image_size is not None:
            x = resize_images(x, self.image_size)
        return self.patch_embed(x)


class _PatchEmbed(nn.Module):
    def __init__(self, in_chans: int, dim: int, patch: int) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        p = self.patch
        if h % p or w % p or c != self.proj.in_channels:
            raise TrainingConfigError(
                f"input of shape {tuple(x.shape)} does not fit the patch embedding; give "
                f"(B, {self.proj.in_channels}, H, W) images with H and W multiples of {p}"
            )
        # A stride-p, kernel-p convolution is exactly a linear map of non-overlapping patches; this
        # form computes the same tokens with the Conv2d's own weights (timm layout kept) but its
        # backward is one matmul, whereas the CPU oneDNN convolution backward allocates a
        # ~75-100 MB workspace for ViT-B/32 -- several times the rest of the device step
        # (measured with sflam_opt.training.memory).
        patches = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        patches = patches.reshape(b, (h // p) * (w // p), c * p * p)
        return nn.functional.linear(
            patches, self.proj.weight.reshape(self.proj.out_channels, -1), self.proj.bias
        )


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        # Explicit matmuls, not F.scaled_dot_product_attention: FlopCounterMode does not count the
        # fused CPU kernel, and the FLOP cross-check test relies on every matmul being visible.
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=_LN_EPS)
        self.attn = _Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=_LN_EPS)
        self.mlp = _Mlp(dim, _MLP_RATIO * dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ServerModel(nn.Module):
    """Server part: class token, position embedding, transformer blocks, final norm and head.

    Parameters
    ----------
    num_patches : int
        Tokens per sample produced by the device part.
    dim : int
        Token width.
    depth : int
        Number of pre-norm transformer blocks.
    heads : int
        Attention heads; must divide ``dim``.
    num_classes : int
        Output classes of the (new) head.
    """

    def __init__(self, num_patches: int, dim: int, depth: int, heads: int, num_classes: int):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim))
        self.blocks = nn.ModuleList(_Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=_LN_EPS)
        # New task head, as in SFLAM's released code: LayerNorm + Linear on the class token.
        self.head = nn.Sequential(nn.LayerNorm(dim, eps=_LN_EPS), nn.Linear(dim, num_classes))

    def forward(self, tokens: Tensor) -> Tensor:
        """Map tokens (B, num_patches, dim) to logits (B, num_classes)."""
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        x = torch.cat([cls, tokens], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


class FullModel(nn.Module):
    """Device and server parts in sequence (plain FL trains the whole model on each device).

    Parameters
    ----------
    device_model : DeviceModel
        Patch embedding (shared by reference, not copied).
    server_model : ServerModel
        Transformer body and head (shared by reference, not copied).
    """

    def __init__(self, device_model: DeviceModel, server_model: ServerModel) -> None:
        super().__init__()
        self.device_model = device_model
        self.server_model = server_model

    def forward(self, x: Tensor) -> Tensor:
        """Map images (B, C, H, W) to logits (B, num_classes)."""
        return self.server_model(self.device_model(x))


def _init_weights(server: ServerModel) -> None:
    # timm's ViT initialisation: normal(0.02) linears and position embedding truncated at +-2
    # (absolute, i.e. 100 sigma, as timm's trunc_normal_(std=.02) defaults), near-zero class token;
    # the conv keeps PyTorch's default (as timm's PatchEmbed). normal_ + clamp_ draws the same
    # distribution as nn.init.trunc_normal_ but is ~3x faster (3.6 s -> ~1 s for ViT-B/32).
    with torch.no_grad():
        server.pos_embed.normal_(0.0, 0.02).clamp_(-2.0, 2.0)
        server.cls_token.normal_(0.0, 1e-6)
        for module in server.modules():
            if isinstance(module, nn.Linear):
                module.weight.normal_(0.0, 0.02).clamp_(-2.0, 2.0)
                module.bias.zero_()


# --------------------------------------------------------------------------------------------
# Specs and builders


def _resolve(
    preset: str, num_classes: int, image_size: int | None, in_chans: int | None
) -> tuple[Preset, int, int]:
    if preset not in PRESETS:
        raise TrainingConfigError(
            f"model preset {preset!r} is unknown; choose one of: {', '.join(PRESETS)}"
        )
    p = PRESETS[preset]
    size = p.image_size if image_size is None else image_size
    chans = p.in_chans if in_chans is None else in_chans
    for name, value in (("num_classes", num_classes), ("image_size", size), ("in_chans", chans)):
        if not is_int(value) or value < 1:
            raise TrainingConfigError(f"{name}={value!r} is invalid; give a positive integer")
    if size % p.patch:
        raise TrainingConfigError(
            f"image_size={size} is not a multiple of the {preset} patch size {p.patch}; "
            f"resize images to a multiple of {p.patch} (default {p.image_size})"
        )
    return p, size, chans


def input_size(preset: str, data_size: int, override: int | None = None) -> int:
    """Side length (pixels) the split model sees for images of side ``data_size``.

    ``override`` (``--image-size``) when given; otherwise the preset's image size when the data are
    smaller (so CIFAR-10's 32 px images reach ViT-B/32 and S/32 at 224 px, 7 x 7 = 49 tokens, as
    in the SFLAM paper), else the data's own size. Images are never downscaled by default.

    Raises
    ------
    TrainingConfigError
        Unknown preset, or an override that is not a positive multiple of the patch size.
    """
    if preset not in PRESETS:
        raise TrainingConfigError(
            f"model preset {preset!r} is unknown; choose one of: {', '.join(PRESETS)}"
        )
    p = PRESETS[preset]
    if override is None:
        return max(p.image_size, int(data_size))
    if not is_int(override) or override < p.patch:
        raise TrainingConfigError(
            f"--image-size: invalid value {override!r}; give a multiple of the {preset} patch "
            f"size {p.patch} (default {p.image_size})"
        )
    if override % p.patch:
        raise TrainingConfigError(
            f"--image-size: {override} is not a multiple of the {preset} patch size {p.patch}; "
            f"give a multiple of {p.patch} (default {p.image_size})"
        )
    return override


def model_spec(
    preset: str = "vit-tiny",
    *,
    num_classes: int = 10,
    image_size: int | None = None,
    in_chans: int | None = None,
) -> ModelSpec:
    """Describe a split ViT analytically, without building weights.

    Parameters
    ----------
    preset : str
        A key of :data:`PRESETS`.
    num_classes : int
        Classes of the new head.
    image_size, in_chans : int, optional
        Override the preset's input side length (pixels) and channels.

    Returns
    -------
    ModelSpec
        Sizes, parameter counts and forward+backward FLOPs per sample (module docstring).

    Raises
    ------
    TrainingConfigError
        Unknown preset or invalid override.
    """
    p, size, chans = _resolve(preset, num_classes, image_size, in_chans)
    num_patches = (size // p.patch) ** 2
    d, n_tok, hidden = p.dim, num_patches + 1, _MLP_RATIO * p.dim

    device_params = chans * p.patch**2 * d + d
    block_params = (
        2 * 2 * d  # norm1, norm2
        + 3 * d * d + 3 * d  # qkv
        + d * d + d  # proj
        + d * hidden + hidden + hidden * d + d  # mlp
    )  # fmt: skip
    server_params = (
        d  # cls token
        + n_tok * d  # position embedding
        + p.depth * block_params
        + 2 * d  # final norm
        + 2 * d
        + d * num_classes
        + num_classes  # head norm + linear
    )

    device_fwd = 2.0 * num_patches * d * chans * p.patch**2
    block_fwd = 2.0 * n_tok * d * (3 * d + d + 2 * hidden) + 2.0 * 2 * n_tok * n_tok * d
    server_fwd = p.depth * block_fwd + 2.0 * d * num_classes

    return ModelSpec(
        preset=preset,
        image_size=size,
        in_chans=chans,
        patch=p.patch,
        dim=d,
        depth=p.depth,
        heads=p.heads,
        num_classes=num_classes,
        num_patches=num_patches,
        activation_elems=num_patches * d,
        device_params=device_params,
        server_params=server_params,
        device_flops_per_sample=3.0 * device_fwd,
        server_flops_per_sample=3.0 * server_fwd,
    )


def build_split_model(
    preset: str = "vit-tiny",
    *,
    num_classes: int = 10,
    image_size: int | None = None,
    in_chans: int | None = None,
    pretrained: bool = False,
    seed: int = 0,
    weights_path: str | os.PathLike[str] | None = None,
) -> tuple[DeviceModel, ServerModel, ModelSpec]:
    """Build a split ViT (device part, server part) and its spec.

    Parameters
    ----------
    preset : str
        A key of :data:`PRESETS`.
    num_classes : int
        Classes of the new head (always freshly initialised).
    image_size, in_chans : int, optional
        Override the preset's input side length (pixels) and channels.
    pretrained : bool
        Copy timm ImageNet weights into the patch embedding and transformer body. Needs the
        optional ``timm`` extra and locally available weights (``weights_path`` or timm's cache).
    seed : int
        Seed of the random initialisation; same seed, identical weights. The global torch RNG is
        left untouched.
    weights_path : path, optional
        A local timm checkpoint (``.safetensors``, ``.pth``/``.bin``, or ``.npz`` with timm
        installed) for ``pretrained=True``.

    Returns
    -------
    (DeviceModel, ServerModel, ModelSpec)

    Raises
    ------
    TrainingConfigError
        Unknown preset, invalid overrides, or pretrained weights unavailable.
    """
    spec = model_spec(preset, num_classes=num_classes, image_size=image_size, in_chans=in_chans)
    if weights_path is not None and not pretrained:
        raise TrainingConfigError(
            "weights_path was given without pretrained=True; pass pretrained=True (--pretrained) "
            "or drop weights_path"
        )
    if not is_int(seed) or seed < 0:
        raise TrainingConfigError(f"seed={seed!r} is invalid; give a non-negative integer")
    seed = int(seed)
    # Read the checkpoint first: a missing or bad file fails before seconds of initialisation.
    state_dict = _load_pretrained_state_dict(preset, weights_path) if pretrained else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        device = DeviceModel(spec.in_chans, spec.dim, spec.patch, spec.image_size)
        server = ServerModel(spec.num_patches, spec.dim, spec.depth, spec.heads, num_classes)
        _init_weights(server)
    if state_dict is not None:
        load_timm_state_dict(device, server, state_dict)
        logger.info("loaded pretrained %s weights into the split model", preset)
    return device, server, spec


# --------------------------------------------------------------------------------------------
# Pretrained weights


def load_timm_state_dict(
    device: DeviceModel, server: ServerModel, state_dict: Mapping[str, Tensor]
) -> None:
    """Copy a timm ``VisionTransformer`` state dict into a split model, in place.

    ``patch_embed.*`` goes to the device part; ``cls_token``, ``pos_embed``, ``blocks.*`` and
    ``norm.*`` go to the server part. timm's ``head.*`` is dropped (the task head is new). A
    position embedding for another grid size is resampled bicubically, as timm does.

    Parameters
    ----------
    device : DeviceModel
        Receives ``patch_embed.proj.weight`` and ``.bias``.
    server : ServerModel
        Receives everything else except its head.
    state_dict : mapping of str to Tensor
        timm key names (``blocks.0.attn.qkv.weight``, ...).

    Raises
    ------
    TrainingConfigError
        A key is missing, or a shape does not match the split model (e.g. another width, depth or
        number of input channels).
    """
    sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
    targets: dict[str, Tensor] = {}
    for name, tensor in device.state_dict().items():
        targets[name] = tensor
    for name, tensor in server.state_dict().items():
        if not name.startswith("head."):
            targets[name] = tensor
    missing = [k for k in targets if k not in sd]
    if missing:
        raise TrainingConfigError(
            f"pretrained state dict lacks {len(missing)} key(s), e.g. {missing[0]!r}; give a timm "
            "VisionTransformer checkpoint of the same architecture"
        )
    with torch.no_grad():
        for name, target in targets.items():
            src = sd[name]
            if name == "pos_embed" and src.shape != target.shape:
                src = _resample_pos_embed(src, target.shape[1] - 1)
            if src.shape != target.shape:
                raise TrainingConfigError(
                    f"pretrained weight {name!r} has shape {tuple(src.shape)} but the split model "
                    f"needs {tuple(target.shape)}; use the preset (and in_chans) the weights were "
                    "trained for"
                )
            target.copy_(src.to(target.dtype))


def _resample_pos_embed(pos: Tensor, num_patches: int) -> Tensor:
    grid_old = math.isqrt(pos.shape[1] - 1)
    grid_new = math.isqrt(num_patches)
    if grid_old**2 != pos.shape[1] - 1 or grid_new**2 != num_patches:
        return pos  # not a square grid with one class token; the shape check reports it
    cls, grid = pos[:, :1], pos[:, 1:]
    dim = pos.shape[-1]
    grid = grid.reshape(1, grid_old, grid_old, dim).permute(0, 3, 1, 2).float()
    grid = nn.functional.interpolate(
        grid, size=(grid_new, grid_new), mode="bicubic", align_corners=False
    )
    grid = grid.permute(0, 2, 3, 1).reshape(1, num_patches, dim)
    return torch.cat([cls.float(), grid], dim=1)


_PRETRAINED_HELP = (
    "pip install 'sflam-opt[timm]' and put the {name} weights in timm's Hugging Face cache "
    "(~/.cache/huggingface/hub) or pass --weights FILE (.safetensors/.pth/.npz)"
)


def _load_pretrained_state_dict(
    preset: str, weights_path: str | os.PathLike[str] | None
) -> dict[str, Tensor]:
    timm_name = PRESETS[preset].timm_name
    if timm_name is None:
        raise TrainingConfigError(
            f"pretrained=True is unsupported for model preset {preset!r}; use one of: "
            + ", ".join(k for k, v in PRESETS.items() if v.timm_name)
        )
    help_text = _PRETRAINED_HELP.format(name=timm_name)
    if weights_path is not None:
        path = Path(weights_path)
        if not path.is_file():
            raise TrainingConfigError(f"weights file {str(path)!r} does not exist; {help_text}")
        if path.suffix != ".npz":
            return _read_checkpoint(path, help_text)
    try:
        import timm  # noqa: PLC0415  (optional extra)
    except ImportError:
        raise TrainingConfigError(
            f"pretrained weights need the timm package; {help_text}"
        ) from None

    overlay: dict[str, str] = {}
    if weights_path is not None:
        overlay["file"] = str(weights_path)
    else:
        cached = _find_in_hf_cache(timm, timm_name)
        if cached is None:
            raise TrainingConfigError(f"no local {timm_name} weights found; {help_text}")
        overlay["file"] = cached
    try:
        model = timm.create_model(
            timm_name, pretrained=True, pretrained_cfg_overlay=overlay, num_classes=0
        )
    except Exception as exc:  # timm raises many types for unreadable checkpoints
        raise TrainingConfigError(
            f"timm could not load {timm_name} weights from {overlay['file']!r} "
            f"({type(exc).__name__}); {help_text}"
        ) from exc
    return dict(model.state_dict())


def _find_in_hf_cache(timm_module: object, timm_name: str) -> str | None:
    """Path of timm's cached checkpoint for ``timm_name``, looked up offline, or None."""
    try:
        from huggingface_hub import try_to_load_from_cache  # noqa: PLC0415

        cfg = timm_module.models.get_pretrained_cfg(timm_name)  # type: ignore[attr-defined]
        hub_id = getattr(cfg, "hf_hub_id", None)
    except Exception:  # noqa: BLE001 -- any failure means "not available locally"
        return None
    if not hub_id:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(hub_id, filename)
        if isinstance(found, str):
            return found
    return None


def _read_checkpoint(path: Path, help_text: str) -> dict[str, Tensor]:
    try:
        if path.suffix == ".safetensors":
            try:
                from safetensors.torch import load_file  # noqa: PLC0415
            except ImportError:
                raise TrainingConfigError(
                    f"reading {path.name} needs the safetensors package; {help_text}"
                ) from None
            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except TrainingConfigError:
        raise
    except Exception as exc:  # corrupt or foreign file
        raise TrainingConfigError(
            f"weights file {str(path)!r} is unreadable ({type(exc).__name__}); {help_text}"
        ) from exc
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise TrainingConfigError(f"weights file {str(path)!r} holds no state dict; {help_text}")
    return sd
