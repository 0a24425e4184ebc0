"""Tiny VAE files (TAESD and the SDXS decoder): layouts, checks, and the single state dict ComfyUI's TAESD reads
(tiny_vae_comfy.py makes the VAE). No ComfyUI.

Accepted files: diffusers AutoencoderTiny (`encoder.layers.*` / `decoder.layers.*`, SDXS's
vae/diffusion_pytorch_model.safetensors), TAESD originals (`taesd_decoder.pth` with index keys, the encoder
file beside it is picked up), or ComfyUI's combined `taesd_decoder.*` / `taesd_encoder.*` layout.
ComfyUI's TAESD decodes `(latent - vae_shift) * vae_scale`; a LATENT is unscaled, so the scale must be set.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .files import SAFETENSORS_EXT, PICKLE_EXT, CheckpointError, load_state_dict, unwrap
from .identify import TINY_VAE_LOADER, identify

AUTO = "auto"
LATENT_SPACES = {   # name -> (vae_scale, vae_shift), the diffusion model's scaling of raw VAE latents
    "SD1 / SD2 / PixArt-α (0.18215)": (0.18215, 0.0),
    "SDXL / PixArt-Σ (0.13025)": (0.13025, 0.0),
    "SD3 (16 ch, 1.5305)": (1.5305, 0.0609),
    "FLUX.1 (16 ch, 0.3611)": (0.3611, 0.1159),
}
SD1, SDXL, SD3, FLUX = LATENT_SPACES

DECODER_BLOCKS = (3, 4, 5, 8, 9, 10, 13, 14, 15, 18)
DECODER_PLAIN = (7, 12, 17)          # conv 64->64 without bias after each upsample
ENCODER_BLOCKS = (1, 3, 4, 5, 7, 8, 9, 11, 12, 13)
ENCODER_STRIDED = (2, 6, 10)         # stride-2 conv without bias


def _block(i: int, shapes: dict):
    for j in (0, 2, 4):
        shapes[f"{i}.conv.{j}.weight"] = (64, 64, 3, 3)
        shapes[f"{i}.conv.{j}.bias"] = (64,)


def taesd_decoder_shapes(latent_channels: int = 4) -> dict[str, tuple]:
    """Keys of TAESD's decoder Sequential (index 0 is the tanh clamp, 2/6/11/16 are ReLU/upsample)."""
    shapes = {"1.weight": (64, latent_channels, 3, 3), "1.bias": (64,)}
    for i in range(3, 19):
        if i in DECODER_BLOCKS:
            _block(i, shapes)
        elif i in DECODER_PLAIN:
            shapes[f"{i}.weight"] = (64, 64, 3, 3)
    shapes.update({"19.weight": (3, 64, 3, 3), "19.bias": (3,)})
    return shapes


def taesd_encoder_shapes(latent_channels: int = 4) -> dict[str, tuple]:
    shapes = {"0.weight": (64, 3, 3, 3), "0.bias": (64,)}
    for i in range(1, 14):
        if i in ENCODER_BLOCKS:
            _block(i, shapes)
        elif i in ENCODER_STRIDED:
            shapes[f"{i}.weight"] = (64, 64, 3, 3)
    shapes.update({"14.weight": (latent_channels, 64, 3, 3), "14.bias": (latent_channels,)})
    return shapes


@dataclass
class TinyVAEFile:
    decoder: dict            # TAESD decoder index keys
    encoder: dict | None
    latent_channels: int
    files: list[Path]
    layout: str              # "AutoencoderTiny (diffusers)", "TAESD", "ComfyUI TAESD"


def _strip(sd: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def _kind(sd: dict) -> str:
    if any(k.startswith("taesd_decoder.") for k in sd):
        return "comfy"
    if any(k.startswith(("decoder.layers.", "encoder.layers.")) for k in sd):
        return "diffusers"
    if "19.weight" in sd and "1.weight" in sd:
        return "decoder"
    if "14.weight" in sd and "0.weight" in sd and "19.weight" not in sd:
        return "encoder"
    return "unknown"


_EXPECTED = ("expected a tiny VAE: SDXS/diffusers AutoencoderTiny (encoder.layers.* / decoder.layers.*), "
             "TAESD taesd_decoder / taesd_encoder (.pth or .safetensors), ~1.2 M parameters each")


def _not_tiny(sd: dict, path) -> CheckpointError:
    found = identify(sd)
    n = sum(v.numel() for v in sd.values() if isinstance(v, torch.Tensor))
    return CheckpointError(f"{path}: {found.not_('a tiny VAE', TINY_VAE_LOADER[0])}. Found {found.found()} "
                           f"({n / 1e6:.1f} M parameters); {_EXPECTED}")


def _picked_up(encoder: Path, decoder: Path) -> str:
    return (f"{encoder.name} was picked up automatically because it sits beside the chosen {decoder.name}; "
            f"remove or rename it to load the decoder alone")


def _check(part: dict, want: dict, path, what: str):
    missing = [k for k in want if k not in part]
    if missing:
        raise CheckpointError(f"{path}: incomplete tiny VAE {what}: missing {len(missing)} of {len(want)} tensors "
                              f"such as {', '.join(missing[:3])}")
    bad = [f"{k} {tuple(part[k].shape)} (expected {s})" for k, s in want.items() if tuple(part[k].shape) != s]
    if bad:
        raise CheckpointError(f"{path}: tiny VAE {what} tensors of the wrong shape: {'; '.join(bad[:3])}")
    return {k: part[k] for k in want}


def _sibling(path: Path, role_from: str, role_to: str) -> Path | None:
    name = path.name
    if role_from not in name:
        return None
    stem = name.replace(role_from, role_to).rsplit(".", 1)[0]
    for ext in (path.suffix, *SAFETENSORS_EXT, *PICKLE_EXT):
        p = path.with_name(stem + ext)
        if p.is_file():
            return p
    return None


def read_tiny_vae(path: str | os.PathLike) -> TinyVAEFile:
    path = Path(path)
    sd = unwrap(load_state_dict(path))
    kind = _kind(sd)
    files = [path]
    if kind == "comfy":
        dec, enc, layout = _strip(sd, "taesd_decoder."), _strip(sd, "taesd_encoder.") or None, "ComfyUI TAESD"
    elif kind == "diffusers":
        dec = {f"{int(k.split('.', 1)[0]) + 1}.{k.split('.', 1)[1]}": v for k, v in _strip(sd, "decoder.layers.").items()}
        enc, layout = _strip(sd, "encoder.layers.") or None, "AutoencoderTiny (diffusers)"
        if not dec:
            raise CheckpointError(f"{path}: an AutoencoderTiny file with only the encoder; decoding needs the decoder")
    elif kind == "decoder":
        dec, enc, layout = sd, None, "TAESD"
        other = _sibling(path, "decoder", "encoder")
        if other is not None:
            try:
                enc = unwrap(load_state_dict(other))
            except CheckpointError as e:
                raise CheckpointError(f"{e} ({_picked_up(other, path)})") from None
            files.append(other)
            if _kind(enc) != "encoder":
                found = identify(enc)
                raise CheckpointError(f"{other}: expected the TAESD encoder beside {path.name}, found "
                                      f"{found.description or found.found()} ({_picked_up(other, path)})")
    elif kind == "encoder":
        other = _sibling(path, "encoder", "decoder")
        if other is None:
            raise CheckpointError(f"{path}: a TAESD encoder alone cannot decode; put the matching decoder "
                                  f"({path.name.replace('encoder', 'decoder')}) beside it and choose that file")
        return read_tiny_vae(other)
    else:
        raise _not_tiny(sd, path)
    c = dec.get("1.weight")
    if c is None or c.ndim != 4:
        raise _not_tiny(sd, path)
    ch = int(c.shape[1])
    dec = _check(dec, taesd_decoder_shapes(ch), path, "decoder")
    if enc is not None:
        try:
            enc = _check(enc, taesd_encoder_shapes(ch), files[-1], "encoder")
        except CheckpointError as e:
            if len(files) == 1:
                raise
            raise CheckpointError(f"{e} ({_picked_up(files[-1], path)})") from None
    return TinyVAEFile(dec, enc, ch, files, layout)


def auto_latent_space(name: str, latent_channels: int) -> str:
    """From the file name: taesdxl / *xl* / sigma -> SDXL; taef1 / flux -> FLUX; other 16-channel -> SD3; else SD1."""
    n = name.lower().replace("\\", "/")
    if latent_channels == 16:
        return FLUX if ("taef1" in n or "flux" in n) else SD3
    return SDXL if ("xl" in n or "sigma" in n) else SD1


def comfy_state_dict(vae: TinyVAEFile, latent_space: str) -> dict[str, torch.Tensor]:
    """The single state dict comfy.sd.VAE recognises as TAESD, scale and shift included."""
    want = 16 if latent_space in (SD3, FLUX) else 4
    if vae.latent_channels != want:
        raise CheckpointError(f"{vae.files[0]}: a {vae.latent_channels}-channel tiny VAE cannot decode the "
                              f"{latent_space} latent space ({want} channels)")
    scale, shift = LATENT_SPACES[latent_space]
    sd = {f"taesd_decoder.{k}": v.float() for k, v in vae.decoder.items()}
    enc = vae.encoder or {k: torch.zeros(s) for k, s in taesd_encoder_shapes(vae.latent_channels).items()}
    sd.update({f"taesd_encoder.{k}": v.float() for k, v in enc.items()})
    sd["vae_scale"], sd["vae_shift"] = torch.tensor(scale), torch.tensor(shift)
    return sd
