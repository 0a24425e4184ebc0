"""Every module in this package lists its node classes in `NODES`; they are all registered here."""
import importlib
import pkgutil

from typing_extensions import override
from comfy_api.latest import ComfyExtension, io


def _all_nodes() -> list[type[io.ComfyNode]]:
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        found.extend(getattr(module, "NODES", []))
    return found


class PixArtDeltaExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return _all_nodes()


async def comfy_entrypoint() -> PixArtDeltaExtension:
    return PixArtDeltaExtension()
