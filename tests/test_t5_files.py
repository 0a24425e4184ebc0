"""T5 files without ComfyUI: fixture layouts (checked with transformers), shard resolution, safe reading,
config inference and diffusers' caption cleaning."""
from __future__ import annotations

import json
import pickle

import pytest
import torch

from reference import CodeRunningPickle

from pixart_delta.tiny.t5 import (TINY, hf_config, random_t5_state_dict, write_hf_t5_folder, write_single_t5)
from pixart_delta.loaders.files import CheckpointError
from pixart_delta.loaders.t5_prompt import clean_caption, preprocess_prompt
from pixart_delta.loaders.t5 import (iter_tensors, resolve_t5_source, t5_config,
                                     tensor_meta)

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def st_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("t5") / "text_encoder"
    write_hf_t5_folder(folder, TINY, n_shards=2)
    return folder


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_fixture_folder_is_what_transformers_writes_and_reads(tmp_path, fmt):
    shards = write_hf_t5_folder(tmp_path, TINY, n_shards=2, fmt=fmt)
    assert [p.name for p in shards] == ([f"model-0000{i}-of-00002.safetensors" for i in (1, 2)] if fmt == "safetensors"
                                        else [f"pytorch_model-0000{i}-of-00002.bin" for i in (1, 2)])
    model, info = transformers.T5EncoderModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    # the key names are those transformers itself saves for a T5 v1.1 encoder (tied embed_tokens dropped)
    ref = transformers.T5EncoderModel(transformers.T5Config(**{k: v for k, v in hf_config(**TINY).items()
                                                               if k not in ("architectures", "torch_dtype")}))
    saved = set(json.loads(next(tmp_path.glob("*.index.json")).read_text())["weight_map"])
    assert saved == set(ref.state_dict()) - {"encoder.embed_tokens.weight"}
    sd = random_t5_state_dict(TINY)
    for k, v in sd.items():
        torch.testing.assert_close(model.state_dict()[k], v, rtol=0, atol=0)


def test_any_shard_folder_or_index_resolves_to_the_whole_set(st_folder):
    expected = [st_folder / "model-00001-of-00002.safetensors", st_folder / "model-00002-of-00002.safetensors"]
    for chosen in (st_folder, expected[0], expected[1], st_folder / "model.safetensors.index.json"):
        src = resolve_t5_source(chosen)
        assert src.sharded and src.files == expected
        assert src.hf_config["d_model"] == TINY["d_model"]


def test_single_file_resolves_to_itself(tmp_path):
    f = write_single_t5(tmp_path / "t5xxl_fp16.safetensors", TINY)
    src = resolve_t5_source(f)
    assert not src.sharded and src.files == [f] and src.hf_config is None


def test_missing_shard_is_a_clear_error(tmp_path):
    write_hf_t5_folder(tmp_path, TINY, n_shards=2)
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    for chosen in (tmp_path, tmp_path / "model-00001-of-00002.safetensors"):
        with pytest.raises(CheckpointError) as e:
            resolve_t5_source(chosen)
        msg = str(e.value)
        assert str(tmp_path) in msg and "model-00002-of-00002.safetensors" in msg and "missing" in msg
        assert "2 shards" in msg and "model-00001-of-00002.safetensors" in msg  # what was found and expected


def test_shard_without_index_is_a_clear_error(tmp_path):
    write_hf_t5_folder(tmp_path, TINY, n_shards=2)
    (tmp_path / "model.safetensors.index.json").unlink()
    with pytest.raises(CheckpointError, match=r"model-00001-of-00002\.safetensors.*one shard of a set of 2.*index"):
        resolve_t5_source(tmp_path / "model-00001-of-00002.safetensors")


def test_bad_index_is_a_clear_error(tmp_path):
    write_hf_t5_folder(tmp_path, TINY, n_shards=2)
    (tmp_path / "model.safetensors.index.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"model\.safetensors\.index\.json.*JSON"):
        resolve_t5_source(tmp_path)


@pytest.mark.parametrize("container", ["torch_zip", "raw_pickle"])
def test_bin_shard_pickle_that_runs_code_is_refused_not_run(tmp_path, container):
    write_hf_t5_folder(tmp_path, TINY, n_shards=2, fmt="bin")
    marker = tmp_path / "executed"
    bad = tmp_path / "pytorch_model-00002-of-00002.bin"
    sd = torch.load(bad, weights_only=True)
    sd["encoder.final_layer_norm.weight"] = CodeRunningPickle(marker)
    if container == "torch_zip":
        torch.save(sd, bad)
    else:
        with open(bad, "wb") as f:
            pickle.dump(sd, f, protocol=2)
    src = resolve_t5_source(tmp_path)
    with pytest.raises(CheckpointError, match="refused"):
        list(iter_tensors(src.files[1], lambda k: True))
    assert not marker.exists()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float8_e4m3fn])
def test_plain_reads_equal_safetensors(tmp_path, dtype):
    import safetensors.torch
    f = write_single_t5(tmp_path / "t5.safetensors", TINY, dtype=dtype)
    ref = safetensors.torch.load_file(str(f))
    got = dict(iter_tensors(f, lambda k: True))
    assert set(got) == set(ref)
    for k in ref:
        assert got[k].dtype == ref[k].dtype and torch.equal(got[k].view(torch.uint8), ref[k].view(torch.uint8))
    only = dict(iter_tensors(f, lambda k: k == "shared.weight"))
    assert list(only) == ["shared.weight"]


def test_bin_shards_read_like_torch_load(tmp_path):
    write_hf_t5_folder(tmp_path, TINY, n_shards=2, fmt="bin")
    src = resolve_t5_source(tmp_path / "pytorch_model-00002-of-00002.bin")
    got = {}
    for f in src.files:
        got.update(iter_tensors(f, lambda k: True))
    ref = random_t5_state_dict(TINY)
    assert set(got) == set(ref) and all(torch.equal(got[k], ref[k]) for k in ref)


def _reference_config(cfg):
    return {"d_model": cfg["d_model"], "vocab_size": cfg["vocab_size"], "num_layers": cfg["num_layers"],
            "num_heads": cfg["num_heads"], "d_kv": cfg["d_kv"], "d_ff": cfg["d_ff"], "is_gated_act": True,
            "dense_act_fn": "gelu_pytorch_tanh", "model_type": "t5"}


@pytest.mark.parametrize("cfg", [TINY, dict(d_model=96, d_kv=8, num_heads=6, d_ff=200, num_layers=3, vocab_size=32128)])
def test_config_from_shapes_and_from_config_json(tmp_path, st_folder, cfg):
    f = write_single_t5(tmp_path / "t5.safetensors", cfg)
    assert t5_config(tensor_meta([f])) == _reference_config(cfg)
    if cfg is TINY:
        src = resolve_t5_source(st_folder)
        assert t5_config(tensor_meta(src.files), src.hf_config) == _reference_config(TINY)


def test_full_xxl_config_from_header_shapes(tmp_path):
    """The real t5xxl_fp16 shapes give ComfyUI's own t5_config_xxl.json values (header only, no weights written)."""
    from pixart_delta.tiny.t5 import XXL, t5_shapes
    meta = {k: (s, torch.float16) for k, s in t5_shapes(**XXL).items()}
    assert t5_config(meta) == {"d_model": 4096, "vocab_size": 32128, "num_layers": 24, "num_heads": 64, "d_kv": 64,
                               "d_ff": 10240, "is_gated_act": True, "dense_act_fn": "gelu_pytorch_tanh", "model_type": "t5"}


def test_config_json_that_does_not_fit_is_a_clear_error(st_folder):
    src = resolve_t5_source(st_folder)
    with pytest.raises(CheckpointError, match=r"config\.json says d_model=128 but the weights have d_model=64"):
        t5_config(tensor_meta(src.files), {**src.hf_config, "d_model": 128}, st_folder)


def test_not_a_t5_is_a_clear_error(tmp_path):
    from pixart_delta.tiny.io import save
    f = save(tmp_path / "unet.safetensors", {"input_blocks.0.0.weight": torch.zeros(4, 4)})
    with pytest.raises(CheckpointError, match=r"unet\.safetensors.*not a T5 encoder.*input_blocks\.0\.0\.weight.*expected"):
        t5_config(tensor_meta([f]), None, f)


CAPTIONS = [
    "A photo of a Cat sitting on a MAT",
    "  Visit https://example.com/cat.png or www.cats.org <b>now</b>!!! @user #12 ",
    "«Quoted» “text” with ‘quotes’ — and dashes – here; 192.168.0.1 page 12 ok",
    "this_is_my_cute_cat-with-many-dashes and (parentheses) [brackets] {braces} *stars* | pipes",
    "Free shipping! Click on here, download free wallpaper 1920x1080 jc6640 6640vc231",
    "漢字 mixed with english, &amp; &quot;html&quot; entities &lt;tag&gt; and a\\nnewline",
    "'single quoted whole'",
    "",
]


@pytest.mark.parametrize("text", CAPTIONS)
def test_caption_cleaning_matches_diffusers(text):
    pytest.importorskip("bs4")
    pytest.importorskip("ftfy")
    from diffusers import PixArtAlphaPipeline, PixArtSigmaPipeline
    for pipe in (PixArtAlphaPipeline, PixArtSigmaPipeline):
        assert clean_caption(text) == pipe._clean_caption(pipe, text)
        obj = object.__new__(pipe)
        for clean in (True, False):
            assert preprocess_prompt(text, clean) == pipe._text_preprocessing(obj, text, clean_caption=clean)[0]


@pytest.mark.parametrize("piece_bytes", [1000, 1 << 20])
@pytest.mark.parametrize("reader", ["mmap", "file_reads"])
def test_pieces_reassemble_to_the_safetensors_tensors(tmp_path, monkeypatch, piece_bytes, reader):
    import mmap
    import safetensors.torch
    from pixart_delta.loaders.t5 import iter_pieces
    if reader == "file_reads":  # systems without madvise (Windows) read pieces into one reused buffer
        monkeypatch.delattr(mmap, "MADV_DONTNEED", raising=False)
    elif not hasattr(mmap, "MADV_DONTNEED"):
        pytest.skip("no madvise on this OS")
    f = write_single_t5(tmp_path / "t5.safetensors", TINY, dtype=torch.bfloat16)
    ref = safetensors.torch.load_file(str(f))
    parts: dict[str, list] = {}
    rows: dict[str, int] = {}
    for key, shape, r0, piece in iter_pieces(f, lambda k: True, piece_bytes):
        assert shape == tuple(ref[key].shape) and r0 == rows.get(key, 0)
        rows[key] = r0 + piece.shape[0]
        assert piece.numel() * piece.element_size() <= max(piece_bytes, ref[key][0].numel() * 2)
        parts.setdefault(key, []).append(piece.clone())
    assert set(parts) == set(ref)
    for k, v in ref.items():
        assert torch.equal(torch.cat(parts[k]), v)


def test_folder_with_both_formats_uses_the_complete_set(tmp_path):
    """HF repos often hold safetensors and .bin shards with both indexes; a shard picks its own set, the folder
    the safetensors set, or the complete one when the other lacks files."""
    write_hf_t5_folder(tmp_path, TINY, n_shards=2)
    write_hf_t5_folder(tmp_path, TINY, n_shards=2, fmt="bin")
    assert resolve_t5_source(tmp_path).files[0].suffix == ".safetensors"
    assert resolve_t5_source(tmp_path / "pytorch_model-00002-of-00002.bin").files == [
        tmp_path / "pytorch_model-00001-of-00002.bin", tmp_path / "pytorch_model-00002-of-00002.bin"]
    (tmp_path / "model-00001-of-00002.safetensors").unlink()
    assert resolve_t5_source(tmp_path).files[0].suffix == ".bin"


def test_unsharded_hf_folder_prefers_safetensors(tmp_path):
    write_single_t5(tmp_path / "model.safetensors", TINY)
    write_single_t5(tmp_path / "pytorch_model.bin", TINY)
    (tmp_path / "config.json").write_text(json.dumps(hf_config(**TINY)))
    src = resolve_t5_source(tmp_path)
    assert src.files == [tmp_path / "model.safetensors"] and src.hf_config["num_layers"] == TINY["num_layers"]
