"""Bad files through ComfyUI's executor: each loader node handed an empty file in its models folder fails with a
message that names the file and says it is empty, and the next, good prompt runs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pixart_delta.loaders import identify
from pixart_delta.tiny import pixart as fx
from pixart_delta.tiny.hed import write_hed
from pixart_delta.tiny.io import save
from pixart_delta.tiny.pixart_controlnet import tiny_controlnet_file
from pixart_delta.tiny.t5 import TINY as T5_TINY, write_hf_t5_folder, write_single_t5
from pixart_delta.tiny.tiny_vae import random_taesd_decoder
from pixart_delta.tools.comfy_runtime import ExecutionFailed

pytestmark = pytest.mark.comfyui
SUB = "test_bad_files"     # own subfolder in each models folder


def _pixart(name):
    return {"1": {"class_type": "PixArtCheckpointLoader",
                  "inputs": {"ckpt_name": name, "variant": "auto", "weight_dtype": "default"}},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}


def _controlnet(name):
    return {"1": {"class_type": "PixArtControlNetLoader",
                  "inputs": {"control_net_name": name, "weight_dtype": "default"}},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 1]}}}


def _t5(name):
    return {"1": {"class_type": "PixArtT5Loader",
                  "inputs": {"t5_name": name, "family": "alpha", "max_tokens": 0, "weight_dtype": "fp32",
                             "device": "cpu", "clean_caption": True}},
            "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 0], "text": "a cat"}},
            "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}}


def _hed(name):
    return {"1": {"class_type": "LoadImage", "inputs": {"image": f"{SUB}.png"}},
            "2": {"class_type": "PixArtHEDEdgeDetector",
                  "inputs": {"image": ["1", 0], "model_name": name, "safe": False, "scribble": False,
                             "resolution": 0}},
            "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}


def _tiny_vae(name):
    return {"1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "2": {"class_type": "PixArtTinyVAELoader", "inputs": {"vae_name": name, "latent_space": "auto"}},
            "3": {"class_type": "VAEDecode", "inputs": {"samples": ["1", 0], "vae": ["2", 0]}},
            "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}}


# node -> (models folder, graph, empty file name, writer of a good file of the same kind)
CASES = {
    "PixArtCheckpointLoader": ("diffusion_models", _pixart, "PixArt-XL-2-512x512.pth",
                               lambda p: fx.write_original(p, fx.random_original(**fx.TINY, micro=False, native_px=512))),
    "PixArtControlNetLoader": ("controlnet", _controlnet, "PixArt-XL-2-1024-ControlNet.pth",
                               lambda p: fx.write_original(p, tiny_controlnet_file(
                                   1024, size=dict(hidden=144, depth=4, caption_channels=64), copies=3))),
    "PixArtT5Loader": ("text_encoders", _t5, "t5xxl_fp16.safetensors", lambda p: write_single_t5(p, T5_TINY)),
    "PixArtHEDEdgeDetector": ("hed", _hed, "ControlNetHED.pth", lambda p: write_hed(p, (8, 16, 32, 32, 32))),
    "PixArtTinyVAELoader": ("vae_approx", _tiny_vae, "taesd_decoder.pth", lambda p: save(p, random_taesd_decoder())),
}


@pytest.fixture(scope="module")
def input_image(comfy, comfy_dirs):
    img = np.random.default_rng(0).integers(0, 255, (32, 48, 3), dtype=np.uint8)
    Image.fromarray(img).save(comfy_dirs["input"] / f"{SUB}.png")


def _fails(comfy, graph, node_type) -> str:
    with pytest.raises(ExecutionFailed) as e:
        comfy.run(graph)
    assert e.value.node_type == node_type
    return e.value.message


@pytest.mark.parametrize("node", CASES)
def test_empty_file_fails_clearly_and_the_next_prompt_runs(comfy, models_dir, input_image, node):
    folder, graph, name, write_good = CASES[node]
    empty = models_dir / folder / SUB / "empty" / name
    empty.parent.mkdir(parents=True, exist_ok=True)
    empty.write_bytes(b"")
    msg = _fails(comfy, graph(f"{SUB}/empty/{name}"), node)
    assert str(empty) in msg and "empty (0 bytes)" in msg
    write_good(models_dir / folder / SUB / "good" / name)
    comfy.run(graph(f"{SUB}/good/{name}"))


def test_t5_folder_with_an_empty_index_through_the_node(comfy, models_dir):
    folder = models_dir / "text_encoders" / SUB / "T5-empty-index"
    write_hf_t5_folder(folder, T5_TINY, n_shards=2)
    index = folder / "model.safetensors.index.json"
    index.write_bytes(b"")
    msg = _fails(comfy, _t5(f"{SUB}/T5-empty-index"), "PixArtT5Loader")
    assert str(index) in msg and "empty (0 bytes)" in msg
    write_hf_t5_folder(folder, T5_TINY, n_shards=2)
    comfy.run(_t5(f"{SUB}/T5-empty-index"))


def test_empty_encoder_beside_the_decoder_through_the_node(comfy, models_dir):
    folder = models_dir / "vae_approx" / SUB / "pair"
    save(folder / "taesd_decoder.pth", random_taesd_decoder())
    encoder = folder / "taesd_encoder.pth"
    encoder.write_bytes(b"")
    msg = _fails(comfy, _tiny_vae(f"{SUB}/pair/taesd_decoder.pth"), "PixArtTinyVAELoader")
    assert str(encoder) in msg and "empty (0 bytes)" in msg
    assert "picked up automatically because it sits beside the chosen taesd_decoder.pth" in msg
    encoder.unlink()
    comfy.run(_tiny_vae(f"{SUB}/pair/taesd_decoder.pth"))


def test_html_page_through_the_node(comfy, models_dir):
    page = models_dir / "diffusion_models" / SUB / "html" / "PixArt-Sigma-XL-2-1024-MS.safetensors"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text("<!DOCTYPE html>\n<html><head><title>401 Unauthorized</title></head><body></body></html>\n")
    msg = _fails(comfy, _pixart(f"{SUB}/html/{page.name}"), "PixArtCheckpointLoader")
    assert str(page) in msg and "an HTML page, not weights" in msg


def test_identify_names_the_nodes_as_comfyui_shows_them(comfy):
    import folder_paths
    import nodes
    shown = set(nodes.NODE_DISPLAY_NAME_MAPPINGS.values())
    for node, _folder in (identify.PIXART_LOADER, identify.CONTROLNET_LOADER, identify.T5_LOADER, identify.HED_NODE,
                          identify.TINY_VAE_LOADER):
        assert node in shown
    for core in ("Load VAE", "Load Checkpoint", "Load Diffusion Model", "Load CLIP", "Load ControlNet Model",
                 "Load LoRA", "LoraLoaderModelOnly"):
        assert core in shown or core in nodes.NODE_CLASS_MAPPINGS
    for folder in ("diffusion_models", "controlnet", "text_encoders", "hed", "vae_approx", "vae", "checkpoints"):
        assert folder in folder_paths.folder_names_and_paths
