"""PixArt Lineart: IMAGE batch -> white-on-black line drawings from ControlNet 1.1's lineart annotator
(sk_model.pth, coarse sk_model2.pth), as ControlNet 1.1 and ControlNet++ make their lineart hints."""
from __future__ import annotations

import comfy.model_management as mm
import comfy.utils
from comfy_api.latest import io

from ..loaders.lineart import LINEART_COARSE_FILE, LINEART_FILE
from ..loaders.lineart_comfy import list_lineart_files, load_lineart_patcher, register_folder, resolve_lineart_file
from ..preprocessors.annotator import detection_size
from ..preprocessors.lineart import DETECT_RESOLUTION, detect

register_folder()


def _bytes_per_image(height: int, width: int) -> int:
    # full-size 64-channel fp32 maps dominate (convolution input, output and the instance norm's copy)
    return height * width * 64 * 4 * 4


def _chunk(height: int, width: int, batch: int, device) -> int:
    return max(1, min(batch, int(mm.get_free_memory(device) * 0.8) // _bytes_per_image(height, width)))


class PixArtLineart(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PixArtLineart",
            display_name="PixArt Lineart",
            category="PixArt/preprocessors",
            description="Line drawings from ControlNet 1.1's lineart annotator (lllyasviel/Annotators sk_model.pth; "
                        "sk_model2.pth = coarse): white lines on black, 3 channels, the input size. The hint of "
                        "ControlNet 1.1 lineart and ControlNet++ lineart models. Runs batched on ComfyUI's device; "
                        "the model stays loaded between runs and is offloaded by ComfyUI when memory is needed.",
            inputs=[
                io.Image.Input("image", tooltip="Image batch (8-bit levels are used). Gray images are replicated "
                                                "to RGB; an alpha channel is composited on white (ControlNet's HWC3)."),
                io.Combo.Input("model_name", options=list_lineart_files(), default=LINEART_FILE,
                               tooltip=f"{LINEART_FILE} (fine lines, ControlNet 1.1 'lineart') or "
                                       f"{LINEART_COARSE_FILE} (coarse lines, 'lineart_coarse'), from "
                                       f"lllyasviel/Annotators, in models/lineart; the copies the "
                                       f"comfyui_controlnet_aux pack downloaded are found too."),
                io.Int.Input("resolution", default=DETECT_RESOLUTION, min=0, max=4096,
                             tooltip="Detection size: the short side is scaled to this, both sides rounded to "
                                     "multiples of 64 (ControlNet's resize_image); the map is resized back to the "
                                     "input size (bilinear, as ControlNet 1.1 does). Default 512, the references' "
                                     "detect resolution. 0 = detect at the input size."),
            ],
            outputs=[io.Image.Output(display_name="lineart")],
        )

    @classmethod
    def execute(cls, image, model_name=LINEART_FILE, resolution=DETECT_RESOLUTION) -> io.NodeOutput:
        patcher = load_lineart_patcher(resolve_lineart_file(model_name))
        b, h, w = image.shape[0], image.shape[1], image.shape[2]
        dh, dw = detection_size(h, w, resolution)
        mm.load_models_gpu([patcher], memory_required=_bytes_per_image(dh, dw))
        device = patcher.load_device
        pbar = comfy.utils.ProgressBar(b)
        out = detect(patcher.model, image, resolution, chunk=_chunk(dh, dw, b, device), device=device,
                     progress=pbar.update)
        return io.NodeOutput(out.to(mm.intermediate_device()))


NODES = [PixArtLineart]
