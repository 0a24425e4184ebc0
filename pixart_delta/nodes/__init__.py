"""The pack's nodes, as ComfyUI registers them (V3 ComfyExtension). Each module lists its node classes in `NODES`."""
from typing_extensions import override
from comfy_api.latest import ComfyExtension, io

from ..loaders.file_cache_comfy import install_free_memory_hook
from . import (canny, controlnet, customnet, depth, few_step, hed, lineart, pixart_loader, resolution, sd15_control,
               segmentation, t5_loader, tiny_vae)

NODE_MODULES = (pixart_loader, t5_loader, controlnet, few_step, resolution, hed, canny, lineart, depth, segmentation,
                tiny_vae, sd15_control, customnet)

install_free_memory_hook()


def all_nodes() -> list[type[io.ComfyNode]]:
    return [node for module in NODE_MODULES for node in module.NODES]


class PixArtDeltaExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return all_nodes()


async def comfy_entrypoint() -> PixArtDeltaExtension:
    return PixArtDeltaExtension()
