"""GGUF T5 encoders without ComfyUI: llama.cpp's tensor names against gguf-py's constants and city96's map, the
config from the metadata and the shapes, pieces equal to gguf-py's own dequantisation (F32, F16, Q8_0, Q4_K),
the Q4_K test writer against gguf-py's reader, and the errors for files that are not what they claim."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gguf_files import K_QUANT_TINY, gguf_name, pack_q4_k, quantize_q4_k, write_gguf, write_t5_gguf
from pixart_delta.loaders.files import CheckpointError
from pixart_delta.loaders.t5 import iter_pieces, iter_tensors, resolve_t5_source, t5_config, tensor_meta
from pixart_delta.tiny.io import save
from pixart_delta.tiny.t5 import TINY, XXL, random_t5_state_dict, t5_shapes

gguf = pytest.importorskip("gguf")

# city96/ComfyUI-GGUF loader.py T5_SD_MAP: its loader renames llama.cpp's T5 names with these replacements
CITY96_T5_SD_MAP = {
    "enc.": "encoder.", ".blk.": ".block.", "token_embd": "shared", "output_norm": "final_layer_norm",
    "attn_q": "layer.0.SelfAttention.q", "attn_k": "layer.0.SelfAttention.k", "attn_v": "layer.0.SelfAttention.v",
    "attn_o": "layer.0.SelfAttention.o", "attn_norm": "layer.0.layer_norm",
    "attn_rel_b": "layer.0.SelfAttention.relative_attention_bias", "ffn_up": "layer.1.DenseReluDense.wi_1",
    "ffn_down": "layer.1.DenseReluDense.wo", "ffn_gate": "layer.1.DenseReluDense.wi_0",
    "ffn_norm": "layer.1.layer_norm",
}
FILE_TYPES = {"F32": TINY, "F16": TINY, "Q8_0": TINY, "Q4_K": K_QUANT_TINY}


def read_t5(path):
    """What t5_comfy.load_t5_clip does before it builds anything in ComfyUI."""
    src = resolve_t5_source(path)
    return t5_config(tensor_meta(src.files), src.hf_config, src.files[0], src.config_name)


def _reference_config(cfg, gated=True):
    return {"d_model": cfg["d_model"], "vocab_size": cfg["vocab_size"], "num_layers": cfg["num_layers"],
            "num_heads": cfg["num_heads"], "d_kv": cfg["d_kv"], "d_ff": cfg["d_ff"], "is_gated_act": gated,
            "dense_act_fn": "gelu_pytorch_tanh" if gated else "relu", "model_type": "t5"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf")
    out = {}
    for file_type, cfg in FILE_TYPES.items():
        path = root / f"t5-v1_1-xxl-encoder-{file_type}.gguf"
        out[file_type] = (path, write_t5_gguf(path, cfg, file_type), cfg)
    return out


def test_writer_names_are_llama_cpps_t5encoder_names():
    """The test files' names are gguf-py's TENSOR_NAMES for MODEL_ARCH.T5ENCODER (the output head aside), and
    city96's map turns them back into the transformers names."""
    arch_tensors = [t for t in gguf.MODEL_TENSORS[gguf.MODEL_ARCH.T5ENCODER] if t != gguf.MODEL_TENSOR.OUTPUT]
    n = XXL["num_layers"]
    expected = {gguf.TENSOR_NAMES[t].format(bid=b) + ".weight" for t in arch_tensors for b in range(n)}
    names = {gguf_name(k): k for k in t5_shapes(**XXL)}
    rel = {f"enc.blk.{b}.attn_rel_b.weight" for b in range(1, n)}  # T5 v1.1 has the bias in block 0 only
    assert set(names) == expected - rel
    for name, hf in names.items():
        for old, new in CITY96_T5_SD_MAP.items():
            name = name.replace(old, new)
        assert name == hf


@pytest.mark.parametrize("file_type", FILE_TYPES)
def test_meta_and_config_from_the_metadata_and_shapes(files, file_type):
    path, ref, cfg = files[file_type]
    src = resolve_t5_source(path)
    assert src.files == [path] and not src.sharded and src.gguf
    assert src.hf_config["d_model"] == cfg["d_model"] and src.hf_config["num_layers"] == cfg["num_layers"]
    meta = tensor_meta(src.files)
    assert {k: v[0] for k, v in meta.items()} == t5_shapes(**cfg)
    half = torch.float16 if file_type == "F16" else torch.float32
    assert meta["encoder.block.0.layer.1.DenseReluDense.wo.weight"][1] == half
    assert meta["encoder.final_layer_norm.weight"][1] == torch.float32  # llama.cpp keeps 1-D tensors F32
    assert read_t5(path) == _reference_config(cfg)


@pytest.mark.parametrize("piece_bytes", [None, 1000, 1 << 20])
@pytest.mark.parametrize("file_type", FILE_TYPES)
def test_pieces_reassemble_to_gguf_pys_dequantisation(files, file_type, piece_bytes):
    path, ref, cfg = files[file_type]
    parts, rows = {}, {}
    for key, shape, r0, piece in iter_pieces(path, lambda k: True, piece_bytes):
        assert shape == tuple(ref[key].shape) and r0 == rows.get(key, 0)
        if piece_bytes is not None and len(shape) > 1:
            assert piece.numel() * piece.element_size() <= max(piece_bytes, ref[key][0].numel() * 4)
        rows[key] = r0 + (piece.shape[0] if len(shape) > 1 else 1)
        parts.setdefault(key, []).append(piece.clone())
    assert set(parts) == set(ref)
    for k, v in ref.items():
        got = torch.cat(parts[k]) if len(v.shape) > 1 else parts[k][0]
        assert got.shape == v.shape
        assert torch.equal(got.float(), v), k
    # and not the unquantised weights, for the quantised types
    sd = random_t5_state_dict(cfg)
    w = "encoder.block.0.layer.0.SelfAttention.q.weight"
    assert torch.equal(ref[w], sd[w].half().float() if file_type == "F16" else sd[w]) == (file_type in ("F32", "F16"))


def test_mixed_types_in_one_file(tmp_path):
    """_M files mix types per tensor (llama.cpp keeps attn_v and ffn_down finer): each is read as its own type."""
    path = tmp_path / "t5-Q4_K_M.gguf"
    ref = write_t5_gguf(path, K_QUANT_TINY, "Q4_K", overrides={"SelfAttention.v.": "Q8_0", "DenseReluDense.wo.": "F16"})
    reader = gguf.GGUFReader(str(path))
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["enc.blk.0.attn_v.weight"] == "Q8_0" and types["enc.blk.1.ffn_down.weight"] == "F16"
    assert types["enc.blk.0.attn_q.weight"] == "Q4_K" and types["enc.blk.0.attn_rel_b.weight"] == "F32"
    got = {k: v.clone() for k, v in iter_tensors(path, lambda k: True)}
    assert set(got) == set(ref) and all(torch.equal(got[k].float(), ref[k]) for k in ref)
    assert got["encoder.block.1.layer.1.DenseReluDense.wo.weight"].dtype == torch.float16


def test_q4_k_blocks_are_what_gguf_py_reads():
    """pack_q4_k's layout against gguf-py's dequantiser on random fields, and quantize_q4_k within 4-bit error."""
    rng = np.random.default_rng(1)
    n = 6
    d = rng.uniform(0.001, 0.1, n).astype(np.float16)
    dmin = rng.uniform(0.001, 0.1, n).astype(np.float16)
    sc, mn = rng.integers(0, 64, (n, 8)), rng.integers(0, 64, (n, 8))
    q = rng.integers(0, 16, (n, 8, 32))
    expected = (d.astype(np.float32)[:, None, None] * sc[..., None] * q
                - dmin.astype(np.float32)[:, None, None] * mn[..., None]).reshape(n, 256)
    got = gguf.quants.dequantize(pack_q4_k(d, dmin, sc, mn, q), gguf.GGMLQuantizationType.Q4_K)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    x = rng.standard_normal((16, 512)).astype(np.float32)
    y = gguf.quants.dequantize(quantize_q4_k(x), gguf.GGMLQuantizationType.Q4_K)
    # 16 levels over each 32-value sub-block's range: |error| <= half a step plus the 6-bit scale rounding
    sub = x.reshape(-1, 32)
    step = (sub.max(-1) - np.minimum(sub.min(-1), 0)) / 15
    assert (np.abs(y - x).reshape(-1, 32).max(-1) <= 1.25 * step + 1e-6).all()
    assert 0.02 < np.linalg.norm(y - x) / np.linalg.norm(x) < 0.1


def test_k_quant_writer_refuses_widths_that_are_no_whole_block():
    with pytest.raises(ValueError, match="multiple of 256"):
        quantize_q4_k(np.zeros((2, 64), np.float32))


def test_encoder_decoder_t5_gguf_reads_the_encoder(tmp_path):
    """general.architecture 't5' (llama.cpp's encoder-decoder T5): the dec.* tensors and the output head are skipped."""
    path = tmp_path / "t5-full.gguf"
    ref = write_t5_gguf(path, TINY, "F32", arch="t5", extra={"dec.blk.0.attn_q.weight": np.ones((64, 64)),
                                                             "output.weight": np.ones((32128, 64))})
    assert set(tensor_meta([path])) == set(ref)
    assert read_t5(path) == _reference_config(TINY)


def test_t5_1_0_without_a_gate_maps_ffn_up_to_wi(tmp_path):
    path = tmp_path / "t5-relu.gguf"
    write_t5_gguf(path, TINY, "F32", drop=("ffn_gate",))
    meta = tensor_meta([path])
    assert "encoder.block.0.layer.1.DenseReluDense.wi.weight" in meta
    assert not any("wi_0" in k or "wi_1" in k for k in meta)
    assert read_t5(path) == _reference_config(TINY, gated=False)


def test_metadata_that_does_not_fit_the_shapes_is_a_clear_error(tmp_path):
    path = tmp_path / "t5-bad-meta.gguf"
    write_t5_gguf(path, TINY, "F32", metadata={"{arch}.embedding_length": 128})
    with pytest.raises(CheckpointError, match=r"t5-bad-meta\.gguf: the GGUF metadata says d_model=128 but the "
                                              r"weights have d_model=64"):
        read_t5(path)
    path = tmp_path / "t5-eps.gguf"
    write_t5_gguf(path, TINY, "F32", metadata={"{arch}.attention.layer_norm_rms_epsilon": 1e-5})
    with pytest.raises(CheckpointError, match=r"t5-eps\.gguf: the GGUF metadata says layer_norm_epsilon=1e-05"):
        read_t5(path)


def test_config_from_shapes_alone(tmp_path):
    path = tmp_path / "t5-nometa.gguf"
    write_t5_gguf(path, TINY, "F16", metadata={"{arch}.embedding_length": None, "{arch}.block_count": None,
                                               "{arch}.attention.head_count": None})
    assert "d_model" not in resolve_t5_source(path).hf_config
    assert read_t5(path) == _reference_config(TINY)


# ---- files that are not what they claim ----

def error_of(path) -> str:
    with pytest.raises(CheckpointError) as e:
        read_t5(path)
    return str(e.value)


@pytest.mark.parametrize("arch,tensors,says", [
    ("llama", {"token_embd.weight": np.zeros((32, 8), np.float32), "blk.0.attn_q.weight": np.zeros((8, 8), np.float32)},
     "'llama' model"),
    ("flux", {"double_blocks.0.img_attn.qkv.weight": np.zeros((8, 8), np.float16),
              "single_blocks.0.linear1.weight": np.zeros((8, 8), np.float16)},
     "'flux' model (its tensors look like a Flux transformer)"),
    (None, {"enc.blk.0.attn_q.weight": np.zeros((8, 8), np.float32)}, "a model without general.architecture"),
])
def test_gguf_of_another_architecture(tmp_path, arch, tensors, says):
    path = write_gguf(tmp_path / "model.gguf", arch, tensors)
    msg = error_of(path)
    assert str(path) in msg and says in msg and "not a T5 encoder" in msg and "t5encoder" in msg
    assert next(iter(tensors)) in msg  # what was found


def test_truncated_gguf(files, tmp_path):
    path, _ref, _cfg = files["Q8_0"]
    data = path.read_bytes()
    for keep in (len(data) // 2, len(data) - 100, 200):
        cut = tmp_path / f"cut-{keep}.gguf"
        cut.write_bytes(data[:keep])
        msg = error_of(cut)
        assert str(cut) in msg and "truncated" in msg and "download it again" in msg


def test_empty_and_text_gguf(tmp_path):
    empty = tmp_path / "t5-v1_1-xxl-encoder-Q8_0.gguf"
    empty.write_bytes(b"")
    msg = error_of(empty)
    assert str(empty) in msg and "empty (0 bytes)" in msg
    lfs = tmp_path / "t5-v1_1-xxl-encoder-Q5_K_M.gguf"
    lfs.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 3390000000\n")
    msg = error_of(lfs)
    assert str(lfs) in msg and "Git LFS pointer" in msg and "3,390,000,000-byte" in msg


def test_other_file_named_gguf(tmp_path):
    path = save(tmp_path / "t5.safetensors", random_t5_state_dict(TINY))
    renamed = path.rename(tmp_path / "t5.gguf")
    msg = error_of(renamed)
    assert str(renamed) in msg and "not a GGUF file" in msg and "safetensors" in msg and "b'GGUF'" in msg


def test_folder_with_one_gguf_resolves_to_it(files, tmp_path):
    path, _ref, _cfg = files["F16"]
    folder = tmp_path / "t5-gguf"
    folder.mkdir()
    (folder / path.name).write_bytes(path.read_bytes())
    assert resolve_t5_source(folder).files == [folder / path.name]


def test_tensor_type_gguf_py_cannot_dequantise(tmp_path):
    path = write_gguf(tmp_path / "t5-int.gguf", "t5encoder", {"token_embd.weight": np.zeros((32, 8), np.int32)})
    msg = error_of(path)
    assert str(path) in msg and "token_embd.weight is stored as I32" in msg and "cannot dequantise" in msg
