"""Random lineart generator weights in the real 24-key fp32 layout of `sk_model.pth` / `sk_model2.pth`, at full
size (the real files are 17 MB). The last convolution is scaled so that the line strengths of a picture spread
over the 0..255 range instead of saturating (the instance norms fix the scale everywhere else)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..models.lineart import expected_keys
from .io import save


def random_lineart_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in expected_keys().items():
        if k.endswith("bias"):
            t = 0.05 * torch.randn(shape, generator=g)
        else:
            fan_in = shape[0] * shape[2] * shape[3] if k.startswith("model3.") else shape[1] * shape[2] * shape[3]
            std = (2.0 / fan_in) ** 0.5
            if k.startswith("model4."):
                std = 1.5 / fan_in ** 0.5
            t = std * torch.randn(shape, generator=g)
        sd[k] = t
    return sd


def write_lineart(path: Path, seed: int = 0) -> Path:
    return save(path, random_lineart_state_dict(seed))


def _writer(seed: int):
    def write(path: Path):
        write_lineart(path, seed)
    return write


# The files of this module that the bundled workflows name (models/<folder>/<file>).
FILES = {
    "lineart/sk_model.pth": _writer(0),
    "lineart/sk_model2.pth": _writer(1),
}
