"""ComfyUI-PixArt-Delta: ComfyUI loads this folder as a custom-node pack (V3 node schema)."""
try:
    import comfy_api  # noqa: F401
except ImportError:  # imported by pytest or the CLI outside ComfyUI: there are no nodes to register
    pass
else:
    from .pixart_delta.nodes import comfy_entrypoint  # noqa: F401

WEB_DIRECTORY = "./web"
