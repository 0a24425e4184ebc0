"""Bad files in every loader, without ComfyUI: empty and cut-short files, pickles that would run code, web pages
and Git LFS pointers saved under weight-file names, broken T5 shard indexes, a bad TAESD encoder picked up beside
its decoder; and what identify() calls the model families the loaders are handed by mistake."""
from __future__ import annotations

import json
import os
import pickle

import pytest
import torch

from pixart_delta.loaders.files import CheckpointError
from pixart_delta.loaders.hed import read_hed_state_dict
from pixart_delta.loaders.identify import identify
from pixart_delta.loaders.pixart import inspect_checkpoint
from pixart_delta.loaders.pixart_controlnet import read_controlnet
from pixart_delta.loaders.t5 import resolve_t5_source, t5_config, tensor_meta
from pixart_delta.loaders.tiny_vae import read_tiny_vae
from pixart_delta.tiny import pixart as fx
from pixart_delta.tiny.hed import random_hed_state_dict
from pixart_delta.tiny.io import save
from pixart_delta.tiny.pixart_controlnet import tiny_controlnet_file
from pixart_delta.tiny.t5 import TINY as T5_TINY, random_t5_state_dict, write_hf_t5_folder
from pixart_delta.tiny.tiny_vae import random_taesd_decoder, random_taesd_encoder

HED_WIDTHS = (8, 16, 32, 32, 32)


def read_t5(path):
    """What t5_comfy.load_t5_clip does before it builds anything in ComfyUI."""
    src = resolve_t5_source(path)
    return t5_config(tensor_meta(src.files), src.hf_config, src.files[0])


LOADERS = {
    "pixart": inspect_checkpoint,
    "controlnet": read_controlnet,
    "hed": read_hed_state_dict,
    "tiny_vae": read_tiny_vae,
    "t5": read_t5,
}
EXTENSIONS = (".pth", ".pt", ".bin", ".ckpt", ".safetensors", ".sft")
PICKLE_EXTENSIONS = (".pth", ".pt", ".bin", ".ckpt")
# a taesd_decoder name, so that the tiny VAE loader would look for an encoder beside it
NAMES = {"pixart": "PixArt-XL-2-512x512", "controlnet": "PixArt-XL-2-1024-ControlNet", "hed": "ControlNetHED",
         "tiny_vae": "taesd_decoder", "t5": "t5xxl_fp16"}


def error_of(loader: str, path) -> str:
    with pytest.raises(CheckpointError) as e:
        LOADERS[loader](path)
    return str(e.value)


@pytest.mark.parametrize("ext", EXTENSIONS)
@pytest.mark.parametrize("loader", LOADERS)
def test_zero_byte_file(tmp_path, loader, ext):
    path = tmp_path / (NAMES[loader] + ext)
    path.write_bytes(b"")
    msg = error_of(loader, path)
    assert str(path) in msg and "empty (0 bytes)" in msg


@pytest.mark.parametrize("content", [b"\x80", b"\x80\x02}q\x00.", b"PK\x03\x04\x00\x00", b"\x10\x00\x00\x00"])
@pytest.mark.parametrize("ext", EXTENSIONS)
@pytest.mark.parametrize("loader", LOADERS)
def test_short_file(tmp_path, loader, ext, content):
    path = tmp_path / (NAMES[loader] + ext)
    path.write_bytes(content)
    msg = error_of(loader, path)
    n = len(content)
    assert str(path) in msg and f"{n} byte{'s' if n > 1 else ''}, too short to be a weight file" in msg


class _RunsCommand:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _RunsPython:
    def __init__(self, source):
        self.source = source

    def __reduce__(self):
        return (exec, (self.source,))


def _write_bomb(path, payload, container):
    if container.startswith("torch"):
        sd = {"blocks.0.attn.qkv.weight": torch.zeros(3), "norm": payload, "shared.weight": torch.zeros(2)}
        torch.save(sd, path, _use_new_zipfile_serialization=container == "torch_zip")
    else:  # what pickle.dump writes; tensors left out, as plain pickle stores them through other globals
        path.write_bytes(pickle.dumps({"blocks.0.attn.qkv.weight": [0.0], "norm": payload}, protocol=int(container[-1])))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("container", ["torch_zip", "torch_legacy", "raw_protocol_2", "raw_protocol_4"])
@pytest.mark.parametrize("ext", PICKLE_EXTENSIONS)
@pytest.mark.parametrize("loader", LOADERS)
def test_pickle_that_would_run_a_command_is_refused_never_run(tmp_path, loader, ext, container):
    marker = tmp_path / "command-ran"
    path = tmp_path / (NAMES[loader] + ext)
    _write_bomb(path, _RunsCommand(f"touch {marker}"), container)
    msg = error_of(loader, path)
    assert not marker.exists()
    assert str(path) in msg and "refused" in msg and "not executed" in msg
    assert f"{os.system.__module__}.system" in msg      # posix.system on Linux
    assert "weights_only" not in msg and "Re-running" not in msg
    assert ".safetensors" in msg and "trusted source" in msg


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("container", ["torch_zip", "raw_protocol_0", "raw_protocol_2", "raw_protocol_5"])
def test_pickle_that_would_run_python_names_builtins_exec(tmp_path, container):
    marker = tmp_path / "exec-ran"
    path = tmp_path / "ControlNetHED.pth"
    _write_bomb(path, _RunsPython(f"open({str(marker)!r}, 'w').close()"), container)
    msg = error_of("hed", path)
    assert not marker.exists()
    assert "builtins.exec" in msg and "weights_only" not in msg


HTML_PAGES = [
    b"<!DOCTYPE html>\n<html class=\"\" lang=\"en\">\n<head><meta charset=\"utf-8\" />\n"
    b"<title>Hugging Face \xe2\x80\x93 The AI community building the future.</title></head>\n"
    b"<body><p>You need to agree to share your contact information to access this model</p></body></html>\n",
    b"\xef\xbb\xbf \r\n  <html><body>401 Unauthorized</body></html>",
    b"\n\n<!doctype html><html><head></head></html>" + b"x" * 10000,
]


@pytest.mark.parametrize("page", range(len(HTML_PAGES)))
@pytest.mark.parametrize("ext", [".pth", ".safetensors", ".bin"])
@pytest.mark.parametrize("loader", LOADERS)
def test_html_page_is_called_an_html_page(tmp_path, loader, ext, page):
    path = tmp_path / (NAMES[loader] + ext)
    path.write_bytes(HTML_PAGES[page])
    msg = error_of(loader, path)
    assert str(path) in msg and "an HTML page, not weights" in msg and "web page" in msg
    assert "log in / accept the licence" in msg
    if page == 0:
        assert "Hugging Face – The AI community" in msg     # its title says which site it came from


LFS_POINTER = (b"version https://git-lfs.github.com/spec/v1\n"
               b"oid sha256:5e5c7a1ea6fd5d2b3c7d5bd4e4c1d5bc1a8bf3c7c5b1e2c9c5b6a2f4b9a3a1e7\nsize 2446781184\n")


@pytest.mark.parametrize("ext", [".pth", ".safetensors"])
@pytest.mark.parametrize("loader", LOADERS)
def test_git_lfs_pointer_is_called_what_it_is(tmp_path, loader, ext):
    path = tmp_path / (NAMES[loader] + ext)
    path.write_bytes(LFS_POINTER)
    msg = error_of(loader, path)
    assert str(path) in msg and "Git LFS pointer" in msg and "2,446,781,184-byte" in msg and "git lfs pull" in msg


@pytest.mark.parametrize("ext", [".pth", ".safetensors"])
def test_json_and_other_text_are_called_text(tmp_path, ext):
    path = tmp_path / f"model{ext}"
    path.write_text('{"error": "Repository Not Found for url: https://huggingface.co/api/models/x/y."}')
    msg = error_of("pixart", path)
    assert "JSON text file, not weights" in msg and "Repository Not Found" in msg
    path.write_text("Access denied. Please try again later, or contact the site administrator.\n")
    msg = error_of("pixart", path)
    assert str(path) in msg and "a text file, not weights" in msg and "Access denied" in msg


def test_binary_file_is_not_called_text(tmp_path):
    # a safetensors file whose header length is 0x7b ("{") is binary all the same: the length holds NUL bytes
    entry = {"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    fill = 0x7b - len(json.dumps({**entry, "__metadata__": {"p": ""}}).encode())
    header = json.dumps({**entry, "__metadata__": {"p": "x" * fill}}).encode()
    assert len(header) == 0x7b
    path = tmp_path / "model.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + torch.ones(1).numpy().tobytes())
    assert path.read_bytes()[:1] == b"{"
    msg = error_of("pixart", path)
    assert "this is not a PixArt checkpoint" in msg and "x" in msg and "not weights" not in msg


# ---- T5 shard indexes ----

def test_t5_folder_with_an_empty_index(tmp_path):
    write_hf_t5_folder(tmp_path, T5_TINY, n_shards=2)
    index = tmp_path / "model.safetensors.index.json"
    index.write_bytes(b"")
    for chosen in (tmp_path, index, tmp_path / "model-00001-of-00002.safetensors"):
        msg = error_of("t5", chosen)
        assert str(index) in msg and "empty (0 bytes)" in msg


@pytest.mark.parametrize("content", [{"metadata": {"total_size": 0}, "weight_map": {}}, {"metadata": {}}])
def test_t5_index_that_lists_no_shards(tmp_path, content):
    write_hf_t5_folder(tmp_path, T5_TINY, n_shards=2)
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps(content))
    msg = error_of("t5", tmp_path)
    assert str(index) in msg and "names no weight files" in msg
    assert ("lists no shards" in msg) == ("weight_map" in content)


def test_t5_index_that_is_a_web_page(tmp_path):
    write_hf_t5_folder(tmp_path, T5_TINY, n_shards=2)
    index = tmp_path / "model.safetensors.index.json"
    index.write_bytes(HTML_PAGES[1])
    msg = error_of("t5", tmp_path)
    assert str(index) in msg and "an HTML page" in msg


def test_t5_empty_shard_in_a_complete_set(tmp_path):
    write_hf_t5_folder(tmp_path, T5_TINY, n_shards=2, fmt="bin")
    shard = tmp_path / "pytorch_model-00002-of-00002.bin"
    shard.write_bytes(b"")
    msg = error_of("t5", tmp_path)
    assert str(shard) in msg and "empty (0 bytes)" in msg


# ---- the TAESD encoder found beside the chosen decoder ----

@pytest.mark.parametrize("encoder", ["empty", "html", "hed", "truncated"])
def test_bad_encoder_beside_the_decoder_says_it_was_picked_up(tmp_path, encoder):
    decoder = save(tmp_path / "taesd_decoder.pth", random_taesd_decoder())
    enc = tmp_path / "taesd_encoder.pth"
    if encoder == "empty":
        enc.write_bytes(b"")
    elif encoder == "html":
        enc.write_bytes(HTML_PAGES[0])
    elif encoder == "hed":
        save(enc, random_hed_state_dict(HED_WIDTHS))
    else:
        sd = random_taesd_encoder()
        del sd["5.conv.2.weight"]
        save(enc, sd)
    msg = error_of("tiny_vae", decoder)
    assert str(enc) in msg
    assert "picked up automatically because it sits beside the chosen taesd_decoder.pth" in msg
    assert "remove or rename it" in msg
    what = {"empty": "empty (0 bytes)", "html": "HTML page", "hed": "HED edge model", "truncated": "5.conv.2.weight"}
    assert what[encoder] in msg
    enc.unlink()
    assert read_tiny_vae(decoder).encoder is None      # the advice works


# ---- identify(): what each family is called and which node takes it ----

def _sd15_ldm(context=768) -> dict:
    return {"model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3),
            "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, context),
            "model.diffusion_model.middle_block.0.in_layers.0.weight": (1280,),
            "model.diffusion_model.time_embed.0.weight": (1280, 320),
            "first_stage_model.decoder.up.0.block.0.conv1.weight": (128, 256, 3, 3),
            "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight": (3072, 768)}


def _tensors(shapes: dict) -> dict:
    return {k: torch.zeros(s) for k, s in shapes.items()}


T5_KEYS = ["shared.weight", "encoder.block.0.layer.0.SelfAttention.q.weight",
           "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
           "encoder.block.0.layer.1.DenseReluDense.wi_0.weight", "encoder.final_layer_norm.weight"]
FAMILIES = [
    # (keys, family, words in the description, words in the advice)
    (list(fx.random_original(**fx.TINY)), "pixart", "PixArt transformer (original", "PixArt Checkpoint Loader"),
    (["transformer_blocks.0.attn1.to_q.weight", "adaln_single.linear.weight", "caption_projection.linear_1.weight",
      "pos_embed.proj.weight"], "pixart_diffusers", "PixArt transformer (diffusers", "PixArt Checkpoint Loader"),
    (list(tiny_controlnet_file(1024)), "pixart_controlnet_full", "PixArt-δ ControlNet", "PixArt ControlNet Loader"),
    ([k for k in tiny_controlnet_file(512) if k.startswith("controlnet.")], "pixart_controlnet_branch",
     "without base weights", "PixArt ControlNet Loader"),
    (["controlnet_blocks.0.transformer_block.attn1.to_q.weight", "controlnet_blocks.0.before_proj.weight"],
     "pixart_controlnet_adapter", "PixArtControlNetAdapterModel", "PixArt ControlNet Loader"),
    (T5_KEYS, "t5", "T5 text encoder", "PixArt T5 Loader"),
    (["text_encoders.t5xxl.transformer." + k for k in T5_KEYS], "t5", "T5 text encoder", "models/text_encoders"),
    (["norm", "block1.convs.0.weight", "block1.convs.0.bias", "block1.projection.weight"], "hed", "HED edge model",
     "PixArt HED Edge Detector"),
    (["1.weight", "1.bias", "3.conv.0.weight", "19.weight"], "tiny_vae", "TAESD decoder", "PixArt Tiny VAE Loader"),
    (["0.weight", "0.bias", "1.conv.0.weight", "14.weight"], "tiny_vae", "TAESD encoder", "models/vae_approx"),
    (["decoder.layers.0.weight", "encoder.layers.0.weight"], "tiny_vae", "AutoencoderTiny", "PixArt Tiny VAE Loader"),
    (["taesd_decoder.1.weight", "taesd_encoder.0.weight", "vae_scale"], "tiny_vae", "ComfyUI TAESD", "Tiny VAE Loader"),
    (["encoder.down.0.block.0.conv1.weight", "decoder.up.0.block.0.conv1.weight", "quant_conv.weight"], "sd_vae",
     "full VAE", "'Load VAE'"),
    (["encoder.down_blocks.0.resnets.0.conv1.weight", "decoder.up_blocks.0.resnets.0.conv1.weight",
      "decoder.conv_in.weight"], "sd_vae", "full VAE", "'Load VAE'"),
    (["text_model.encoder.layers.0.self_attn.q_proj.weight", "text_model.embeddings.token_embedding.weight"], "clip",
     "CLIP text encoder", "'Load CLIP'"),
    (["control_model.input_hint_block.0.weight", "control_model.zero_convs.0.0.weight",
      "control_model.input_blocks.0.0.weight"], "sd_controlnet", "Stable Diffusion (UNet) ControlNet",
     "'Load ControlNet Model'"),
    (["controlnet_cond_embedding.conv_in.weight", "down_blocks.0.resnets.0.conv1.weight",
      "time_embedding.linear_1.weight"], "sd_controlnet", "Stable Diffusion (UNet) ControlNet", "models/controlnet"),
    (["down_blocks.0.resnets.0.conv1.weight", "up_blocks.0.resnets.0.conv1.weight", "time_embedding.linear_1.weight",
      "conv_in.weight"], "sd_unet", "Stable Diffusion UNet (SD 1.x / 2.x, diffusers layout)", "'Load Diffusion Model'"),
    (["model.diffusion_model.input_blocks.0.0.weight", "model.diffusion_model.label_emb.0.0.weight",
      "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"], "sd_checkpoint",
     "Stable Diffusion UNet (SDXL) in a checkpoint", "'Load Checkpoint'"),
    (["double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight", "img_in.weight"], "flux",
     "Flux transformer", "'Load Diffusion Model'"),
    (["single_transformer_blocks.0.attn.to_q.weight", "transformer_blocks.0.attn.to_q.weight",
      "context_embedder.weight", "x_embedder.weight"], "flux", "Flux transformer", "models/diffusion_models"),
    (["model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight",
      "text_encoders.t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.q.weight"], "sd3", "SD3", "'Load Diffusion"),
    (["controlnet_x_embedder.weight", "controlnet_blocks.0.weight", "transformer_blocks.0.attn.to_q.weight"],
     "transformer_controlnet", "ControlNet for another transformer", "PixArt cannot use it"),
    (["pos_embed_input.proj.weight", "controlnet_blocks.0.weight", "transformer_blocks.0.attn.to_q.weight"],
     "transformer_controlnet", "ControlNet for another transformer", "PixArt cannot use it"),
    (["double_blocks.0.img_attn.qkv.weight", "input_hint_block.0.weight", "controlnet_blocks.0.weight"],
     "transformer_controlnet", "ControlNet for another transformer", "PixArt cannot use it"),
    (["lora_unet_input_blocks_1_1_proj_in.lora_up.weight", "lora_unet_input_blocks_1_1_proj_in.alpha"], "lora",
     "LoRA", "Load LoRA"),
    (["transformer.transformer_blocks.0.attn1.to_q.lora_A.weight",
      "transformer.transformer_blocks.0.attn1.to_q.lora_B.weight"], "lora", "LoRA", "LoraLoaderModelOnly"),
    (["diffusion_model.input_blocks.0.0.lora_down.weight"], "lora", "LoRA", "Load LoRA"),
    (["foo.weight", "bar.bias", "baz.weight", "qux.weight", "quux.weight"], "unknown", "", ""),
]


@pytest.mark.parametrize("keys, family, description, advice", FAMILIES,
                         ids=[f"{f[1]}-{i}" for i, f in enumerate(FAMILIES)])
def test_identify(keys, family, description, advice):
    found = identify(keys)
    assert found.family == family
    assert description in found.description and advice in found.advice
    assert found.count == len(keys) and found.examples == tuple(keys[:4])


@pytest.mark.parametrize("context, generation", [(768, "SD 1.x"), (1024, "SD 2.x"), (2048, "SDXL")])
def test_sd_generation_from_the_cross_attention_width(context, generation):
    shapes = _sd15_ldm(context)
    for sd in (_tensors(shapes),                                                    # a state dict
               {k: {"dtype": "F16", "shape": list(s), "data_offsets": [0, 0]} for k, s in shapes.items()},  # header
               {k: (s, torch.float16) for k, s in shapes.items()}):                  # T5's meta table
        found = identify(sd)
        assert found.family == "sd_checkpoint" and f"({generation})" in found.description
    assert "(SD 1.x / 2.x)" in identify(list(shapes)).description     # key names alone cannot tell


def test_identify_empty_and_metadata_only():
    assert identify({}).family == "empty" and identify({"__metadata__": {}}).family == "empty"
    assert identify({}).not_("a T5 encoder") == "this is not a T5 encoder (no tensors in it)"


# ---- each loader names what it was given instead, and the node that takes it ----

MISPLACED = [
    # (loader, file written there by mistake, words the error must contain)
    ("pixart", {k: torch.zeros(1) for k in T5_KEYS}, ["T5 text encoder, not a PixArt checkpoint", "PixArt T5 Loader"]),
    ("pixart", _tensors(_sd15_ldm()), ["Stable Diffusion UNet (SD 1.x) in a checkpoint", "'Load Checkpoint'"]),
    ("pixart", random_hed_state_dict(HED_WIDTHS), ["HED edge model", "PixArt HED Edge Detector", "models/hed"]),
    ("controlnet", _tensors({"double_blocks.0.img_attn.qkv.weight": (3, 1)}), ["Flux transformer, not a PixArt-δ"]),
    ("controlnet", {k: torch.zeros(1) for k in T5_KEYS}, ["T5 text encoder", "PixArt T5 Loader"]),
    ("hed", random_taesd_decoder(), ["not a HED edge model (this looks like a tiny VAE (TAESD decoder)",
                                     "PixArt Tiny VAE Loader"]),
    ("hed", fx.random_original(**fx.TINY), ["not a HED edge model", "PixArt transformer", "PixArt Checkpoint Loader"]),
    ("hed", {"weird.weight": torch.zeros(1)}, ["not a HED edge model (found 1 tensor, e.g. weird.weight)"]),
    ("hed", {k: v for k, v in random_hed_state_dict(HED_WIDTHS).items() if k != "block5.projection.bias"},
     ["an incomplete HED edge model", "block5.projection.bias"]),
    ("tiny_vae", _tensors({"text_model.encoder.layers.0.self_attn.q_proj.weight": (4, 4)}),
     ["CLIP text encoder (Stable Diffusion), not a tiny VAE", "'Load CLIP'"]),
    ("tiny_vae", {k: torch.zeros(1) for k in T5_KEYS}, ["T5 text encoder, not a tiny VAE", "PixArt T5 Loader"]),
    ("tiny_vae", tiny_controlnet_file(512), ["PixArt-δ ControlNet file", "PixArt ControlNet Loader"]),
    ("tiny_vae", {"taesd_decoder.3.conv.0.weight": torch.zeros(64, 64, 3, 3)},
     ["this looks like a tiny VAE (ComfyUI TAESD layout), but tensors PixArt Tiny VAE Loader (SDXS / TAESD) needs "
      "are missing"]),
    ("t5", fx.random_original(**fx.TINY), ["not a T5 encoder (this looks like a PixArt transformer",
                                           "PixArt Checkpoint Loader"]),
    ("t5", random_hed_state_dict(HED_WIDTHS), ["not a T5 encoder (this looks like the HED edge model"]),
]


@pytest.mark.parametrize("loader, sd, words", MISPLACED, ids=[f"{m[0]}-{i}" for i, m in enumerate(MISPLACED)])
def test_misplaced_file_is_named(tmp_path, loader, sd, words):
    path = save(tmp_path / "misplaced.safetensors", {k: v.contiguous() for k, v in sd.items()})
    msg = error_of(loader, path)
    assert str(path) in msg
    for w in words:
        assert w in msg
