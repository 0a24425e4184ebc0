"""PixArt Checkpoint Loader: any published PixArt file -> MODEL."""
from __future__ import annotations

import folder_paths
from comfy_api.latest import io

from ..loaders.dtypes import PIXART_WEIGHT_DTYPES
from ..loaders.pixart_comfy import load_pixart_model
from ..loaders.variants import VARIANTS


class PixArtCheckpointLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PixArtCheckpointLoader",
            display_name="PixArt Checkpoint Loader",
            category="PixArt/loaders",
            description="Loads any published PixArt transformer (α, Σ, LCM, DMD, YOSO, the base of the PixArt-δ "
                        "ControlNet files) from original .pth/.safetensors or diffusers files as a MODEL with the "
                        "right latent space, position embedding and prediction type.",
            inputs=[
                io.Combo.Input("ckpt_name", options=folder_paths.get_filename_list("diffusion_models"),
                               tooltip="A file in models/diffusion_models. Diffusers layouts: keep config.json "
                                       "beside diffusion_pytorch_model.safetensors (e.g. a copied transformer/ folder)."),
                io.Combo.Input("variant", options=["auto", *VARIANTS], default="auto",
                               tooltip="auto detects the variant from the weights, config.json and file name. "
                                       "Set it when detection cannot tell (diffusers α-256/512 and Σ-256/512 "
                                       "files look alike)."),
                io.Combo.Input("weight_dtype", options=list(PIXART_WEIGHT_DTYPES), default="default",
                               tooltip="Storage dtype of the weights; default lets ComfyUI choose for your device "
                                       "(fp32 on a CPU unless ComfyUI runs with --bf16-unet). bf16 on a CPU with bf16 "
                                       "instructions (avx512_bf16, AMX) also computes in bf16, about twice as fast "
                                       "as fp32; on other CPUs it only halves memory. fp8 halves memory again, "
                                       "computing in fp16/bf16/fp32."),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, ckpt_name, variant="auto", weight_dtype="default") -> io.NodeOutput:
        path = folder_paths.get_full_path_or_raise("diffusion_models", ckpt_name)
        return io.NodeOutput(load_pixart_model(path, variant, weight_dtype))


NODES = [PixArtCheckpointLoader]
