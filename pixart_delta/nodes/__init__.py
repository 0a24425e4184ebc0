"""The pack's nodes, as ComfyUI registers them (V3 ComfyExtension). Each module lists its node classes in `NODES`."""
from typing_extensions import override
from comfy_api.latest import ComfyExtension, io

from . import controlnet, few_step, hed, pixart_loader, resolution, t5_loader, tiny_vae

NODE_MODULES = (pixart_loader, t5_loader, controlnet, few_step, resolution, hed, tiny_vae)


def all_nodes() -> list[type[io.ComfyNode]]:
    return [node for module in NODE_MODULES for node in module.NODES]


class PixArtDeltaExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return all_nodes()


async def comfy_entrypoint() -> PixArtDeltaExtension:
    return PixArtDeltaExtension()
