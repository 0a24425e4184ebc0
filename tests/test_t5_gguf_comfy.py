"""PixArt T5 Loader with GGUF T5 encoders inside ComfyUI: the CLIP encodes prompts as diffusers' PixArt pipelines
do with transformers' T5EncoderModel holding the weights gguf-py dequantises (F32, F16, Q8_0, Q4_K), within the
quantisation error of the unquantised model; the node lists and loads .gguf files and reports bad ones."""
from __future__ import annotations

import pytest
import torch

from gguf_files import K_QUANT_TINY, write_gguf, write_t5_gguf
from pixart_delta.tiny.t5 import TINY, random_t5_state_dict
from t5_reference import LONG, PROMPTS, diffusers_embeds, encode, load, reference_encoder

pytestmark = [pytest.mark.comfyui, pytest.mark.usefixtures("one_torch_thread")]
transformers = pytest.importorskip("transformers")
diffusers = pytest.importorskip("diffusers")
gguf = pytest.importorskip("gguf")

# file type -> (config, per-tensor type overrides): Q4_K as a Q4_K_M-like mix (attn_v finer, as llama.cpp does)
FILES = {"F32": (TINY, None), "F16": (TINY, None), "Q8_0": (TINY, None),
         "Q4_K": (K_QUANT_TINY, {"SelfAttention.v.": "Q8_0"})}


@pytest.fixture(scope="module")
def gguf_files(comfy, tmp_path_factory):
    root = tmp_path_factory.mktemp("t5gguf")
    out = {}
    for file_type, (cfg, overrides) in FILES.items():
        path = root / f"t5-v1_1-xxl-encoder-{file_type}.gguf"
        out[file_type] = (path, write_t5_gguf(path, cfg, file_type, overrides=overrides), cfg)
    return out


def _rounded(weights, dtype):
    return {k: v.to(dtype).float() for k, v in weights.items()}


@pytest.mark.parametrize("file_type", FILES)
def test_parity_with_transformers_on_the_dequantised_weights(gguf_files, tokenizer, file_type):
    """fp32 storage: exactly transformers holding gguf-py's dequantisation of the file (1e-5), every prompt and the
    empty negative (the end token alone, as diffusers' mask keeps it)."""
    path, weights, cfg = gguf_files[file_type]
    clip = load(path, weight_dtype="fp32")
    ref = reference_encoder(weights, cfg)
    for prompt in PROMPTS:
        want, want_neg = diffusers_embeds(ref, tokenizer, prompt)
        got = encode(clip, prompt)
        assert got.shape == (1, want.shape[0], cfg["d_model"])
        torch.testing.assert_close(got[0], want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(encode(clip, "")[0], want_neg, rtol=1e-5, atol=1e-5)
    assert want_neg.shape[0] == 1
    if file_type in ("F32", "F16"):  # and the unquantised model itself (F16: 2-D weights rounded, norms F32)
        plain = random_t5_state_dict(cfg)
        if file_type == "F16":
            plain = {k: v.half().float() if v.dim() == 2 and "relative_attention_bias" not in k else v
                     for k, v in plain.items()}
        exact = reference_encoder(plain, cfg)
        torch.testing.assert_close(encode(clip, PROMPTS[0])[0], diffusers_embeds(exact, tokenizer, PROMPTS[0])[0],
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("file_type", ["Q8_0", "Q4_K"])
def test_quantisation_error_against_the_unquantised_model(gguf_files, tokenizer, file_type):
    """Against transformers with the unquantised weights the only error is the quantisation. As in
    test_t5_comfy.test_reduced_storage: per tensor relative L2 errors e_i add up like a random walk through the n
    weight tensors, so the output's relative L2 error stays below 1.5 * sqrt(n) * rms(e_i) (n = 21 here; Q8_0:
    rms(e_i) 0.0045, bound 0.031, measured 0.015; the Q4_K mix: 0.062, 0.43, 0.19); and it is not zero (the file
    is really quantised)."""
    path, weights, cfg = gguf_files[file_type]
    clip = load(path, weight_dtype="fp32")
    plain = random_t5_state_dict(cfg)
    errs = torch.tensor([((plain[k] - weights[k]).norm() / plain[k].norm()).item() for k in plain])
    bound = 1.5 * (len(errs) ** 0.5) * errs.pow(2).mean().sqrt().item()
    full = reference_encoder(plain, cfg)
    for prompt in PROMPTS[:2]:
        got = encode(clip, prompt)[0]
        want = diffusers_embeds(full, tokenizer, prompt)[0]
        rel = ((got - want).norm() / want.norm()).item()
        assert 0.05 * bound < rel < bound, (rel, bound)


@pytest.mark.parametrize("family,clean", [("sigma", True), ("alpha", False)])
def test_truncation_and_cleaning_follow_the_family(gguf_files, tokenizer, family, clean):
    path, weights, cfg = gguf_files["Q8_0"]
    clip = load(path, weight_dtype="fp32", family=family, clean_caption=clean)
    ref = reference_encoder(weights, cfg)
    for prompt in (LONG, "Some <i>Mixed</i> CASE text!!"):
        want, _ = diffusers_embeds(ref, tokenizer, prompt, family, clean)
        got = encode(clip, prompt)
        assert got.shape[1] == want.shape[0]
        torch.testing.assert_close(got[0], want, rtol=1e-5, atol=1e-5)
    assert encode(clip, LONG).shape[1] == (120 if family == "alpha" else 300)


def test_default_storage(gguf_files, tokenizer):
    """default: an F16 GGUF stays fp16 (its F32 norms too, as ComfyUI's t5xxl_fp16 holds them); a quantised one is
    dequantised into ComfyUI's text-encoder dtype."""
    import comfy.model_management as mm
    model = load(gguf_files["F16"][0]).cond_stage_model.t5xxl.transformer
    assert model.shared.weight.dtype == torch.float16
    assert model.encoder.final_layer_norm.weight.dtype == torch.float16
    model = load(gguf_files["Q8_0"][0]).cond_stage_model.t5xxl.transformer
    expected = mm.text_encoder_dtype(torch.device("cpu"))
    assert model.shared.weight.dtype == expected
    assert model.encoder.block[1].layer[1].DenseReluDense.wo.weight.dtype == expected


@pytest.mark.parametrize("weight_dtype,dtype", [("bf16", torch.bfloat16), ("fp8_e4m3fn", torch.float8_e4m3fn)])
def test_reduced_storage_of_a_quantised_file(gguf_files, tokenizer, weight_dtype, dtype, monkeypatch):
    """Storage S, compute fp32: exactly transformers holding the dequantised weights rounded to S (bf16 computes in
    fp32 on CPUs without bf16 instructions, as here; test_bf16_comfy.py covers the others)."""
    monkeypatch.setattr("pixart_delta.loaders.dtypes.cpu_computes_bf16", lambda: False)
    path, weights, cfg = gguf_files["Q4_K"]
    clip = load(path, weight_dtype=weight_dtype)
    model = clip.cond_stage_model.t5xxl.transformer
    assert model.encoder.block[0].layer[0].SelfAttention.q.weight.dtype == dtype
    ref = reference_encoder(_rounded(weights, dtype), cfg)
    for prompt in PROMPTS[:2]:
        torch.testing.assert_close(encode(clip, prompt)[0], diffusers_embeds(ref, tokenizer, prompt)[0],
                                   rtol=1e-5, atol=1e-5)


def _graph(t5_name, text):
    return {"1": {"class_type": "PixArtT5Loader",
                  "inputs": {"t5_name": t5_name, "family": "alpha", "max_tokens": 0, "weight_dtype": "fp32",
                             "device": "cpu", "clean_caption": True}},
            "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 0], "text": text}},
            "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}}


def test_node_lists_and_loads_gguf_files(comfy, models_dir, gguf_files, tokenizer):
    from pixart_delta.loaders.t5_comfy import t5_choices
    path, weights, cfg = gguf_files["Q8_0"]
    target = models_dir / "text_encoders" / "gguf" / path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(path.read_bytes())
    assert f"gguf/{path.name}" in t5_choices()
    prompt = "A photo of a Cat sitting on a <b>red</b> mat"
    comfy.run(_graph(f"gguf/{path.name}", prompt))
    out = comfy.executor.caches.outputs.get("2")
    out = getattr(out, "outputs", out)
    tensor, _extra = out[0][0][0]
    torch.testing.assert_close(tensor[0], diffusers_embeds(reference_encoder(weights, cfg), tokenizer, prompt)[0],
                               rtol=1e-5, atol=1e-5)


def test_gguf_of_another_architecture_fails_clearly_through_the_node(comfy, models_dir):
    import numpy as np
    from pixart_delta.tools.comfy_runtime import ExecutionFailed
    folder = models_dir / "text_encoders" / "gguf"
    folder.mkdir(parents=True, exist_ok=True)
    write_gguf(folder / "llama-3-8b-Q4_K_M.gguf", "llama", {"token_embd.weight": np.zeros((32, 8), np.float32)})
    with pytest.raises(ExecutionFailed) as e:
        comfy.run(_graph("gguf/llama-3-8b-Q4_K_M.gguf", "a cat"))
    assert e.value.node_type == "PixArtT5Loader"
    assert "llama-3-8b-Q4_K_M.gguf" in e.value.message and "'llama'" in e.value.message
    assert "not a T5 encoder" in e.value.message
