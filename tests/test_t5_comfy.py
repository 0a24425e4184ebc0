"""PixArt T5 Loader inside ComfyUI: the CLIP it builds encodes prompts exactly as diffusers' PixArt pipelines
(transformers T5EncoderModel + encode_prompt with its padding mask), for sharded folders and single files."""
from __future__ import annotations

import pytest
import torch

from pixart_delta.tiny.t5 import TINY, random_t5_state_dict, write_hf_t5_folder, write_single_t5
from t5_reference import LONG, PROMPTS, diffusers_embeds, encode, load, reference_encoder

pytestmark = [pytest.mark.comfyui, pytest.mark.usefixtures("one_torch_thread")]
transformers = pytest.importorskip("transformers")
diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def t5_files(comfy, tmp_path_factory):
    root = tmp_path_factory.mktemp("t5c")
    write_hf_t5_folder(root / "st", TINY, n_shards=2)
    write_hf_t5_folder(root / "bin", TINY, n_shards=2, fmt="bin")
    write_single_t5(root / "t5xxl_fp32.safetensors", TINY, dtype=torch.float32)
    write_single_t5(root / "t5xxl_fp16.safetensors", TINY, dtype=torch.float16)
    return root


@pytest.mark.parametrize("choice", ["st/model-00001-of-00002.safetensors", "st/model-00002-of-00002.safetensors", "st",
                                    "bin/pytorch_model-00001-of-00002.bin", "t5xxl_fp32.safetensors"])
def test_fp32_parity_with_transformers(t5_files, tokenizer, choice):
    clip = load(t5_files / choice, weight_dtype="fp32")
    ref = reference_encoder()
    for prompt in PROMPTS:
        want, want_neg = diffusers_embeds(ref, tokenizer, prompt)
        got = encode(clip, prompt)
        assert got.shape == (1, want.shape[0], TINY["d_model"])
        torch.testing.assert_close(got[0], want, rtol=1e-5, atol=1e-5)
    # the empty negative is the end token alone, as diffusers encodes "" (mask keeps one position)
    torch.testing.assert_close(encode(clip, "")[0], want_neg, rtol=1e-5, atol=1e-5)
    assert want_neg.shape[0] == 1


@pytest.mark.parametrize("family,clean", [("alpha", True), ("sigma", True), ("alpha", False)])
def test_truncation_and_cleaning_follow_the_family(t5_files, tokenizer, family, clean):
    clip = load(t5_files / "st", weight_dtype="fp32", family=family, clean_caption=clean)
    ref = reference_encoder()
    for prompt in (LONG, "Some <i>Mixed</i> CASE text!!"):
        want, _ = diffusers_embeds(ref, tokenizer, prompt, family, clean)
        got = encode(clip, prompt)
        assert got.shape[1] == want.shape[0]
        torch.testing.assert_close(got[0], want, rtol=1e-5, atol=1e-5)
    assert encode(clip, LONG).shape[1] == (120 if family == "alpha" else 300)


def test_max_tokens_overrides_family(t5_files):
    clip = load(t5_files / "st", weight_dtype="fp32", family="sigma", max_tokens=77)
    assert encode(clip, LONG).shape[1] == 77


def _roundtrip(dtype):
    return {k: v.to(dtype).float() for k, v in random_t5_state_dict(TINY).items()}


@pytest.mark.parametrize("weight_dtype,dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16),
                                                ("fp8_e4m3fn", torch.float8_e4m3fn)])
def test_reduced_storage(t5_files, tokenizer, weight_dtype, dtype, monkeypatch):
    """Storage dtype S, compute fp32: exactly transformers with the weights rounded to S (1e-5). bf16 is computed
    in fp32 on CPUs without bf16 instructions, as here (on others it computes in bf16: test_bf16_comfy.py).

    Against the unrounded fp32 model the only error is the weights' rounding. Round-to-nearest gives each weight
    a relative error up to 2^-(p+1) (p mantissa bits: fp16 10, bf16 7, fp8 e4m3 3, i.e. 6.25% for fp8); per tensor
    the relative L2 error e_i is ~2.7% for fp8 and ~0.17% for bf16 here. The n weight tensors on the path act in
    sequence with independent errors, and T5's RMS norms stop them from growing, so they add like a random walk:
    output relative L2 error ~ sqrt(sum e_i^2) <= sqrt(n) * rms(e_i). The bound is 1.5x that (fp8: ~0.18; measured
    ~0.09; bf16 bound ~0.012, measured ~0.006)."""
    monkeypatch.setattr("pixart_delta.loaders.dtypes.cpu_computes_bf16", lambda: False)
    clip = load(t5_files / "st", weight_dtype=weight_dtype)
    model = clip.cond_stage_model.t5xxl.transformer
    assert model.encoder.block[0].layer[0].SelfAttention.q.weight.dtype == dtype
    assert model.shared.weight.dtype == dtype
    exact, full = reference_encoder(_roundtrip(dtype)), reference_encoder()
    weights = random_t5_state_dict(TINY)
    errs = torch.tensor([((w - w.to(dtype).float()).norm() / w.norm()).item() for w in weights.values()])
    bound = 1.5 * (len(errs) ** 0.5) * errs.pow(2).mean().sqrt().item()
    for prompt in PROMPTS[:2]:
        got = encode(clip, prompt)[0]
        torch.testing.assert_close(got, diffusers_embeds(exact, tokenizer, prompt)[0], rtol=1e-5, atol=1e-5)
        want = diffusers_embeds(full, tokenizer, prompt)[0]
        rel = ((got - want).norm() / want.norm()).item()
        assert rel < bound, rel


def test_default_dtype_keeps_fp16_file_as_stored(t5_files, tokenizer):
    clip = load(t5_files / "t5xxl_fp16.safetensors")
    assert clip.cond_stage_model.t5xxl.transformer.shared.weight.dtype == torch.float16
    exact = reference_encoder(_roundtrip(torch.float16))
    torch.testing.assert_close(encode(clip, PROMPTS[0])[0], diffusers_embeds(exact, tokenizer, PROMPTS[0])[0],
                               rtol=1e-5, atol=1e-5)


def test_progress_per_shard(t5_files):
    calls = []
    load(t5_files / "st", weight_dtype="fp32", progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 2), (2, 2)]


def test_missing_shard_fails_clearly_through_the_node(comfy, models_dir):
    from pixart_delta.tools.comfy_runtime import ExecutionFailed
    folder = models_dir / "text_encoders" / "T5-broken"
    write_hf_t5_folder(folder, TINY, n_shards=2)
    (folder / "model-00002-of-00002.safetensors").unlink()
    graph = _graph("T5-broken/model-00001-of-00002.safetensors", "a cat")
    with pytest.raises(ExecutionFailed) as e:
        comfy.run(graph)
    assert e.value.node_type == "PixArtT5Loader"
    assert "model-00002-of-00002.safetensors" in e.value.message and "missing" in e.value.message


def _graph(t5_name, text, **loader):
    return {"1": {"class_type": "PixArtT5Loader",
                  "inputs": {"t5_name": t5_name, "family": "alpha", "max_tokens": 0, "weight_dtype": "fp32",
                             "device": "cpu", "clean_caption": True, **loader}},
            "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 0], "text": text}},
            "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}}


@pytest.mark.parametrize("t5_name", ["PixArt-T5/model-00002-of-00002.safetensors", "PixArt-T5", "t5xxl_fp16.safetensors"])
def test_core_clip_text_encode_accepts_the_clip(comfy, models_dir, tokenizer, t5_name):
    from pixart_delta.tiny import write_for_workflow
    written = write_for_workflow(_graph("PixArt-T5/model-00001-of-00002.safetensors", "")
                                 | {"9": {"class_type": "X", "inputs": {"a": "t5xxl_fp16.safetensors"}}}, models_dir)
    assert len(written) == 2
    prompt = "A photo of a Cat sitting on a <b>red</b> mat"
    comfy.run(_graph(t5_name, prompt))
    out = comfy.executor.caches.outputs.get("2")
    out = getattr(out, "outputs", out)
    cond = out[0][0]
    assert isinstance(cond, list) and len(cond) == 1
    tensor, extra = cond[0]
    stored = torch.float16 if t5_name.startswith("t5xxl") else None
    ref = reference_encoder(_roundtrip(stored) if stored else None)
    torch.testing.assert_close(tensor[0], diffusers_embeds(ref, tokenizer, prompt)[0], rtol=1e-5, atol=1e-5)


def test_scaled_fp8_file_as_comfyui_ships_it(tmp_path, tokenizer):
    """t5xxl_fp8_e4m3fn_scaled: fp8 linear weights with a per-tensor `scale_weight`, a `scaled_fp8` marker, fp16
    embedding and norms. Equals transformers with the dequantized weights (fp8 * scale)."""
    from pixart_delta.tiny.io import save
    sd = random_t5_state_dict(TINY)
    stored, dequant = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}, {}
    for k, w in sd.items():
        if w.dim() == 2 and k != "shared.weight" and "relative_attention_bias" not in k:
            scale = w.abs().max() / 448.0
            q = (w / scale).to(torch.float8_e4m3fn)
            stored[k], stored[k.replace(".weight", ".scale_weight")] = q, scale.reshape(())
            dequant[k] = q.float() * scale
        else:
            stored[k] = w.half()
            dequant[k] = w.half().float()
    f = save(tmp_path / "t5xxl_fp8_e4m3fn_scaled.safetensors", stored)
    clip = load(f)
    model = clip.cond_stage_model.t5xxl.transformer
    assert model.encoder.block[0].layer[1].DenseReluDense.wi_0.weight.dtype == torch.float8_e4m3fn
    ref = reference_encoder(dequant)
    for prompt in PROMPTS[:2]:
        torch.testing.assert_close(encode(clip, prompt)[0], diffusers_embeds(ref, tokenizer, prompt)[0],
                                   rtol=1e-5, atol=1e-5)


def test_incomplete_t5_file_is_a_clear_error(comfy, tmp_path):
    from pixart_delta.tiny.io import save
    from pixart_delta.loaders.files import CheckpointError
    sd = random_t5_state_dict(TINY)
    del sd["encoder.block.1.layer.1.DenseReluDense.wo.weight"]
    f = save(tmp_path / "t5_incomplete.safetensors", sd)
    with pytest.raises(CheckpointError, match=r"t5_incomplete\.safetensors.*lack 1 tensors.*block\.1\.layer\.1\.DenseReluDense\.wo"):
        load(f)
