"""GGUF T5 encoders for the tests and bench/t5_gguf_load.py, written with gguf-py's GGUFWriter in the layout
llama.cpp's converter and quantizer give (city96/t5-v1_1-xxl-encoder-gguf): architecture `t5encoder`, the T5
hyperparameters in the metadata, llama.cpp tensor names, 1-D tensors and the relative attention bias in F32.
Here rather than in pixart_delta/tiny because `run --tiny` never writes a GGUF.

The tensor names below are written out by hand from ggml-org/llama.cpp gguf-py/gguf/constants.py (TENSOR_NAMES
for MODEL_ARCH.T5ENCODER) and city96/ComfyUI-GGUF loader.py (T5_SD_MAP), not taken from the pack's loader, so a
test reading these files checks the loader's name mapping. Tensors are made one at a time
(pixart_delta.tiny.t5.random_tensor: the same weights as the safetensors fixtures of the same config and seed) and
streamed to the file, so full T5-XXL sizes fit.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from pixart_delta.tiny.t5 import random_tensor, t5_shapes

# HF name pieces -> llama.cpp's (gguf-py/gguf/constants.py MODEL_TENSOR.ENC_*: "enc.blk.{bid}.attn_q", ...)
_BLOCK_NAMES = {
    "layer.0.SelfAttention.q": "attn_q",
    "layer.0.SelfAttention.k": "attn_k",
    "layer.0.SelfAttention.v": "attn_v",
    "layer.0.SelfAttention.o": "attn_o",
    "layer.0.SelfAttention.relative_attention_bias": "attn_rel_b",
    "layer.0.layer_norm": "attn_norm",
    "layer.1.DenseReluDense.wi_0": "ffn_gate",
    "layer.1.DenseReluDense.wi_1": "ffn_up",
    "layer.1.DenseReluDense.wo": "ffn_down",
    "layer.1.layer_norm": "ffn_norm",
}
_BLOCK = re.compile(r"^encoder\.block\.(\d+)\.(.+)\.weight$")

# GGML's block_q4_K (ggml-org/llama.cpp ggml/src/ggml-common.h): 256 values in 8 sub-blocks of 32; fp16 d and
# dmin, 12 bytes of 6-bit sub-block scales and mins, 128 bytes of 4-bit quants. 144 bytes.
QK_K = 256
Q4_K_BYTES = 144


def gguf_name(hf_key: str) -> str:
    if hf_key == "shared.weight":
        return "token_embd.weight"
    if hf_key == "encoder.final_layer_norm.weight":
        return "enc.output_norm.weight"
    m = _BLOCK.match(hf_key)
    if m is None or m.group(2) not in _BLOCK_NAMES:
        raise KeyError(f"no llama.cpp name for {hf_key}")
    return f"enc.blk.{m.group(1)}.{_BLOCK_NAMES[m.group(2)]}.weight"


# TINY's widths (64) are no whole K-quant block; these are, for the Q4_K files
K_QUANT_TINY = dict(d_model=256, d_kv=32, num_heads=8, d_ff=512, num_layers=2, vocab_size=32128)


def pack_q4_k(d, dmin, sc, mn, q) -> np.ndarray:
    """Q4_K blocks from their fields: d, dmin (n,) float16; sc, mn (n, 8) 6-bit sub-block scales and mins;
    q (n, 8, 32) 4-bit quants. Laid out as gguf-py's Q4_K.dequantize_blocks / get_scale_min read them (the layout
    drawn in its comment): bytes 0-3 scale j & 63 with the top 2 bits of scale j+4, 4-7 the same for the mins,
    8-11 the low nibbles of scale and min j+4; then 4 chunks of 32 bytes, byte i of chunk c holding sub-block 2c's
    value i in its low nibble and sub-block 2c+1's in its high one."""
    n = len(d)
    sc, mn, q = (np.asarray(a, dtype=np.uint8) for a in (sc, mn, q))
    scales = np.empty((n, 12), dtype=np.uint8)
    scales[:, 0:4] = (sc[:, 0:4] & 0x3F) | ((sc[:, 4:8] >> 4) << 6)
    scales[:, 4:8] = (mn[:, 0:4] & 0x3F) | ((mn[:, 4:8] >> 4) << 6)
    scales[:, 8:12] = (sc[:, 4:8] & 0x0F) | ((mn[:, 4:8] & 0x0F) << 4)
    q = q.reshape(n, 4, 2, 32)
    qs = (q[:, :, 0, :] | (q[:, :, 1, :] << 4)).reshape(n, 128)
    d16 = np.asarray(d, dtype=np.float16).view(np.uint8).reshape(n, 2)
    dmin16 = np.asarray(dmin, dtype=np.float16).view(np.uint8).reshape(n, 2)
    return np.concatenate([d16, dmin16, scales, qs], axis=1)


def quantize_q4_k(x: np.ndarray) -> np.ndarray:
    """(rows, cols) float -> (rows, cols / 256 * 144) uint8 Q4_K blocks.

    gguf-py has no Q4_K quantizer (gguf.quants.quantize raises NotImplementedError), only the dequantizer, so this
    packs blocks for it: value = d * sc[j] * q - dmin * m[j] in sub-block j, with the scales from each sub-block's
    min and max (llama.cpp searches better ones; any valid blocks do here, as the tests compare with gguf-py's
    dequantisation of these very blocks)."""
    x = np.asarray(x, dtype=np.float32)
    rows, cols = x.shape
    if cols % QK_K:
        raise ValueError(f"Q4_K needs rows of a multiple of {QK_K} values, got {cols}")
    sub = x.reshape(-1, 8, 32)
    low = np.minimum(sub.min(-1), 0.0)                        # offsets are -dmin * m with m >= 0
    scale = (sub.max(-1) - low) / 15.0
    d = (scale.max(-1) / 63.0).astype(np.float16)
    dmin = ((-low).max(-1) / 63.0).astype(np.float16)
    df, dminf = d.astype(np.float32)[:, None], dmin.astype(np.float32)[:, None]
    sc = np.where(df > 0, np.ceil(scale / np.where(df > 0, df, 1)), 0).clip(0, 63)
    mn = np.where(dminf > 0, np.ceil(-low / np.where(dminf > 0, dminf, 1)), 0).clip(0, 63)
    step, offset = df * sc, dminf * mn
    q = np.where(step[..., None] > 0,
                 np.rint((sub + offset[..., None]) / np.where(step > 0, step, 1)[..., None]), 0).clip(0, 15)
    return pack_q4_k(d, dmin, sc, mn, q).reshape(rows, cols // QK_K * Q4_K_BYTES)


def _ggml_type(gguf, hf_key: str, shape: tuple, file_type: str, overrides: dict[str, str]):
    T = gguf.GGMLQuantizationType
    # llama.cpp keeps these F32 in every file type (ggml-org/llama.cpp src/llama-quant.cpp)
    if len(shape) == 1 or "relative_attention_bias" in hf_key:
        return T.F32
    for fragment, name in overrides.items():
        if fragment in hf_key:
            return T[name]
    return T[file_type]


def encode_tensor(gguf, t: torch.Tensor, qtype) -> np.ndarray:
    """The bytes (or F32 / F16 array) GGUFWriter stores for `t` as `qtype`."""
    x = t.float().numpy()
    name = gguf.GGMLQuantizationType(qtype).name
    if name == "Q4_K":
        return quantize_q4_k(x)
    return gguf.quants.quantize(x, qtype)


def dequantized(gguf, data: np.ndarray, qtype, shape) -> torch.Tensor:
    """gguf-py's own reading of what encode_tensor wrote: the reference weights."""
    return torch.from_numpy(np.array(gguf.quants.dequantize(data, qtype), dtype=np.float32)).reshape(shape)


def write_gguf(path, arch: str | None, tensors: dict[str, np.ndarray]) -> Path:
    """A GGUF of any architecture (None: without general.architecture) holding F32 / F16 `tensors`."""
    import gguf
    path = Path(path)
    w = gguf.GGUFWriter(str(path), arch or "none")
    if arch is None:
        del w.kv_data[0][gguf.Keys.General.ARCHITECTURE]
    for name, t in tensors.items():
        w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_t5_gguf(path, cfg: dict, file_type: str = "Q8_0", seed: int = 0, overrides: dict[str, str] | None = None,
                  arch: str = "t5encoder", metadata: dict | None = None, vocab: bool = False,
                  drop: tuple[str, ...] = (), extra: dict[str, np.ndarray] | None = None,
                  reference: bool = True) -> dict[str, torch.Tensor] | None:
    """A T5 encoder GGUF with the pack's random weights for `cfg`: 2-D weights as `file_type` (F32, F16, Q8_0,
    Q4_K; `overrides` {key fragment: type} changes some, as llama.cpp's _M mixes do), 1-D ones and the relative
    attention bias F32. `metadata` changes hyperparameters ({gguf key: value}, None values dropped); `drop` leaves out
    the tensors whose GGUF names contain one of its strings; `extra` adds F32 tensors after the encoder's. Returns
    the weights as gguf-py dequantises them (HF names; float32), unless `reference` is False (full-size files)."""
    import gguf
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shapes = t5_shapes(**cfg)
    overrides = overrides or {}
    plan = [(i, k, s, _ggml_type(gguf, k, s, file_type, overrides)) for i, (k, s) in enumerate(shapes.items())
            if not any(d in gguf_name(k) for d in drop)]
    w = gguf.GGUFWriter(str(path), arch)
    # what ggml-org/llama.cpp convert_hf_to_gguf.py T5EncoderModel.set_gguf_parameters writes
    w.add_name("t5-v1_1-xxl-encoder (random)")
    w.add_context_length(512)
    w.add_embedding_length(cfg["d_model"])
    w.add_feed_forward_length(cfg["d_ff"])
    w.add_block_count(cfg["num_layers"])
    w.add_head_count(cfg["num_heads"])
    w.add_key_length(cfg["d_kv"])
    w.add_value_length(cfg["d_kv"])
    w.add_layer_norm_eps(1e-6)
    w.add_relative_attn_buckets_count(32)
    w.add_layer_norm_rms_eps(1e-6)
    ftypes = {"F32": "ALL_F32", "F16": "MOSTLY_F16", "Q8_0": "MOSTLY_Q8_0", "Q4_K": "MOSTLY_Q4_K_M"}
    w.add_file_type(int(gguf.LlamaFileType[ftypes[file_type]]))
    for key, value in (metadata or {}).items():
        key = key.format(arch=arch)
        if value is None:
            w.kv_data[0].pop(key, None)
        else:
            w.kv_data[0][key].value = value
    if vocab:  # a tokenizer of the real size, as published files carry one (the loader uses ComfyUI's)
        w.add_tokenizer_model("t5")
        w.add_token_list([f"tok{i}" for i in range(cfg["vocab_size"])])
        w.add_token_scores([0.0] * cfg["vocab_size"])
    for _i, k, s, qtype in plan:
        numel = int(np.prod(s))
        if qtype == gguf.GGMLQuantizationType.F32:
            w.add_tensor_info(gguf_name(k), s, np.dtype(np.float32), numel * 4)
        elif qtype == gguf.GGMLQuantizationType.F16:
            w.add_tensor_info(gguf_name(k), s, np.dtype(np.float16), numel * 2)
        else:
            byte_shape = gguf.quants.quant_shape_to_byte_shape(s, qtype)
            w.add_tensor_info(gguf_name(k), byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape)), raw_dtype=qtype)
    for name, t in (extra or {}).items():
        w.add_tensor_info(name, t.shape, np.dtype(np.float32), t.astype(np.float32).nbytes)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    ref = {} if reference else None
    for i, k, s, qtype in plan:
        data = encode_tensor(gguf, random_tensor(k, s, cfg, seed, i), qtype)
        w.write_tensor_data(data)
        if ref is not None:
            ref[k] = dequantized(gguf, data, qtype, s)
        del data
    for t in (extra or {}).values():
        w.write_tensor_data(t.astype(np.float32))
    w.close()
    return ref
