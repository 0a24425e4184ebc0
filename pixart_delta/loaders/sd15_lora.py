"""SD1.5 UNet LoRAs in the key forms trainers write, rewritten to the one ComfyUI's key map always has for SD1.x
(kohya's `lora_unet_<diffusers module path with _>.lora_down/lora_up.weight` + `.alpha`), and the YOSO SD1.5 LoRA.

The YOSO LoRA (Luo-Yihong/yoso_sd1.5_lora, `yoso_lora.safetensors`, 269 MB) is a torch.save pickle under a
safetensors name (Hugging Face's scanner lists collections.OrderedDict, torch.FloatStorage,
torch._utils._rebuild_tensor_v2). Its layout, from Luo-Yihong/YOSO train_yoso_lora.py: a PEFT LoraConfig(r=64,
lora_alpha default 8) on the diffusers SD1.5 UNet modules in YOSO_TARGETS, written by torch.save only as the EMA
dict of get_module_kohya_state_dict(unet, "lora_unet", float32): PEFT names `base_model.model.<path>.lora_A/B.weight`
become `lora_unet_<path, dots as _>.lora_down/lora_up.weight` plus `<module>.alpha` = 8. Those 278 modules at rank 64
hold 67,252,224 fp32 values = 269.0 MB, the published size (the EMA pickle is the script's only fp32 torch.save of
LoRA weights; its other output, save_lora_weights, writes real safetensors). ComfyUI's SD1.x key map takes that form
as it is once the file is named .pt; the PEFT / diffusers forms of the same LoRA are converted here.
"""
from __future__ import annotations

import re
from typing import Mapping

import torch

# Luo-Yihong/YOSO train_yoso_lora.py, LoraConfig(target_modules=...), r=64; lora_alpha left at PEFT's default 8.
YOSO_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1",
                "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj")
YOSO_RANK = 64
YOSO_ALPHA = 8.0
YOSO_FILE = "yoso_sd15_lora.pt"

# (suffix in the file, kohya suffix) for the forms whose module part is a diffusers UNet path
_PAIR_SUFFIXES = ((".lora_A.weight", ".lora_down.weight"), (".lora_B.weight", ".lora_up.weight"),
                  (".lora.down.weight", ".lora_down.weight"), (".lora.up.weight", ".lora_up.weight"),
                  (".lora_A.default.weight", ".lora_down.weight"), (".lora_B.default.weight", ".lora_up.weight"),
                  (".lora_down.weight", ".lora_down.weight"), (".lora_up.weight", ".lora_up.weight"),
                  (".alpha", ".alpha"))
# what PEFT, diffusers' save_lora_weights and old training scripts put before the module path
_PREFIXES = ("unet.base_model.model.", "base_model.model.", "unet.")
_DIFFUSERS_ROOTS = ("down_blocks.", "mid_block.", "up_blocks.", "conv_in", "conv_out", "conv_norm_out",
                    "time_embedding.")


def kohya_name(diffusers_module: str) -> str:
    return "lora_unet_" + diffusers_module.replace(".", "_")


def lora_form(keys) -> str:
    """'kohya' (lora_unet_*), 'peft' (lora_A/lora_B under a diffusers path), 'diffusers' (lora.down/up under a
    diffusers path), or 'other' (left to ComfyUI as it is)."""
    keys = list(keys)
    if any(k.startswith("lora_unet_") for k in keys):
        return "kohya"
    paths = [_module_path(k) for k in keys]
    if any(p is not None and k.endswith((".lora_A.weight", ".lora_A.default.weight")) for k, p in zip(keys, paths)):
        return "peft"
    if any(p is not None and k.endswith(".lora.down.weight") for k, p in zip(keys, paths)):
        return "diffusers"
    return "other"


def _module_path(key: str) -> str | None:
    """The diffusers UNet module path of a PEFT / diffusers LoRA tensor name, else None."""
    rest = key
    for p in _PREFIXES:
        if rest.startswith(p):
            rest = rest[len(p):]
            break
    if not rest.startswith(_DIFFUSERS_ROOTS) or ".processor." in rest:
        return None
    for suffix, _ in _PAIR_SUFFIXES:
        if rest.endswith(suffix):
            return rest[:-len(suffix)]
    return None


def to_comfy_form(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The LoRA with every PEFT / diffusers-path tensor renamed to its kohya name; anything else unchanged
    (ComfyUI maps kohya names, its own forms and LyCORIS itself)."""
    out = {}
    for key, value in sd.items():
        path = _module_path(key)
        if path is None:
            out[key] = value
            continue
        suffix = next(k for s, k in _PAIR_SUFFIXES if key.endswith(s))
        out[kohya_name(path) + suffix] = value
    return out


def text_encoder_keys(keys) -> list[str]:
    return [k for k in keys if k.startswith(("lora_te", "text_encoder.", "te_")) or re.match(r"lora_te\d_", k)]
