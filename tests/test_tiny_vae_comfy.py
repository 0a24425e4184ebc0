"""Tiny VAE inside ComfyUI: decode/encode against diffusers AutoencoderTiny on the same random weights, the
latent scale checked at the decoder's input, core VAE Decode / VAE Encode, the one-node decode, bad files."""
from __future__ import annotations

import pytest
import torch

from pixart_delta.tools.comfy_runtime import ExecutionFailed
from pixart_delta.tiny.io import save
from pixart_delta.tiny.tiny_vae import random_taesd_decoder, random_taesd_encoder

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.comfyui


def diffusers_tiny(decoder: dict, encoder: dict):
    """AutoencoderTiny holding TAESD-index weights, mapped by the published rule (diffusers'
    convert_tiny_autoencoder_to_diffusers: decoder index i -> decoder.layers.{i-1}, encoder i -> encoder.layers.i)."""
    sd = {f"decoder.layers.{int(k.split('.')[0]) - 1}.{k.split('.', 1)[1]}": v for k, v in decoder.items()}
    sd.update({f"encoder.layers.{k}": v for k, v in encoder.items()})
    model = diffusers.AutoencoderTiny()
    model.load_state_dict(sd, strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def weights():
    return random_taesd_decoder(seed=10), random_taesd_encoder(seed=11)


@pytest.fixture(scope="module")
def vae_files(models_dir, weights):
    dec, enc = weights
    folder = models_dir / "vae_approx"
    sdxs = folder / "test-sdxs_tiny_vae.safetensors"
    sdxs_sd = {f"decoder.layers.{int(k.split('.')[0]) - 1}.{k.split('.', 1)[1]}": v for k, v in dec.items()}
    sdxs_sd.update({f"encoder.layers.{k}": v for k, v in enc.items()})
    save(sdxs, sdxs_sd)
    save(folder / "taesd_decoder.pth", dec)
    save(folder / "taesd_encoder.pth", enc)
    save(folder / "taesdxl_decoder.safetensors", dec)          # decoder alone, SDXL space by its name
    return {"sdxs": sdxs, "taesd": folder / "taesd_decoder.pth", "taesdxl": folder / "taesdxl_decoder.safetensors"}


def _load(path, space="auto"):
    from pixart_delta.loaders.tiny_vae_comfy import load_tiny_vae
    return load_tiny_vae(path, space)


@pytest.mark.parametrize("layout", ["sdxs", "taesd"])
def test_decode_equals_diffusers_autoencoder_tiny(comfy, vae_files, weights, layout):
    vae = _load(vae_files[layout])
    latent = torch.randn(2, 4, 8, 12, generator=torch.Generator().manual_seed(0)) * 4   # unscaled, like a LATENT
    ours = vae.decode(latent)
    with torch.inference_mode():
        ref = diffusers_tiny(*weights).decode(latent * 0.18215).sample
    ref = ((ref + 1) / 2).clamp(0, 1).movedim(1, -1)
    assert ours.shape == (2, 64, 96, 3)
    assert 0.05 < float(ref.std())                              # not a flat image
    assert torch.allclose(ours, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("layout,scale", [("sdxs", 0.18215), ("taesd", 0.18215), ("taesdxl", 0.13025)])
def test_decoder_input_is_latent_times_scale(comfy, vae_files, layout, scale):
    vae = _load(vae_files[layout])
    seen = []
    hook = vae.first_stage_model.taesd_decoder.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    try:
        latent = torch.randn(1, 4, 6, 5, generator=torch.Generator().manual_seed(1))
        vae.decode(latent)
    finally:
        hook.remove()
    assert len(seen) == 1
    assert torch.equal(seen[0].float().cpu(), latent * torch.tensor(scale))


def test_latent_space_can_be_forced(comfy, vae_files):
    from pixart_delta.loaders.tiny_vae import SDXL
    assert float(_load(vae_files["sdxs"], SDXL).first_stage_model.vae_scale.detach()) == pytest.approx(0.13025)


def test_encode_equals_diffusers(comfy, vae_files, weights):
    vae = _load(vae_files["sdxs"])
    image = torch.rand(1, 64, 48, 3, generator=torch.Generator().manual_seed(2))
    ours = vae.encode(image)
    with torch.inference_mode():
        ref = diffusers_tiny(*weights).encode(image.movedim(-1, 1) * 2 - 1).latents / 0.18215
    assert ours.shape == (1, 4, 8, 6)
    assert torch.allclose(ours, ref, atol=1e-4, rtol=1e-5)


def _graph(vae_name, with_encode=False):
    g = {
        "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 96, "height": 64, "batch_size": 3}},
        "2": {"class_type": "PixArtTinyVAELoader", "inputs": {"vae_name": vae_name, "latent_space": "auto"}},
        "3": {"class_type": "VAEDecode", "inputs": {"samples": ["1", 0], "vae": ["2", 0]}},
        "4": {"class_type": "PixArtSDXSTinyVAEDecode", "inputs": {"samples": ["1", 0], "vae_name": vae_name,
                                                             "latent_space": "auto"}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "tinyvae_core"}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "tinyvae_node"}},
    }
    if with_encode:
        g["7"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["3", 0], "vae": ["2", 0]}}
        g["8"] = {"class_type": "PixArtSDXSTinyVAEDecode", "inputs": {"samples": ["7", 0], "vae_name": vae_name,
                                                                 "latent_space": "auto"}}
        g["9"] = {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}
    return g


def test_core_nodes_and_the_decode_node_in_a_graph(comfy, vae_files, comfy_dirs):
    from PIL import Image
    out = comfy.run(_graph(vae_files["sdxs"].name, with_encode=True))
    for node in ("5", "6"):
        files = out[node]["images"]
        assert len(files) == 3
        for f in files:
            with Image.open(comfy_dirs["output"] / f["subfolder"] / f["filename"]) as im:
                assert im.size == (96, 64)
    assert len(out["9"]["images"]) == 3


def test_decode_node_equals_vae_decode(comfy, vae_files):
    from pixart_delta.nodes.tiny_vae import PixArtSDXSTinyVAEDecode
    latent = torch.randn(3, 4, 4, 6, generator=torch.Generator().manual_seed(3))
    got = PixArtSDXSTinyVAEDecode.execute({"samples": latent}, "taesd_decoder.pth", "auto").result[0]
    want = _load(vae_files["taesd"]).decode(latent)
    assert torch.equal(got, want)
    with pytest.raises(ValueError, match=r"expected image latents \[batch, 4"):
        PixArtSDXSTinyVAEDecode.execute({"samples": torch.zeros(1, 16, 4, 4)}, "taesd_decoder.pth", "auto")


def test_decoder_only_vae_refuses_to_encode(comfy, vae_files):
    g = {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
         "2": {"class_type": "PixArtTinyVAELoader", "inputs": {"vae_name": vae_files["taesdxl"].name, "latent_space": "auto"}},
         "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["1", 0], "vae": ["2", 0]}},
         "4": {"class_type": "PixArtSDXSTinyVAEDecode", "inputs": {"samples": ["3", 0], "vae_name": vae_files["taesdxl"].name,
                                                              "latent_space": "auto"}},
         "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}}}
    with pytest.raises(ExecutionFailed, match="decoder-only"):
        comfy.run(g)


def test_full_vae_in_the_tiny_loader_is_a_clear_error(comfy, models_dir):
    full = diffusers.AutoencoderKL(block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                                   up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4, latent_channels=4)
    save(models_dir / "vae_approx" / "not-tiny-full-vae.safetensors", full.state_dict())
    g = {"1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
         "2": {"class_type": "PixArtSDXSTinyVAEDecode", "inputs": {"samples": ["1", 0], "latent_space": "auto",
                                                              "vae_name": "not-tiny-full-vae.safetensors"}},
         "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}
    with pytest.raises(ExecutionFailed, match="full VAE.*Load VAE"):
        comfy.run(g)
