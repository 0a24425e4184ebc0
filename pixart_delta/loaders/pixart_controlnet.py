"""PixArt-δ ControlNet files: layout detection, diffusers adapter -> original names, and whether a ControlNet
fits a given PixArt base (docs/facts/pixart.md §5). Pure torch, no ComfyUI.

Layouts read:
- original full model (PixArt-XL-2-{512,1024}-ControlNet.pth, with or without the `state_dict` wrapper):
  `base_model.*` + `controlnet.{i}.copied_block.*`, `controlnet.0.before_proj.*`, `controlnet.{i}.after_proj.*`;
- a `controlnet.*`-only file (the same without the base);
- diffusers adapter (PixArtControlNetAdapterModel): `controlnet_blocks.{i}.transformer_block.<diffusers block
  keys>`, `controlnet_blocks.0.before_proj.*`, `controlnet_blocks.{i}.after_proj.*`.
The branch keeps the original names (`controlnet.{i}....`) either way.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .files import SAFETENSORS_EXT, CheckpointError, load_state_dict, read_safetensors_header, unwrap
from .identify import CONTROLNET_LOADER, identify
from .pixart import HEAD_DIM, _px_from_name
from .pixart_keys import count_blocks, diffusers_adapter_to_original
from .variants import VARIANTS, Variant

BLOCK_KEYS = (
    "scale_shift_table", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
    "cross_attn.q_linear.weight", "cross_attn.q_linear.bias", "cross_attn.kv_linear.weight",
    "cross_attn.kv_linear.bias", "cross_attn.proj.weight", "cross_attn.proj.bias",
    "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias",
)
# The published ControlNets were trained on these bases; any other variant with the same shapes gets a warning.
TRAINED_BASES = {"controlnet_1024": ("controlnet_1024", "alpha_1024_ms"),
                 "controlnet_512": ("controlnet_512", "alpha_512")}


@dataclass
class ControlNetFile:
    path: Path
    layout: str                     # "original" (full file or controlnet.* only) or "diffusers"
    state_dict: dict                # branch weights, `controlnet.{i}...` names
    copies: int
    hidden: int
    has_base: bool                  # the file carries base_model.* (a full PixArt-δ file)
    native_px: int | None           # 512 / 1024 from the base's pos_embed, else from the file name
    micro: bool | None              # the base's micro-conditioning (None: no base in the file)
    base_variant: Variant | None    # controlnet_512 / controlnet_1024 when known
    warnings: list = field(default_factory=list)

    @property
    def num_heads(self) -> int:
        return max(1, self.hidden // HEAD_DIM)

    def describe(self) -> str:
        base = self.base_variant.title if self.base_variant else "unknown base size"
        return f"{self.path.name} ({self.layout} layout, {self.copies} copied blocks, hidden {self.hidden}, {base})"


def _check_complete(path: Path, sd: dict, copies: int, hidden: int) -> None:
    expected = {"controlnet.0.before_proj.weight": (hidden, hidden), "controlnet.0.before_proj.bias": (hidden,)}
    for i in range(copies):
        expected.update({f"controlnet.{i}.after_proj.weight": (hidden, hidden),
                         f"controlnet.{i}.after_proj.bias": (hidden,)})
        expected.update({f"controlnet.{i}.copied_block.{k}": None for k in BLOCK_KEYS})
    missing = [k for k in expected if k not in sd]
    if missing:
        raise CheckpointError(f"{path}: PixArt-δ ControlNet with {copies} copied blocks, but {len(missing)} tensors "
                              f"are missing, e.g. {', '.join(missing[:3])}; the file is incomplete or damaged")
    for k, shape in expected.items():
        if shape is not None and tuple(sd[k].shape) != shape:
            raise CheckpointError(f"{path}: {k} has shape {tuple(sd[k].shape)}, expected {shape} "
                                  f"(hidden size {hidden} read from the copied blocks)")


def _load_branch_part(path: Path) -> dict:
    """The whole file, except that a safetensors full file gives only the tensors the branch and the checks need
    (the 2.4 GB base stays on disk; .pth files are memory-mapped, so their base is never read either)."""
    if path.suffix.lower() not in SAFETENSORS_EXT:
        return load_state_dict(path)
    keys = [k for k in read_safetensors_header(path) if k != "__metadata__"]
    if "base_model.blocks.0.attn.qkv.weight" not in keys:
        return load_state_dict(path)
    import safetensors
    wanted = [k for k in keys if not k.startswith("base_model.")] + \
        [k for k in ("base_model.blocks.0.attn.qkv.weight", "base_model.csize_embedder.mlp.0.weight",
                     "base_model.pos_embed") if k in keys]
    with safetensors.safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in wanted}


def read_controlnet(path: str | Path, sd: dict | None = None) -> ControlNetFile:
    """Reads a PixArt-δ ControlNet file in any of the layouts above (or uses `sd`)."""
    path = Path(path)
    if sd is None:
        sd = _load_branch_part(path)
    sd = unwrap(sd)
    for p in ("module.",):
        if any(k.startswith(p + "controlnet") for k in sd):
            sd = {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}
    if "controlnet.0.copied_block.attn.qkv.weight" in sd:
        layout = "original"
        branch = {k: v for k, v in sd.items() if k.startswith("controlnet.")}
        copies = count_blocks(sd, "controlnet.")
    elif "controlnet_blocks.0.transformer_block.attn1.to_q.weight" in sd:
        layout = "diffusers"
        branch = diffusers_adapter_to_original(sd)
        copies = count_blocks(sd, "controlnet_blocks.")
    else:
        found = identify(sd)
        raise CheckpointError(
            f"{path}: {found.not_('a PixArt-δ ControlNet', CONTROLNET_LOADER[0])}. Found {found.found()}; "
            f"expected "
            f"'controlnet.0.copied_block.attn.qkv.weight' (PixArt-XL-2-*-ControlNet.pth) or "
            f"'controlnet_blocks.0.transformer_block.attn1.to_q.weight' (diffusers PixArtControlNetAdapterModel).")
    hidden = int(branch["controlnet.0.copied_block.attn.qkv.weight"].shape[1])
    _check_complete(path, branch, copies, hidden)

    has_base = "base_model.blocks.0.attn.qkv.weight" in sd
    native_px = micro = None
    if has_base:
        micro = "base_model.csize_embedder.mlp.0.weight" in sd
        pos = sd.get("base_model.pos_embed")
        if pos is not None:
            native_px = int(round(pos.shape[1] ** 0.5)) * 16
        else:
            native_px = 1024 if micro else 512
    else:
        native_px = _px_from_name(path)
        if native_px not in (512, 1024):
            native_px = None
    base_variant = VARIANTS.get(f"controlnet_{native_px}") if native_px else None
    warnings = []
    if base_variant is None:
        warnings.append("the file does not say whether it was trained on the 512 or the 1024 base (no base "
                        "weights, no 512/1024 in its name); only the shapes are checked against the MODEL")
    return ControlNetFile(path, layout, branch, copies, hidden, has_base, native_px, micro, base_variant, warnings)


def check_fit(cn: ControlNetFile, unet_config: dict, variant: Variant | None) -> list[str]:
    """Raises CheckpointError when the ControlNet cannot drive this base; returns warnings when it can but was
    trained on another base. `unet_config`: the base's hidden_size / depth / micro_condition."""
    hidden, depth = int(unet_config["hidden_size"]), int(unet_config["depth"])
    where = f"{cn.describe()} on {variant.title if variant else 'this PixArt MODEL'}"
    if hidden != cn.hidden:
        raise CheckpointError(f"{where}: the ControlNet has hidden size {cn.hidden}, the MODEL {hidden}; "
                              f"they cannot be combined")
    if depth <= cn.copies:
        raise CheckpointError(f"{where}: the ControlNet has {cn.copies} copied blocks and needs a base with more "
                              f"than {cn.copies} blocks; the MODEL has {depth}")
    if variant is None:
        return ["the MODEL's PixArt variant is unknown; only the shapes were checked"]
    if variant.family != "alpha":
        raise CheckpointError(f"{where}: PixArt-δ ControlNets were trained with PixArt-α in the SD1 latent space; "
                              f"{variant.title} uses {variant.latent_format} latents and another text length, "
                              f"so the hint and the residuals would not match. Use a PixArt-α-family MODEL.")
    if cn.base_variant is None:
        return []
    if variant.native_px != cn.base_variant.native_px or variant.pe_interpolation != cn.base_variant.pe_interpolation:
        raise CheckpointError(
            f"{where}: the ControlNet was trained on the {cn.base_variant.native_px} px base (position-embedding "
            f"scale {cn.base_variant.pe_interpolation}); this MODEL is a {variant.native_px} px model (scale "
            f"{variant.pe_interpolation}). Use PixArt-XL-2-{variant.native_px}-ControlNet with this MODEL, or a "
            f"{cn.base_variant.native_px} px base with this ControlNet.")
    if variant.name not in TRAINED_BASES[cn.base_variant.name]:
        return [f"{cn.path.name} was trained on {VARIANTS[TRAINED_BASES[cn.base_variant.name][1]].title}; the "
                f"MODEL is {variant.title}. Shapes fit, so it is applied, but the control may be weaker or "
                f"different than on its own base."]
    return []


def log_warnings(cn: ControlNetFile, warnings: list[str]) -> None:
    for w in warnings:
        logging.warning("PixArt ControlNet: %s: %s", cn.path.name, w)


def branch_dtype(cn: ControlNetFile) -> torch.dtype:
    return cn.state_dict["controlnet.0.after_proj.weight"].dtype
