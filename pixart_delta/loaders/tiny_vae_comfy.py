"""Tiny VAEs as a ComfyUI VAE (comfy.sd.VAE with TAESD inside and the latent scale set), the files the loader
offers (models/vae_approx, tiny-named files in models/vae), cached per file."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .file_cache import FileCache
from .files import CheckpointError
from .tiny_vae import AUTO, LATENT_SPACES, auto_latent_space, comfy_state_dict, read_tiny_vae
FOLDERS = ("vae_approx", "vae")
_TINY_HINTS = ("taesd", "taef", "tiny", "sdxs", "tae_")


def list_tiny_vae_files() -> list[str]:
    """Everything in models/vae_approx, and files in models/vae whose names say they are tiny."""
    import folder_paths
    names = list(folder_paths.get_filename_list("vae_approx"))
    names += [n for n in folder_paths.get_filename_list("vae")
              if any(h in n.lower() for h in _TINY_HINTS) and n not in names]
    return names


def resolve_tiny_vae_file(name: str) -> Path:
    import folder_paths
    for folder in FOLDERS:
        p = folder_paths.get_full_path(folder, name)
        if p is not None:
            return Path(p)
    raise CheckpointError(f"{name}: tiny VAE not found in models/vae_approx or models/vae")


def _tiny_vae_class():
    import comfy.model_management as mm
    import comfy.sd

    class TinyVAE(comfy.sd.VAE):
        """comfy.sd.VAE with TAESD inside, realistic memory estimates, and a clear error when encoding with a
        decoder-only file (its encoder weights are zeros)."""

        def __init__(self, sd, has_encoder: bool, source: str, latent_space: str):
            super().__init__(sd=sd)
            # channels-last weights make oneDNN/cuDNN pick faster kernels for these 64-channel 3x3 convs
            # (about 1.4x for the decode on CPU, in-place ReLUs another 8%); ComfyUI's device moves keep the layout.
            self.first_stage_model.to(memory_format=torch.channels_last)
            for m in self.first_stage_model.modules():   # every ReLU acts on a fresh conv output or sum
                if isinstance(m, torch.nn.ReLU):
                    m.inplace = True
            self.has_encoder, self.source, self.latent_space = has_encoder, source, latent_space
            # 64-channel activations at the output size, a few alive at once
            self.memory_used_decode = lambda shape, dtype: 64 * 64 * 4 * shape[2] * shape[3] * mm.dtype_size(dtype)
            self.memory_used_encode = lambda shape, dtype: 64 * 4 * shape[2] * shape[3] * mm.dtype_size(dtype)

        def _need_encoder(self):
            if not self.has_encoder:
                raise ValueError(f"{self.source} is a decoder-only tiny VAE: VAE Encode needs the encoder "
                                 f"(put taesd_encoder.* beside taesd_decoder.*, or use the SDXS AutoencoderTiny "
                                 f"file, which has both)")

        def encode(self, pixel_samples):
            self._need_encoder()
            return super().encode(pixel_samples)

        def encode_tiled(self, *args, **kwargs):
            self._need_encoder()
            return super().encode_tiled(*args, **kwargs)

    return TinyVAE


VAES = FileCache(max_entries=4)


def load_tiny_vae(path: str | os.PathLike, latent_space: str = AUTO, display_name: str | None = None):
    """A comfy.sd.VAE for a tiny VAE file, cached per (file, size, mtime, latent space, display name)."""
    path = Path(path)

    def build():
        tiny = read_tiny_vae(path)
        space = latent_space
        if space == AUTO:
            space = auto_latent_space(display_name or str(path), tiny.latent_channels)
        elif space not in LATENT_SPACES:
            raise CheckpointError(f"{path}: unknown latent space {space!r}; expected auto or one of {list(LATENT_SPACES)}")
        return _tiny_vae_class()(comfy_state_dict(tiny, space), tiny.encoder is not None, str(path), space)
    return VAES.get(path, (latent_space, display_name), build)
