"""Test-only pieces of the tiny-model writers (pixart_delta/tiny keeps what `run --tiny` and the benchmarks use)."""
from __future__ import annotations

from pathlib import Path

from pixart_delta.loaders.pixart_keys import original_controlnet_to_diffusers_adapter
from pixart_delta.tiny.io import save
from pixart_delta.tiny.tiny_vae import random_taesd_decoder, random_taesd_encoder

HED_NARROW = (8, 16, 32, 32, 32)   # HED widths for fast tests; the loader reads widths from shapes


def write_controlnet_adapter(path: Path, sd: dict) -> Path:
    """A PixArt-δ ControlNet state dict saved in the diffusers adapter layout (PixArtControlNetAdapterModel)."""
    return save(path, original_controlnet_to_diffusers_adapter(sd))


def write_taesd(folder: Path, name: str = "taesd", ext: str = ".pth", encoder: bool = True, seed: int = 0) -> Path:
    """<name>_decoder<ext> (+ <name>_encoder<ext>) as madebyollin/taesd ships them; returns the decoder path."""
    folder = Path(folder)
    dec = save(folder / f"{name}_decoder{ext}", random_taesd_decoder(seed))
    if encoder:
        save(folder / f"{name}_encoder{ext}", random_taesd_encoder(seed + 1))
    return dec
