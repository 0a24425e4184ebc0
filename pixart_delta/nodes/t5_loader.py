"""PixArt T5 Loader: a single-file, GGUF or sharded Hugging Face T5 -> CLIP (core CLIPTextEncode encodes with it)."""
from __future__ import annotations

import comfy.utils
import folder_paths
from comfy_api.latest import io

from ..loaders.dtypes import T5_WEIGHT_DTYPES
from ..loaders.t5_comfy import load_t5_clip, resolve_choice, t5_choices
from ..loaders.t5_prompt import FAMILY_TOKENS

class PixArtT5Loader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PixArtT5Loader",
            display_name="PixArt T5 Loader",
            category="PixArt/loaders",
            description="Loads the T5-XXL text encoder for PixArt from one file (t5xxl_fp16 / t5xxl_fp8_e4m3fn, as "
                        "SD3/Flux use, or a GGUF such as t5-v1_1-xxl-encoder-Q8_0.gguf, dequantised on load) or from "
                        "a sharded Hugging Face folder (PixArt's text_encoder), shard by shard. "
                        "Prompts are cleaned, truncated and encoded as the diffusers PixArt pipelines do; padding "
                        "never reaches the model.",
            inputs=[
                io.Combo.Input("t5_name", options=t5_choices(),
                               tooltip="A file in models/text_encoders (.safetensors, .gguf, ...). For a sharded "
                                       "folder (config.json, model.safetensors.index.json and model-0000N-of-0000M "
                                       "files) pick the folder or any of its shards: the whole set is loaded."),
                io.Combo.Input("family", options=list(FAMILY_TOKENS), default="alpha",
                               tooltip="alpha: PixArt-α, LCM, DMD, YOSO, PixArt-δ ControlNet (120 tokens). "
                                       "sigma: PixArt-Σ (300 tokens)."),
                io.Int.Input("max_tokens", default=0, min=0, max=4096,
                             tooltip="Token limit including the end token; 0 takes it from the family (120 / 300)."),
                io.Combo.Input("weight_dtype", options=list(T5_WEIGHT_DTYPES), default="default",
                               tooltip="Storage dtype. default keeps fp16/bf16/fp8 files as they are and stores fp32 "
                                       "files and quantised GGUFs (Q8_0, Q5_K_M, ...: dequantised as they are read) "
                                       "in ComfyUI's text-encoder dtype; fp8_e4m3fn halves that (T5-XXL: 4.8 GB). "
                                       "The computation runs in fp32 (fp16/fp8 weights are cast up), except bf16 "
                                       "weights on a CPU with bf16 instructions (avx512_bf16, AMX): their matrix "
                                       "products run in bf16, about twice as fast."),
                io.Combo.Input("device", options=["default", "cpu"], default="default",
                               tooltip="default: ComfyUI's text-encoder device; cpu keeps T5 off the GPU."),
                io.Boolean.Input("clean_caption", default=True,
                                 tooltip="Clean prompts as diffusers' PixArt pipelines do (lowercase, strip URLs, HTML, "
                                         "brackets...). Off: only lowercase and strip, as diffusers does then."),
            ],
            outputs=[io.Clip.Output()],
        )

    @classmethod
    def execute(cls, t5_name, family="alpha", max_tokens=0, weight_dtype="default", device="default",
                clean_caption=True) -> io.NodeOutput:
        path = resolve_choice(t5_name)
        pbar = comfy.utils.ProgressBar(1)

        def progress(done, total):
            pbar.update_absolute(done, total)

        clip = load_t5_clip(path, family=family, max_tokens=max_tokens, weight_dtype=weight_dtype, device=device,
                            clean_caption=clean_caption, embedding_directory=folder_paths.get_folder_paths("embeddings"),
                            progress=progress)
        return io.NodeOutput(clip)


NODES = [PixArtT5Loader]
