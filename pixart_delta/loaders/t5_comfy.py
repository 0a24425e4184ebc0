"""The PixArt T5 as a ComfyUI CLIP: ComfyUI's own T5 filled shard by shard from the files t5.py reads (GGUFs
dequantised on load, t5_gguf.py), with a tokenizer that prepares prompts as t5_prompt.py does; and the choices of
the loader node (files, GGUF files and sharded folders in models/text_encoders)."""
from __future__ import annotations

import logging
import os
from typing import Callable

import torch

from .dtypes import T5_WEIGHT_DTYPES, chosen_dtype
from .files import CheckpointError
from .t5 import INDEX_NAMES, file_weight_dtype, iter_pieces, resolve_t5_source, t5_config, tensor_meta
from .t5_gguf import GGUF_EXT
from .t5_prompt import max_tokens_for, prompt_token_ids

log = logging.getLogger(__name__)

_TOKENIZER_CLASSES = None


def _tokenizer_classes():
    """ComfyUI tokenizer classes that trim/clean like diffusers (built lazily: importing comfy needs ComfyUI)."""
    global _TOKENIZER_CLASSES
    if _TOKENIZER_CLASSES is None:
        from comfy import sd1_clip
        from comfy.text_encoders.pixart_t5 import T5XXLTokenizer

        class PixArtT5Tokenizer(T5XXLTokenizer):
            def __init__(self, embedding_directory=None, tokenizer_data={}):
                super().__init__(embedding_directory=embedding_directory, tokenizer_data=tokenizer_data)
                self.pixart_max_tokens = int(tokenizer_data.get("pixart_max_tokens", 120))
                self.pixart_clean = bool(tokenizer_data.get("pixart_clean_caption", True))

            def tokenize_with_weights(self, text: str, return_word_ids=False, **kwargs):
                # Prompts are taken literally, as diffusers does (no "(word:1.2)" weights, no embeddings).
                ids = prompt_token_ids(self.tokenizer, text, self.pixart_max_tokens, self.pixart_clean)
                if return_word_ids:
                    return [[(t, 1.0, 0 if t == self.end_token else 1) for t in ids]]
                return [[(t, 1.0) for t in ids]]

        class PixArtT5SD1Tokenizer(sd1_clip.SD1Tokenizer):
            def __init__(self, embedding_directory=None, tokenizer_data={}):
                super().__init__(embedding_directory=embedding_directory, tokenizer_data=tokenizer_data,
                                 clip_name="t5xxl", tokenizer=PixArtT5Tokenizer)

        _TOKENIZER_CLASSES = (PixArtT5Tokenizer, PixArtT5SD1Tokenizer)
    return _TOKENIZER_CLASSES


def storage_dtype(weight_dtype: str, file_dtype: torch.dtype, load_device) -> torch.dtype:
    """`default`: fp8/fp16/bf16 files stay as stored; fp32 files and quantised GGUFs (dequantised to fp32 as they
    are read) get ComfyUI's text-encoder dtype."""
    dtype = chosen_dtype(weight_dtype, T5_WEIGHT_DTYPES)
    if dtype is not None:
        return dtype
    if file_dtype in (torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2):
        return file_dtype
    import comfy.model_management as mm
    return mm.text_encoder_dtype(load_device)


def load_t5_clip(path, family: str = "alpha", max_tokens: int = 0, weight_dtype: str = "default",
                 device: str = "default", clean_caption: bool = True, embedding_directory=None,
                 progress: Callable[[int, int], None] | None = None):
    """A ComfyUI CLIP (comfy.sd.CLIP around ComfyUI's T5) filled shard by shard from `path`."""
    import comfy.model_management as mm
    import comfy.sd
    import comfy.text_encoders.pixart_t5

    src = resolve_t5_source(path)
    where = src.index.parent if src.sharded else src.files[0]
    meta = tensor_meta(src.files)
    cfg = t5_config(meta, src.hf_config, where, src.config_name)
    scaled_fp8 = meta.get("scaled_fp8", (None, None))[1]

    if device == "cpu":
        load_device = offload_device = torch.device("cpu")
    elif device == "default":
        load_device, offload_device = mm.text_encoder_device(), mm.text_encoder_offload_device()
    else:
        raise ValueError(f"device {device!r}: expected default or cpu")
    dtype = storage_dtype(weight_dtype, file_weight_dtype(src, meta), load_device)
    model_options = {"t5xxl_model_config": cfg, "load_device": load_device, "offload_device": offload_device,
                     "initial_device": offload_device}
    if scaled_fp8 is not None:  # ComfyUI's scaled-fp8 files: linear weights stay fp8 with their scales
        if weight_dtype != "default":
            log.info("%s is a scaled fp8 file: its linear weights stay %s, weight_dtype %s applies to the rest",
                     where, scaled_fp8, weight_dtype)
        model_options["t5xxl_scaled_fp8"] = scaled_fp8
    model_options["dtype"] = dtype
    if scaled_fp8 is None:
        from .dtypes_comfy import BF16ComputeOps, computes_bf16_on_cpu
        if computes_bf16_on_cpu(dtype, load_device):  # else ComfyUI's manual_cast: every layer in fp32
            model_options["custom_operations"] = BF16ComputeOps

    class Target:
        params = {}
        clip = comfy.text_encoders.pixart_t5.pixart_te(dtype_t5=dtype, t5xxl_scaled_fp8=scaled_fp8)
        tokenizer = _tokenizer_classes()[1]

    tokenizer_data = {"pixart_max_tokens": max_tokens_for(family, max_tokens), "pixart_clean_caption": clean_caption}
    clip = comfy.sd.CLIP(Target, embedding_directory=embedding_directory, tokenizer_data=tokenizer_data,
                         model_options=model_options)
    model = clip.cond_stage_model.t5xxl.transformer
    expected = {k: v for k, v in model.state_dict(keep_vars=True).items()}
    filled: set[str] = set()

    def wanted(key):
        return key in expected and key not in filled

    # Plain T5 weights are copied piece by piece straight into the parameters (what load_state_dict does, but
    # without a whole fp32 tensor, ~0.5 GB for T5-XXL's embedding, beside the weights); scaled-fp8 files go
    # through ComfyUI's load_sd whole, as their layers handle the scales themselves.
    direct = scaled_fp8 is None
    for i, f in enumerate(src.files):
        for key, shape, r0, t in iter_pieces(f, wanted, (16 << 20) if direct else None):
            target = expected[key]
            if shape != tuple(target.shape):
                raise CheckpointError(f"{f}: {key} has shape {shape}; expected {tuple(target.shape)} "
                                      f"(from the T5 config {cfg})")
            if direct:
                with torch.no_grad():
                    (target[r0:r0 + t.shape[0]] if target.dim() else target).copy_(t)  # casts to the storage dtype
            else:
                clip.load_sd({key: t})
            del t
            filled.add(key)
            mm.throw_exception_if_processing_interrupted()
        if progress is not None:
            progress(i + 1, len(src.files))
    missing = sorted(k for k in set(expected) - filled
                     if k != "scaled_fp8" and not k.endswith((".scale_weight", ".scale_input")))  # scales default to 1
    if missing:
        raise CheckpointError(f"{where}: the T5 weights lack {len(missing)} tensors the config needs "
                              f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}); expected a complete "
                              f"T5 encoder ({cfg['num_layers']} blocks, d_model {cfg['d_model']})")
    return clip


# ---- the loader node's choices ----

FOLDER = "text_encoders"


def _sharded_folders() -> list[str]:
    """Sub-folders of models/text_encoders holding a shard index, offered as choices of their own."""
    import folder_paths
    found = set()
    for base in folder_paths.get_folder_paths(FOLDER):
        if not os.path.isdir(base):
            continue
        for root, _dirs, files in os.walk(base, followlinks=True):
            if root != base and any(f in INDEX_NAMES for f in files):
                found.add(os.path.relpath(root, base))
    return sorted(found)


def _gguf_files() -> list[str]:
    """GGUF files in models/text_encoders: ComfyUI lists only its own weight extensions there."""
    import folder_paths
    found = set()
    for base in folder_paths.get_folder_paths(FOLDER):
        if os.path.isdir(base):
            files, _dirs = folder_paths.recursive_search(base, excluded_dir_names=[".git"])
            found.update(folder_paths.filter_files_extensions(files, GGUF_EXT))
    return sorted(found)


def t5_choices() -> list[str]:
    import folder_paths
    return sorted(set(folder_paths.get_filename_list(FOLDER)) | set(_gguf_files()) | set(_sharded_folders()))


def resolve_choice(name: str) -> str:
    import folder_paths
    path = folder_paths.get_full_path(FOLDER, name)
    if path is not None:
        return path
    for base in folder_paths.get_folder_paths(FOLDER):
        candidate = os.path.join(base, name)
        if os.path.isdir(candidate) and os.path.commonpath([os.path.abspath(base), os.path.abspath(candidate)]) == os.path.abspath(base):
            return candidate
    raise FileNotFoundError(f"T5 '{name}' not found in models/{FOLDER} ({', '.join(folder_paths.get_folder_paths(FOLDER))})")
