"""An SD1.5 UNet LoRA on a ComfyUI MODEL through core's LoRA machinery (comfy.lora key map and adapters,
comfy.sd.load_lora_for_models): the file read pickle-safely (a pickle under a .safetensors name is named with the
fix), PEFT / diffusers key forms renamed (sd15_lora.py), and what does not land on a weight reported by name."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from .files import CheckpointError, load_state_dict
from .identify import identify
from .pixart_lora import unmatched_lora_keys
from .sd15_lora import lora_form, text_encoder_keys, to_comfy_form

log = logging.getLogger(__name__)
NAMES_SHOWN = 12


def read_sd15_lora(path: str | os.PathLike) -> dict:
    path = Path(path)
    sd = load_state_dict(path)
    ident = identify(sd)
    if ident.family != "lora":
        raise CheckpointError(f"{path}: {ident.not_('a LoRA')}; found {ident.found()}")
    return sd


def lora_unet_fit(model, lora: dict) -> tuple[list[str], list[str]]:
    """(tensors no UNet weight claims, tensors whose up x down shape differs from the weight they claim) for a
    LoRA already in ComfyUI's form, against `model` (a comfy BaseModel)."""
    import comfy.lora
    key_map = comfy.lora.model_lora_keys_unet(model, {})
    unmatched = unmatched_lora_keys(lora.keys(), key_map)
    weights = model.state_dict()
    wrong = []
    for name, target in key_map.items():
        up, down = lora.get(f"{name}.lora_up.weight"), lora.get(f"{name}.lora_down.weight")
        if up is None or down is None or target not in weights:
            continue
        shape = tuple(weights[target].shape)
        if (up.shape[0], down.shape[1]) != shape[:2] or tuple(down.shape[2:]) != shape[2:]:
            wrong.append(f"{name} ({tuple(up.shape)} x {tuple(down.shape)} for {target} {shape})")
    return unmatched, wrong


def report(unmatched: list[str], wrong: list[str], total: int) -> str:
    parts = []
    if unmatched:
        more = f" and {len(unmatched) - NAMES_SHOWN} more" if len(unmatched) > NAMES_SHOWN else ""
        parts.append(f"{len(unmatched)} of {total} LoRA tensors match no weight of this SD1.x UNet: "
                     f"{', '.join(unmatched[:NAMES_SHOWN])}{more}")
    if wrong:
        parts.append(f"{len(wrong)} have shapes that do not fit: {', '.join(wrong[:4])}")
    return "; ".join(parts)


def apply_sd15_lora(model_patcher, path: str | os.PathLike, strength: float):
    """(patched clone of `model_patcher`, report text: "" when every tensor landed on a weight)."""
    import comfy.sd
    path = Path(path)
    raw = read_sd15_lora(path)
    form = lora_form(raw)
    lora = to_comfy_form(raw)
    te = text_encoder_keys(lora)
    unet_part = {k: v for k, v in lora.items() if k not in set(te)}
    unmatched, wrong = lora_unet_fit(model_patcher.model, unet_part)
    if unmatched and len(unmatched) == len(unet_part):
        raise CheckpointError(f"{path}: none of this LoRA's {len(unet_part)} UNet tensors (form: {form}) matches a "
                              f"weight of the MODEL, e.g. {', '.join(sorted(unmatched)[:4])}; is it made for "
                              f"another model?")
    if wrong:
        raise CheckpointError(f"{path}: {report([], wrong, len(unet_part))}; the LoRA is for another UNet")
    patched, _ = comfy.sd.load_lora_for_models(model_patcher, None, unet_part, strength, 0)
    text = report(unmatched, [], len(unet_part))
    if te:
        text = "; ".join(t for t in (text, f"{len(te)} text-encoder tensors not applied (this node patches the "
                                           f"MODEL only)") if t)
    log.info("%s: %s LoRA, %d tensors%s", path.name, form, len(raw), f"; {text}" if text else "")
    return patched, text
