"""ComfyUI's free-memory request (POST /free with free_memory; ComfyUI-Manager's "Free model and node cache") also
drops the models the pack's FileCaches keep. ComfyUI's prompt worker takes that flag with PromptQueue.get_flags and
then drops every node output (PromptExecutor.reset); the caches are cleared at the same moment. "Unload models"
alone (unload_models) leaves them, as it leaves ComfyUI's own models in RAM."""
from __future__ import annotations

import functools
import logging

import execution

from .file_cache import clear_all_file_caches


def clearing_caches_on_free_memory(get_flags):
    @functools.wraps(get_flags)
    def wrapper(queue, *args, **kwargs):
        flags = get_flags(queue, *args, **kwargs)
        consumed = kwargs.get("reset", args[0] if args else True)
        if consumed and flags.get("free_memory", False):
            dropped = sum(clear() for clear in wrapper.pixart_delta_clears)
            logging.info(f"PixArt-Delta: free memory: dropped {dropped} cached preprocessor/loader models")
        return flags
    wrapper.pixart_delta_clears = []
    return wrapper


def install_free_memory_hook() -> None:
    """Core has no free-memory callback; its prompt worker reads the flags through this method. Each copy of the
    pack ComfyUI or a test imported adds its own caches' clear."""
    if not hasattr(execution.PromptQueue.get_flags, "pixart_delta_clears"):
        execution.PromptQueue.get_flags = clearing_caches_on_free_memory(execution.PromptQueue.get_flags)
    clears = execution.PromptQueue.get_flags.pixart_delta_clears
    if clear_all_file_caches not in clears:
        clears.append(clear_all_file_caches)
