"""ComfyUI-PixArt-Delta: ComfyUI loads this folder as a custom-node pack (V3 node schema)."""
from .pixart_delta.nodes import comfy_entrypoint  # noqa: F401

WEB_DIRECTORY = "./web"
