"""PixArt Segmentation (ADE20K, UperNet): IMAGE batch -> ADE20K colour maps as ControlNet++'s seg model's conditions."""
from __future__ import annotations

import comfy.model_management as mm
import comfy.utils
from comfy_api.latest import io

from ..preprocessors.controlnet_plus_plus import detect_size
from ..loaders.segmentation_comfy import (DEFAULT, list_segmentation_models, load_segmentation_patcher,
                                          register_folder, resolve_segmentation_model)
from ..preprocessors.segmentation import DEFAULT_RESOLUTION, segment

register_folder()


def per_image_bytes(processor_size: tuple[int, int], detect_size: tuple[int, int]) -> int:
    # 150 fp32 logit maps at the processor size and again at the detect size, plus the backbone's features
    return 150 * 4 * (processor_size[0] * processor_size[1] + detect_size[0] * detect_size[1]) * 2


class PixArtSegmentationADE20K(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PixArtSegmentationADE20K",
            display_name="PixArt Segmentation (ADE20K UperNet, ControlNet++)",
            category="PixArt/preprocessors",
            description="ADE20K semantic segmentation with UperNet (openmmlab/upernet-convnext-small, a transformers "
                        "folder in models/segmentation), coloured with the 150-colour ADE20K palette, made exactly as "
                        "ControlNet++'s inference code makes its seg conditions; same size as the input.",
            inputs=[
                io.Image.Input("image", tooltip="Image batch. Gray images are replicated to RGB; an alpha channel is "
                                                "composited on white."),
                io.Combo.Input("model_name", options=list_segmentation_models(), default=DEFAULT,
                               tooltip="A transformers model folder in models/segmentation (config.json, "
                                       "model.safetensors, preprocessor_config.json), e.g. upernet-convnext-small "
                                       "from openmmlab/upernet-convnext-small; the repo in the Hugging Face cache is "
                                       "listed too."),
                io.Int.Input("resolution", default=DEFAULT_RESOLUTION, min=64, max=2048, step=64,
                             tooltip="Detect resolution: the long side is scaled to it and both sides rounded to "
                                     "multiples of 64 (ControlNet++'s resize_image; its seg demo uses 512). Labels "
                                     "are taken at this size, then the colour map is resized nearest-neighbour to "
                                     "the input size."),
            ],
            outputs=[io.Image.Output(display_name="segmentation")],
        )

    @classmethod
    def execute(cls, image, model_name=DEFAULT, resolution=DEFAULT_RESOLUTION) -> io.NodeOutput:
        patcher = load_segmentation_patcher(resolve_segmentation_model(model_name))
        processing = patcher.model.extra
        detect = detect_size(image.shape[1], image.shape[2], resolution)
        need = per_image_bytes(processing.output_size(*detect), detect)
        mm.load_models_gpu([patcher], memory_required=need)
        device = patcher.load_device
        chunk = max(1, min(image.shape[0], int(mm.get_free_memory(device) * 0.8) // need))
        pbar = comfy.utils.ProgressBar(image.shape[0])
        out = segment(patcher.model.model, processing, image, resolution, chunk=chunk, device=device,
                      progress=pbar.update)
        return io.NodeOutput(out.to(mm.intermediate_device()))


NODES = [PixArtSegmentationADE20K]
