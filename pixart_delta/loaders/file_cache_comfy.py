"""ComfyUI's "Unload models" (the /free endpoint with unload_models, the frontend's button) also drops the models
the pack's FileCaches keep (HED, lineart, depth, segmentation, CustomNet, SDXS ControlNets, tiny VAE)."""
from __future__ import annotations

import comfy.model_management as mm

from .file_cache import clear_all_file_caches


def install_unload_hook() -> None:
    """Core has no unload callback; its prompt worker calls model_management.unload_all_models by module attribute,
    so a wrapper there sees every unload."""
    if getattr(mm.unload_all_models, "pixart_delta_hook", False):
        return
    unload_all_models = mm.unload_all_models

    def unload_all_models_and_file_caches(*args, **kwargs):
        clear_all_file_caches()
        return unload_all_models(*args, **kwargs)
    unload_all_models_and_file_caches.pixart_delta_hook = True
    mm.unload_all_models = unload_all_models_and_file_caches
