"""PixArt checkpoints: layout detection, conversion to original key names, variant detection.

No ComfyUI; pixart_comfy.py turns the result into a MODEL. The key names of both layouts: pixart_keys.py.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from .files import CheckpointError, load_state_dict, unwrap
from .identify import PIXART_LOADER, identify
from .pixart_keys import count_blocks, diffusers_to_original
from .variants import NAME_HINTS, VARIANTS, Variant

HEAD_DIM = 72  # every published PixArt: 16 heads x 72 at hidden 1152

_STRIP_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "module.")


@dataclass
class PixArtCheckpoint:
    path: Path
    layout: str                    # "original", "diffusers" or "controlnet" (PixArt-δ full file)
    variant: Variant
    state_dict: dict               # original key names, no pos_embed / y_embedding
    unet_config: dict
    warnings: list = field(default_factory=list)
    controlnet_state_dict: dict | None = None   # `controlnet.*` part of a PixArt-δ full file


def describe_keys(sd: dict, n: int = 4) -> str:
    keys = list(sd)
    return f"{len(keys)} tensors, e.g. " + ", ".join(keys[:n])


def split_layout(sd: dict, path: Path) -> tuple[str, dict, dict | None]:
    """Returns (layout, base weights, controlnet weights or None)."""
    for p in _STRIP_PREFIXES:
        if any(k.startswith(p + "blocks.0.") or k.startswith(p + "transformer_blocks.0.") for k in sd):
            sd = {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}
            break
    if "base_model.blocks.0.attn.qkv.weight" in sd:
        base = {k[len("base_model."):]: v for k, v in sd.items() if k.startswith("base_model.")}
        control = {k[len("controlnet."):]: v for k, v in sd.items() if k.startswith("controlnet.")}
        return "controlnet", base, control
    if "blocks.0.attn.qkv.weight" in sd:
        return "original", sd, None
    if "transformer_blocks.0.attn1.to_q.weight" in sd:
        return "diffusers", diffusers_to_original(sd), None
    found = identify(sd)
    raise CheckpointError(
        f"{path}: {found.not_('a PixArt checkpoint', PIXART_LOADER[0])}. Found {found.found()}; "
        f"expected PixArt keys such as 'blocks.0.attn.qkv.weight' (original .pth), "
        f"'transformer_blocks.0.attn1.to_q.weight' (diffusers) or 'base_model.blocks.0...' (PixArt-δ ControlNet).")


def read_config(path: Path) -> dict:
    cfg = path.parent / "config.json"
    if cfg.is_file():
        try:
            return json.loads(cfg.read_text())
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{cfg}: not valid JSON ({e}); it sits beside {path.name} and describes it") from None
    return {}


def _name_hints(path: Path, config: dict) -> set[str]:
    text = " ".join([*(p.lower() for p in path.parts[-4:]), str(config.get("_name_or_path", "")).lower()])
    return {tag for word, tag in NAME_HINTS if word in text}


def _px_from_name(path: Path) -> int | None:
    name = path.name.lower() + " " + path.parent.name.lower() + " " + path.parent.parent.name.lower()
    for word, px in (("2k", 2048), ("2048", 2048), ("1024", 1024), ("512", 512), ("256", 256)):
        if word in name:
            return px
    return None


def pick_variant(tokens: int | None, micro: bool, native_px: int | None, hints: set[str],
                 is_controlnet_file: bool) -> tuple[Variant, list[str]]:
    """The table row these facts point to, plus warnings where a guess was needed."""
    warnings = []
    if is_controlnet_file:
        return VARIANTS["controlnet_1024" if micro else "controlnet_512"], warnings
    if tokens is not None:
        family = "alpha" if tokens <= 120 else "sigma"
    elif "sigma" in hints:
        family = "sigma"
    elif micro or hints & {"alpha", "yoso", "dmd", "lcm", "controlnet"}:
        family = "alpha"  # micro-conditioning exists only in α-family models
    else:
        family = None
    if family == "sigma":
        px = native_px or 1024
        return VARIANTS[{256: "sigma_256", 512: "sigma_512", 2048: "sigma_2k"}.get(px, "sigma_1024")], warnings
    if family == "alpha":
        if "yoso" in hints:
            return VARIANTS["yoso_1024" if micro else "yoso_512"], warnings
        if "dmd" in hints:
            return VARIANTS["dmd_512"], warnings
        if "lcm" in hints:
            return VARIANTS["lcm_1024"], warnings
        if micro:
            return VARIANTS["alpha_1024_ms"], warnings
        return VARIANTS["alpha_256" if native_px == 256 else "alpha_512"], warnings
    # Nothing says α or Σ: a diffusers file without y_embedding and without a telling config or name.
    if native_px in (256, 512):
        warnings.append(f"weights alone cannot tell PixArt-α {native_px} from PixArt-Σ {native_px}; assumed "
                        f"α-{native_px} (SD1 latents). Set `variant` to sigma_{native_px} if this is a Σ model.")
        return VARIANTS[f"alpha_{native_px}"], warnings
    v = VARIANTS["sigma_2k" if native_px == 2048 else "sigma_1024"]
    warnings.append(f"nothing in the weights, config.json or name says α or Σ; assumed {v.title} (the only "
                    f"non-micro-conditioned 1024 family). Set `variant` if this is wrong.")
    return v, warnings


def inspect_checkpoint(path: str | Path, variant: str = "auto", sd: dict | None = None) -> PixArtCheckpoint:
    """Reads a PixArt file (or uses `sd`), converts it to original key names and detects its variant."""
    path = Path(path)
    if sd is None:
        sd = load_state_dict(path)
    sd = unwrap(sd)
    layout, base, control = split_layout(sd, path)
    config = read_config(path) if layout == "diffusers" else {}

    try:
        hidden, in_ch = base["x_embedder.proj.weight"].shape[:2]
        patch = base["x_embedder.proj.weight"].shape[-1]
        caption_channels = base["y_embedder.y_proj.fc1.weight"].shape[1]
        out_ch = base["final_layer.linear.weight"].shape[0] // (patch * patch)
    except KeyError as e:
        raise CheckpointError(f"{path}: PixArt {layout} layout but the tensor {e} is missing "
                              f"({describe_keys(base)}); the file is incomplete") from None
    depth = count_blocks(base, "blocks.")
    micro = "csize_embedder.mlp.0.weight" in base
    y_emb = base.pop("y_embedder.y_embedding", None)
    pos = base.pop("pos_embed", None)
    tokens = int(y_emb.shape[0]) if y_emb is not None else None
    native_px = None
    if pos is not None:
        native_px = int(round(pos.shape[1] ** 0.5)) * patch * 8
    elif config.get("sample_size"):
        native_px = int(config["sample_size"]) * 8
    else:
        native_px = _px_from_name(path)

    warnings: list[str] = []
    if variant and variant != "auto":
        if variant not in VARIANTS:
            raise CheckpointError(f"unknown variant '{variant}'; expected auto or one of {', '.join(VARIANTS)}")
        chosen = VARIANTS[variant]
        if chosen.micro_condition != micro:
            warnings.append(f"variant {chosen.name} expects micro-conditioning={chosen.micro_condition} but the "
                            f"weights have micro-conditioning={micro}; the weights decide")
    else:
        chosen, warnings = pick_variant(tokens, micro, native_px, _name_hints(path, config), layout == "controlnet")

    heads = int(config.get("num_attention_heads") or max(1, hidden // HEAD_DIM))
    if hidden % heads:
        raise CheckpointError(f"{path}: hidden size {hidden} is not divisible into {heads} heads")
    interp, base_size = chosen.pe_interpolation, chosen.base_size
    if config.get("sample_size") and variant in (None, "", "auto"):
        # what diffusers' PixArtTransformer2DModel does with this config
        base_size = int(config["sample_size"]) // patch
        interp = config.get("interpolation_scale")
        if interp is None:
            interp = max(int(config["sample_size"]) // 64, 1)
            if interp != chosen.pe_interpolation:
                warnings.append(f"config.json has no interpolation_scale, so diffusers (and this loader) use "
                                f"max(sample_size // 64, 1) = {interp}; {chosen.title} was trained with "
                                f"{chosen.pe_interpolation}. Set `variant` to {chosen.name} for the trained scale.")
    unet_config = dict(
        image_model="pixart_delta", hidden_size=int(hidden), depth=depth, num_heads=heads, patch_size=int(patch),
        in_channels=int(in_ch), out_channels=int(out_ch), caption_channels=int(caption_channels),
        model_max_length=tokens or chosen.tokens, micro_condition=micro, base_size=base_size,
        pe_interpolation=float(interp),
    )
    for w in warnings:
        logging.warning("PixArt loader: %s: %s", path.name, w)
    return PixArtCheckpoint(path, layout, chosen, base, unet_config, warnings, control)
