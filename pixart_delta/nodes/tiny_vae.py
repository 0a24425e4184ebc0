"""Tiny VAE Loader (SDXS / TAESD -> VAE with the right latent scale) and PixArt SDXS Tiny VAE Decode (one node)."""
from __future__ import annotations

import comfy.model_management as mm
import torch
import comfy.utils
from comfy_api.latest import io

from ..loaders.tiny_vae import AUTO, LATENT_SPACES
from ..loaders.tiny_vae_comfy import list_tiny_vae_files, load_tiny_vae, resolve_tiny_vae_file

_FILE_TIP = ("SDXS vae/diffusion_pytorch_model.safetensors (renamed, e.g. sdxs-512-0.9_tiny_vae.safetensors), or "
             "TAESD taesd_decoder / taesdxl_decoder .pth/.safetensors (its *_encoder file beside it is used too), "
             "in models/vae_approx (or models/vae with 'taesd', 'tiny' or 'sdxs' in the name).")
_SPACE_TIP = ("Latent space of the diffusion model whose latents are decoded. auto: taesdxl / 'xl' / 'sigma' in the "
              "file name -> SDXL / PixArt-Σ (x0.13025), otherwise SD1 / SD2 / SDXS / PixArt-α (x0.18215).")


def _load(vae_name: str, latent_space: str):
    return load_tiny_vae(resolve_tiny_vae_file(vae_name), latent_space, display_name=vae_name)


def _inputs():
    return [io.Combo.Input("vae_name", options=list_tiny_vae_files(), tooltip=_FILE_TIP),
            io.Combo.Input("latent_space", options=[AUTO, *LATENT_SPACES], default=AUTO, tooltip=_SPACE_TIP)]


class PixArtTinyVAELoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PixArtTinyVAELoader",
            display_name="PixArt Tiny VAE Loader (SDXS / TAESD)",
            category="PixArt/loaders",
            description="Loads the SDXS tiny decoder or TAESD/TAESDXL (~1.2 M parameters) as a VAE that core VAE "
                        "Decode accepts, with the latent scale set (ComfyUI's own loader leaves it at 1.0 for such "
                        "files). VAE Encode works when the file has an encoder.",
            inputs=_inputs(),
            outputs=[io.Vae.Output()],
        )

    @classmethod
    def execute(cls, vae_name, latent_space=AUTO) -> io.NodeOutput:
        return io.NodeOutput(_load(vae_name, latent_space))


class PixArtSDXSTinyVAEDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PixArtSDXSTinyVAEDecode",
            display_name="PixArt SDXS Tiny VAE Decode",
            category="PixArt/latent",
            description="LATENT -> IMAGE with the SDXS / TAESD tiny decoder in one node (loads and caches the file). "
                        "About 18x fewer operations than the full SD VAE decoder; slightly softer detail.",
            inputs=[io.Latent.Input("samples", tooltip="4-channel latents (SD1/SD2/SDXS/PixArt-α or SDXL/PixArt-Σ)."),
                    *_inputs()],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, samples, vae_name, latent_space=AUTO) -> io.NodeOutput:
        latent = samples["samples"]
        vae = _load(vae_name, latent_space)
        want = vae.latent_channels
        if latent.ndim != 4 or latent.shape[1] != want:
            raise ValueError(f"expected image latents [batch, {want}, height, width] for {vae.latent_space}, got "
                             f"shape {tuple(latent.shape)}")
        b = latent.shape[0]
        free = mm.get_free_memory(vae.device)
        per = max(1, vae.memory_used_decode(latent[:1].shape, vae.vae_dtype))
        chunk = max(1, min(b, int(free * 0.8) // per))
        pbar = comfy.utils.ProgressBar(b)
        images = []
        for start in range(0, b, chunk):
            images.append(vae.decode(latent[start:start + chunk]))
            pbar.update(images[-1].shape[0])
        return io.NodeOutput(images[0] if len(images) == 1 else torch.cat(images))


NODES = [PixArtTinyVAELoader, PixArtSDXSTinyVAEDecode]
