"""ComfyUI's LoRA loaders on our PixArt MODEL: the LoRA key forms core's map lacks (pixart_lora.py) are added to
comfy.lora.model_lora_keys_unet for models that provide `pixart_lora_keys()`, and LoRA tensors that match no
weight are reported by name. ComfyUI's own loaders, adapters (LoRA, LoCon, LoHa, LoKr, DoRA) and patching do
the rest."""
from __future__ import annotations

import functools
import logging

import comfy.lora
import comfy.lora_convert
import comfy.sd

from .pixart_lora import unmatched_lora_keys

NAMES_SHOWN = 20


def has_pixart_lora_keys(model) -> bool:
    return callable(getattr(model, "pixart_lora_keys", None))


def with_pixart_lora_keys(model_lora_keys_unet):
    @functools.wraps(model_lora_keys_unet)
    def wrapper(model, *args, **kwargs):
        key_map = model_lora_keys_unet(model, *args, **kwargs)
        if has_pixart_lora_keys(model):
            for name, target in model.pixart_lora_keys().items():
                key_map.setdefault(name, target)
        return key_map
    wrapper.pixart_delta_hook = True
    return wrapper


def unmatched_report(unmatched: list[str], total: int) -> str:
    shown = ", ".join(unmatched[:NAMES_SHOWN])
    more = f" and {len(unmatched) - NAMES_SHOWN} more" if len(unmatched) > NAMES_SHOWN else ""
    what = "none of this LoRA applies (made for another model?)" if len(unmatched) == total \
        else "these parts of the LoRA are not applied"
    return f"PixArt MODEL: {len(unmatched)} of {total} LoRA tensors match no weight, {what}: {shown}{more}"


def show_on_running_node(text: str) -> None:
    """The text under the node being executed (ComfyUI's progress text), when a ComfyUI server is running it."""
    from comfy_execution.utils import get_executing_context
    from server import PromptServer
    context = get_executing_context()
    server = getattr(PromptServer, "instance", None)
    if context is not None and server is not None:
        server.send_progress_text(text, context.node_id)


def reporting_unmatched_keys(load_lora_for_models):
    @functools.wraps(load_lora_for_models)
    def wrapper(model, clip, lora, strength_model, strength_clip, *args, **kwargs):
        result = load_lora_for_models(model, clip, lora, strength_model, strength_clip, *args, **kwargs)
        if model is not None and has_pixart_lora_keys(model.model):
            key_map = comfy.lora.model_lora_keys_unet(model.model, {})
            if clip is not None:
                key_map = comfy.lora.model_lora_keys_clip(clip.cond_stage_model, key_map)
            names = list(comfy.lora_convert.convert_lora(lora))
            unmatched = unmatched_lora_keys(names, key_map)
            if unmatched:
                report = unmatched_report(unmatched, len(names))
                logging.warning(report)
                show_on_running_node(report)
        return result
    wrapper.pixart_delta_hook = True
    return wrapper


def install_lora_hooks() -> None:
    """Wraps the two core functions every LoRA path goes through (LoraLoader, LoraLoaderModelOnly, hook LoRAs call
    them as module attributes). Core has no registration point for model-specific LoRA keys; the wrappers pass
    everything through unchanged for models without `pixart_lora_keys()`."""
    if not getattr(comfy.lora.model_lora_keys_unet, "pixart_delta_hook", False):
        comfy.lora.model_lora_keys_unet = with_pixart_lora_keys(comfy.lora.model_lora_keys_unet)
    if not getattr(comfy.sd.load_lora_for_models, "pixart_delta_hook", False):
        comfy.sd.load_lora_for_models = reporting_unmatched_keys(comfy.sd.load_lora_for_models)
