"""PixArt HED Edge Detector: IMAGE batch -> white-on-black HED edge maps (the PixArt-δ ControlNet's training input)."""
from __future__ import annotations

import comfy.model_management as mm
import comfy.utils
from comfy_api.latest import io

from ..loaders.hed import HED_FILE
from ..loaders.hed_comfy import list_hed_files, load_hed_patcher, register_folder, resolve_hed_file
from ..preprocessors.hed import detect, detection_size

register_folder()


def _chunk(height: int, width: int, batch: int, device) -> int:
    # The first block's 64-channel fp32 activations dominate; a few of them are alive at once.
    per_image = height * width * 64 * 4 * 6
    return max(1, min(batch, int(mm.get_free_memory(device) * 0.8) // per_image))


class PixArtHEDEdgeDetector(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PixArtHEDEdgeDetector",
            display_name="PixArt HED Edge Detector",
            category="PixArt/preprocessors",
            description="HED soft edges (ControlNet 1.1 / PixArt-δ model, ControlNetHED.pth): white edges on black, "
                        "3 channels, same size as the input. Runs batched on ComfyUI's device; the model stays loaded "
                        "between runs and is offloaded by ComfyUI when memory is needed.",
            inputs=[
                io.Image.Input("image", tooltip="Image batch. Gray images are replicated to RGB; an alpha channel is "
                                                "composited on white."),
                io.Combo.Input("model_name", options=list_hed_files(), default=HED_FILE,
                               tooltip=f"{HED_FILE} (lllyasviel/Annotators) in models/hed; the copy the "
                                       f"comfyui_controlnet_aux pack downloaded is found too."),
                io.Boolean.Input("safe", default=False,
                                 tooltip="Quantize to 3 levels (0, 127, 255) as ControlNet 1.1's 'safe' HED does. "
                                         "Off by default: the PixArt-δ ControlNet was trained on unquantized maps."),
                io.Boolean.Input("scribble", default=False,
                                 tooltip="Thin the edges into fake-scribble lines (NMS, blur, threshold), for "
                                         "scribble ControlNets."),
                io.Int.Input("resolution", default=0, min=0, max=4096, step=64,
                             tooltip="Detection size of the short side (rounded to multiples of 64, ControlNet 1.1 "
                                     "style); 0 = the input size. The default (0, safe and scribble off) reproduces "
                                     "the maps the PixArt-δ ControlNet was trained on: HED at the image's own size, "
                                     "sigmoid of the mean of the five side outputs, in 8-bit levels."),
            ],
            outputs=[io.Image.Output(display_name="edges")],
        )

    @classmethod
    def execute(cls, image, model_name=HED_FILE, safe=False, scribble=False, resolution=0) -> io.NodeOutput:
        patcher = load_hed_patcher(resolve_hed_file(model_name))
        b, h, w = image.shape[0], image.shape[1], image.shape[2]
        dh, dw = detection_size(h, w, resolution)
        mm.load_models_gpu([patcher], memory_required=dh * dw * 64 * 4 * 6)
        device = patcher.load_device
        pbar = comfy.utils.ProgressBar(b)
        out = detect(patcher.model, image, resolution, safe, scribble, chunk=_chunk(dh, dw, b, device),
                     device=device, progress=pbar.update)
        return io.NodeOutput(out.to(mm.intermediate_device()))


NODES = [PixArtHEDEdgeDetector]
