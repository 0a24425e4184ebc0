"""Tiny VAE files without ComfyUI: layouts, sibling encoder files, latent-space choice, refused files."""
from __future__ import annotations

import pytest
import torch

from fixture_files import HED_NARROW, write_taesd
from pixart_delta.tiny.hed import random_hed_state_dict
from pixart_delta.tiny.io import save
from pixart_delta.tiny.tiny_vae import (random_taesd_decoder, random_taesd_encoder, to_autoencoder_tiny,
                                            write_autoencoder_tiny)
from pixart_delta.loaders.files import CheckpointError
from pixart_delta.loaders.tiny_vae import SD1, SDXL, auto_latent_space, comfy_state_dict, read_tiny_vae

diffusers = pytest.importorskip("diffusers")


def test_autoencoder_tiny_file_matches_diffusers_layout(tmp_path):
    """Our reading of an AutoencoderTiny file gives back the tensors diffusers' own model holds at the mapped
    places (decoder.layers.i <-> TAESD decoder index i+1, encoder.layers.i <-> index i)."""
    model = diffusers.AutoencoderTiny()   # SDXS's config = TAESD's
    ref = {k: torch.randn_like(v) for k, v in model.state_dict().items()}
    model.load_state_dict(ref)
    path = save(tmp_path / "diffusion_pytorch_model.safetensors", ref)
    tiny = read_tiny_vae(path)
    assert tiny.layout.startswith("AutoencoderTiny") and tiny.encoder is not None
    assert torch.equal(tiny.decoder["1.weight"], model.decoder.layers[0].weight)
    assert torch.equal(tiny.decoder["19.bias"], model.decoder.layers[18].bias)
    assert torch.equal(tiny.decoder["7.weight"], model.decoder.layers[6].weight)
    assert torch.equal(tiny.decoder["18.conv.4.weight"], model.decoder.layers[17].conv[4].weight)
    assert torch.equal(tiny.encoder["14.weight"], model.encoder.layers[14].weight)
    assert torch.equal(tiny.encoder["2.weight"], model.encoder.layers[2].weight)
    assert len(tiny.decoder) + len(tiny.encoder) == len(ref)


@pytest.mark.parametrize("ext", [".pth", ".safetensors"])
def test_taesd_decoder_file_picks_up_its_encoder(tmp_path, ext):
    dec = write_taesd(tmp_path, "taesd", ext)
    tiny = read_tiny_vae(dec)
    assert tiny.encoder is not None and len(tiny.files) == 2
    assert torch.equal(tiny.decoder["1.weight"], random_taesd_decoder(0)["1.weight"])
    assert torch.equal(tiny.encoder["0.weight"], random_taesd_encoder(1)["0.weight"])
    # choosing the encoder file loads the pair too
    assert read_tiny_vae(tmp_path / f"taesd_encoder{ext}").files == tiny.files


def test_decoder_alone_and_encoder_alone(tmp_path):
    dec = write_taesd(tmp_path, "taesdxl", ".pth", encoder=False)
    tiny = read_tiny_vae(dec)
    assert tiny.encoder is None and tiny.latent_channels == 4
    sd = comfy_state_dict(tiny, SDXL)
    assert float(sd["vae_scale"]) == pytest.approx(0.13025) and float(sd["vae_shift"]) == 0.0
    assert all(float(v.abs().sum()) == 0.0 for k, v in sd.items() if k.startswith("taesd_encoder."))
    save(tmp_path / "only" / "taesd_encoder.pth", random_taesd_encoder())
    with pytest.raises(CheckpointError, match="encoder alone cannot decode"):
        read_tiny_vae(tmp_path / "only" / "taesd_encoder.pth")


def test_latent_space_from_the_name():
    assert auto_latent_space("taesdxl_decoder.pth", 4) == SDXL
    assert auto_latent_space("PixArt-Sigma/tiny.safetensors", 4) == SDXL
    assert auto_latent_space("sdxs-512-0.9_tiny_vae.safetensors", 4) == SD1
    assert auto_latent_space("taesd_decoder.safetensors", 4) == SD1
    assert "0.18215" in SD1 and "0.13025" in SDXL


def test_full_vae_is_refused_with_a_clear_error(tmp_path):
    full = diffusers.AutoencoderKL(block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                                   up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4, latent_channels=4)
    p = save(tmp_path / "sd-vae-ft-ema.safetensors", full.state_dict())
    with pytest.raises(CheckpointError, match="full VAE.*Load VAE"):
        read_tiny_vae(p)
    ldm = {"first_stage_model.decoder.conv_in.weight": torch.zeros(8, 4, 3, 3)}
    with pytest.raises(CheckpointError, match="full VAE"):
        read_tiny_vae(save(tmp_path / "model.ckpt.safetensors", ldm))


def test_other_files_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="HED edge model"):
        read_tiny_vae(save(tmp_path / "ControlNetHED.pth", random_hed_state_dict(HED_NARROW)))
    broken = to_autoencoder_tiny(random_taesd_decoder())
    del broken["decoder.layers.8.conv.2.weight"]
    with pytest.raises(CheckpointError, match="incomplete tiny VAE decoder.*9.conv.2.weight"):
        read_tiny_vae(save(tmp_path / "broken.safetensors", broken))
    with pytest.raises(CheckpointError, match="cannot decode the SDXL"):
        comfy_state_dict(read_tiny_vae(save(tmp_path / "taef1_decoder.pth", random_taesd_decoder(latent_channels=16))),
                         SDXL)


def test_fp16_file_reads_as_float32_for_comfy(tmp_path):
    p = write_autoencoder_tiny(tmp_path / "sdxs" / "diffusion_pytorch_model.safetensors", dtype=torch.float16,
                               config=True)
    sd = comfy_state_dict(read_tiny_vae(p), SD1)
    assert all(v.dtype == torch.float32 for v in sd.values())
    assert float(sd["vae_scale"]) == pytest.approx(0.18215)


def test_comfyui_combined_layout(tmp_path):
    dec, enc = random_taesd_decoder(5), random_taesd_encoder(6)
    sd = {**{f"taesd_decoder.{k}": v for k, v in dec.items()}, **{f"taesd_encoder.{k}": v for k, v in enc.items()}}
    tiny = read_tiny_vae(save(tmp_path / "taesd_combined.safetensors", sd))
    assert tiny.layout == "ComfyUI TAESD"
    assert all(torch.equal(tiny.decoder[k], v) for k, v in dec.items())
    assert all(torch.equal(tiny.encoder[k], v) for k, v in enc.items())
