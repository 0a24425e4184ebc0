"""Reading weight files safely, with errors that name the file and say what was wrong."""
from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import torch

SAFETENSORS_EXT = (".safetensors", ".sft")
PICKLE_EXT = (".pth", ".pt", ".bin", ".ckpt")


class CheckpointError(ValueError):
    """A weight file that cannot be used; the message names the file, what was found and what was expected."""


def read_safetensors_header(path: str | os.PathLike) -> dict:
    """The JSON header of a safetensors file, checked against the file size (catches truncation)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: {size} bytes, too short to be a safetensors file (expected an 8-byte header length)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise CheckpointError(f"{path}: header says {n} bytes of JSON but the file has {size} bytes; not a safetensors file, or truncated")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path}: the safetensors header is not valid JSON ({e}); the file is damaged or not safetensors") from None
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise CheckpointError(f"{path}: truncated: its tensors need {8 + n + end} bytes but the file has {size} "
                              f"(download it again)")
    return header


def load_state_dict(path: str | os.PathLike, device="cpu") -> dict[str, torch.Tensor]:
    """Loads .safetensors, or .pth/.pt/.bin/.ckpt with torch.load(weights_only=True): a pickle that
    would run code is refused, never executed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.suffix.lower() in SAFETENSORS_EXT:
        read_safetensors_header(path)
        import safetensors.torch
        try:
            return safetensors.torch.load_file(str(path), device=device)
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: cannot read as safetensors: {e}") from None
    try:
        sd = torch.load(str(path), map_location=device, weights_only=True, mmap=_is_zip(path))
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: refused: this pickle file asks to run code or build objects other than "
                              f"tensors ({str(e).splitlines()[0][:200]}); only plain weight files are loaded. "
                              f"Convert it to .safetensors from a trusted source.") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"{path}: cannot read as a PyTorch weight file ({str(e).splitlines()[0][:200]}); "
                              f"damaged or truncated?") from None
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path}: found a {type(sd).__name__}, expected a dict of tensors")
    return sd


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def unwrap(sd: dict) -> dict:
    """Training files wrap the weights: {"state_dict": ..., "state_dict_ema": ..., "optimizer": ...}."""
    for key in ("state_dict", "model", "module"):
        inner = sd.get(key)
        if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in list(inner.values())[:8]):
            return inner
    return sd
