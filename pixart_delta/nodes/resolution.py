"""PixArt Resolution (empty latent at the nearest trained bucket) and PixArt Resize Back (to the asked size), as the
diffusers PixArt pipelines do with resolution binning."""
from __future__ import annotations

import torch
from comfy_api.latest import io

import comfy.model_management
import nodes

from ..loaders.pixart_comfy import is_pixart_model, pixart_variant
from ..samplers.resolution import (BINS_BY_NATIVE_PX, ResolutionError, bins_for_native_size, nearest_bucket,
                                   resize_back_image)

NATIVE_SIZES = ["auto", *(str(px) for px in BINS_BY_NATIVE_PX)]
LATENT_CHANNELS = 4   # every PixArt latent space (SD1 for α, SDXL for Σ) has 4 channels
LATENT_DOWNSCALE = 8


def native_size_of(model, native_size: str) -> int:
    """The native size whose bucket table applies: the MODEL's own (auto) or the one picked."""
    if not is_pixart_model(model):
        inner = type(getattr(model, "model", model)).__name__
        raise ResolutionError(f"the MODEL is a {inner}, not a PixArt model; the trained-resolution buckets are "
                              f"PixArt's: load it with PixArt Checkpoint Loader")
    if native_size != "auto":
        return int(native_size)
    variant = pixart_variant(model)
    if variant is None:
        raise ResolutionError("this PixArt MODEL does not say which size it was trained at (ComfyUI's own loader "
                              "does not record it): load it with PixArt Checkpoint Loader, or set native_size to "
                              "256, 512, 1024 or 2048")
    return variant.native_px


class PixArtResolution(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PixArtResolution",
            display_name="PixArt Resolution",
            category="PixArt/latent",
            description="Empty latent at the trained aspect-ratio bucket nearest to the asked size, as the diffusers "
                        "PixArt pipelines bin it (PixArt gives broken images away from the sizes it was trained on). "
                        "Wire the width/height outputs into PixArt Resize Back after VAE Decode to get the asked "
                        "size back.",
            inputs=[
                io.Model.Input("model", tooltip="The PixArt MODEL to be sampled (PixArt Checkpoint Loader): its "
                                                "native size picks the bucket table. Other models are refused."),
                io.Int.Input("width", default=1024, min=1, max=nodes.MAX_RESOLUTION, step=1,
                             tooltip="The width you want the final image to have, in pixels."),
                io.Int.Input("height", default=1024, min=1, max=nodes.MAX_RESOLUTION, step=1,
                             tooltip="The height you want the final image to have, in pixels."),
                io.Int.Input("batch_size", default=1, min=1, max=4096,
                             tooltip="The number of latent images in the batch."),
                io.Combo.Input("native_size", options=NATIVE_SIZES, default="auto",
                               tooltip="Which bucket table: auto = the one of the size the MODEL was trained at (256, "
                                       "512, 1024 or 2048 px). A number uses that table whatever the MODEL; needed "
                                       "for a PixArt MODEL from ComfyUI's own loader, which does not record its "
                                       "size."),
            ],
            outputs=[
                io.Latent.Output(display_name="latent",
                                 tooltip="Empty latent batch (4 channels) at the bucket size, for the sampler."),
                io.Int.Output(display_name="bucket_width", tooltip="Width of the bucket, in pixels (the sampled and "
                                                                   "decoded width)."),
                io.Int.Output(display_name="bucket_height", tooltip="Height of the bucket, in pixels."),
                io.Int.Output(display_name="width", tooltip="The asked width, for PixArt Resize Back."),
                io.Int.Output(display_name="height", tooltip="The asked height, for PixArt Resize Back."),
            ],
        )

    @classmethod
    def execute(cls, model, width, height, batch_size=1, native_size="auto") -> io.NodeOutput:
        bins = bins_for_native_size(native_size_of(model, native_size))
        bucket_height, bucket_width = nearest_bucket(height, width, bins)
        latent = torch.zeros([batch_size, LATENT_CHANNELS, bucket_height // LATENT_DOWNSCALE,
                              bucket_width // LATENT_DOWNSCALE], device=comfy.model_management.intermediate_device())
        return io.NodeOutput({"samples": latent}, bucket_width, bucket_height, width, height)


class PixArtResizeBack(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PixArtResizeBack",
            display_name="PixArt Resize Back",
            category="PixArt/image",
            description="Resizes the decoded bucket image to the asked size as the diffusers PixArt pipelines do: "
                        "scaled by one factor to cover it (bilinear, no antialias), then centre-cropped.",
            inputs=[
                io.Image.Input("image", tooltip="The decoded image at the bucket size (VAE Decode after a latent "
                                                "from PixArt Resolution); any size works."),
                io.Int.Input("width", default=1024, min=1, max=nodes.MAX_RESOLUTION, step=1,
                             tooltip="The width to give the image: PixArt Resolution's `width` output."),
                io.Int.Input("height", default=1024, min=1, max=nodes.MAX_RESOLUTION, step=1,
                             tooltip="The height to give the image: PixArt Resolution's `height` output."),
            ],
            outputs=[io.Image.Output(tooltip="The image at width x height.")],
        )

    @classmethod
    def execute(cls, image, width, height) -> io.NodeOutput:
        return io.NodeOutput(resize_back_image(image, width, height))


NODES = [PixArtResolution, PixArtResizeBack]
