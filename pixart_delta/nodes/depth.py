"""PixArt Depth (DPT): IMAGE batch -> DPT depth maps made the way ControlNet++'s depth model's conditions were."""
from __future__ import annotations

import comfy.model_management as mm
import comfy.utils
from comfy_api.latest import io

from ..preprocessors.controlnet_plus_plus import detect_size
from ..loaders.depth_comfy import DEFAULT, list_depth_models, load_depth_patcher, register_folder, resolve_depth_model
from ..preprocessors.depth import DEFAULT_RESOLUTION, estimate_depth

register_folder()


def per_image_bytes(size: tuple[int, int]) -> int:
    # the fusion stages and head at the processor size dominate: ~256 fp32 channels, a few alive at once
    return size[0] * size[1] * 256 * 4 * 4


class PixArtDepthDPT(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PixArtDepthDPT",
            display_name="PixArt Depth (DPT, ControlNet++)",
            category="PixArt/preprocessors",
            description="Depth maps from a DPT model (Intel/dpt-large or Intel/dpt-hybrid-midas, transformers folders "
                        "in models/depth), pre- and post-processed exactly as ControlNet++'s inference code: near is "
                        "bright, depth * 255 / max, gray in 3 channels, same size as the input. Runs batched on "
                        "ComfyUI's device; the model stays loaded between runs.",
            inputs=[
                io.Image.Input("image", tooltip="Image batch. Gray images are replicated to RGB; an alpha channel is "
                                                "composited on white."),
                io.Combo.Input("model_name", options=list_depth_models(), default=DEFAULT,
                               tooltip="A transformers model folder in models/depth (config.json, model.safetensors, "
                                       "preprocessor_config.json), e.g. dpt-large from Intel/dpt-large (ControlNet++'s "
                                       "choice) or dpt-hybrid-midas; Intel/... repos in the Hugging Face cache are "
                                       "listed too."),
                io.Int.Input("resolution", default=DEFAULT_RESOLUTION, min=64, max=2048, step=64,
                             tooltip="Detect resolution: the long side is scaled to it and both sides rounded to "
                                     "multiples of 64 before DPT sees the image (ControlNet++'s resize_image; its "
                                     "depth demo uses 384). The map is resized back to the input size."),
            ],
            outputs=[io.Image.Output(display_name="depth")],
        )

    @classmethod
    def execute(cls, image, model_name=DEFAULT, resolution=DEFAULT_RESOLUTION) -> io.NodeOutput:
        patcher = load_depth_patcher(resolve_depth_model(model_name))
        processing = patcher.model.extra
        size = processing.output_size(*detect_size(image.shape[1], image.shape[2], resolution))
        need = per_image_bytes(size)
        mm.load_models_gpu([patcher], memory_required=need)
        device = patcher.load_device
        chunk = max(1, min(image.shape[0], int(mm.get_free_memory(device) * 0.8) // need))
        pbar = comfy.utils.ProgressBar(image.shape[0])
        out = estimate_depth(patcher.model.model, processing, image, resolution, chunk=chunk, device=device,
                             progress=pbar.update)
        return io.NodeOutput(out.to(mm.intermediate_device()))


NODES = [PixArtDepthDPT]
