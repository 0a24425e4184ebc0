"""YOSO informative prior initialisation (IPI), docs/facts/pixart.md §6.

init = mean over the reference batch (per element) + std of all reference elements (one scalar) * N(0, I).
Computed on ComfyUI LATENTs (unscaled VAE latents): mean and std commute with any affine latent format, so
the result equals the authors' prior in the model's scaled space after ComfyUI's process_latent_in.
Pure torch + safetensors (no ComfyUI).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

PRIOR_FORMAT = "yoso_informative_prior"


class PriorError(ValueError):
    pass


def combine_references(refs: list[tuple[str, torch.Tensor]]) -> torch.Tensor:
    """[(source name, [B,C,H,W] latents), ...] -> one [sum B, C, H, W] float32 batch; errors name the sources."""
    refs = [(name, t) for name, t in refs if t is not None]
    if not refs:
        raise PriorError("no references: connect a LATENT batch, or an IMAGE with a VAE, or choose a saved prior file")
    for name, t in refs:
        if t.ndim != 4:
            raise PriorError(f"{name}: expected image latents shaped [batch, channels, height, width], got shape "
                             f"{list(t.shape)}")
        if t.shape[0] == 0:
            raise PriorError(f"{name}: the reference batch is empty (0 latents); at least one reference is needed")
    first_name, first = refs[0]
    for name, t in refs[1:]:
        if t.shape[1:] != first.shape[1:]:
            raise PriorError(
                f"references of different sizes: {first_name} is {_describe(first)} but {name} is {_describe(t)}; "
                f"resize the images to one size first (e.g. Upscale Image) so every reference has the same latent shape")
    batch = torch.cat([t.float().cpu() for _, t in refs], dim=0)
    if not torch.isfinite(batch).all():
        raise PriorError("the references contain NaN or infinite values")
    return batch


def _describe(t: torch.Tensor) -> str:
    c, h, w = t.shape[1:]
    return f"{c}x{h}x{w} latents (~{w * 8}x{h * 8} px)"


def prior_stats(refs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean [C,H,W] over the batch, std: 0-d tensor over every element of the batch)."""
    refs = combine_references([("references", refs)])
    mean = refs.mean(dim=0)
    std = refs.std() if refs.numel() > 1 else torch.zeros(())
    return mean, std


def prior_noise(batch_size: int, shape, seed: int) -> torch.Tensor:
    """Standard normal noise [batch_size, *shape] from a CPU generator seeded with `seed` (reproducible anywhere)."""
    if batch_size < 1:
        raise PriorError(f"batch_size must be at least 1; got {batch_size}")
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn((batch_size, *shape), generator=g, dtype=torch.float32)


def prior_latent(mean: torch.Tensor, std: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """mean + std * noise, broadcast over the noise batch."""
    if noise.shape[1:] != mean.shape:
        raise PriorError(f"noise shape {list(noise.shape)} does not match the prior's latent shape {list(mean.shape)}")
    return mean.unsqueeze(0) + std * noise


def save_prior(path, mean: torch.Tensor, std: torch.Tensor, count: int) -> Path:
    """A small .safetensors: `mean` [C,H,W] and `std` [1], metadata saying what it is."""
    import safetensors.torch
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": PRIOR_FORMAT, "references": str(int(count)), "shape": json.dumps(list(mean.shape))}
    safetensors.torch.save_file({"mean": mean.float().contiguous(), "std": std.float().reshape(1).contiguous()},
                                str(path), metadata=meta)
    return path


def load_prior(path) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(mean, std, metadata) from a file written by save_prior; errors name the file and what was found."""
    import safetensors
    import safetensors.torch
    path = Path(path)
    if path.suffix != ".safetensors":
        raise PriorError(f"{path}: a YOSO prior is a .safetensors file written by 'PixArt Save YOSO Prior'; got a {path.suffix or 'suffix-less'} file")
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        sd = safetensors.torch.load_file(str(path))
    except Exception as e:  # noqa: BLE001  (corrupt or foreign file: report it, do not crash the server)
        raise PriorError(f"{path}: cannot read it as safetensors ({e})") from None
    mean, std = sd.get("mean"), sd.get("std")
    if mean is None or std is None or mean.ndim != 3 or std.numel() != 1:
        found = ", ".join(f"{k} {list(v.shape)}" for k, v in list(sd.items())[:4]) or "no tensors"
        raise PriorError(f"{path}: not a YOSO prior file; found {found}; expected 'mean' [C,H,W] and 'std' [1] "
                         f"as written by 'PixArt Save YOSO Prior'")
    return mean.float(), std.float().reshape(()), meta
