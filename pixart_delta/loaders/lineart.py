"""Reading the lineart annotator files (`sk_model.pth`, coarse `sk_model2.pth`; fp32 pickles of 24 tensors,
pickle-safe) into the generator network. No ComfyUI: lineart_comfy.py keeps it under ComfyUI's model management."""
from __future__ import annotations

import os

import torch
from torch import nn

from ..models.lineart import LineartGenerator, expected_keys
from .files import CheckpointError, load_state_dict, unwrap
from .identify import LINEART_NODE, identify

LINEART_FILE = "sk_model.pth"
LINEART_COARSE_FILE = "sk_model2.pth"
LINEART_FILES = (LINEART_FILE, LINEART_COARSE_FILE)


def check_lineart_state_dict(sd: dict, path) -> dict[str, torch.Tensor]:
    """The 24 generator tensors (float32), or CheckpointError naming what is wrong."""
    sd = unwrap(sd)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    want = expected_keys()
    missing = [k for k in want if k not in sd]
    if missing:
        found = identify(sd)
        what = "an incomplete lineart model" if found.node == LINEART_NODE[0] else \
            f"not a lineart model ({found.looks_like() or 'found ' + found.found()})"
        raise CheckpointError(f"{path}: {what}; expected the {len(want)} tensors of {LINEART_FILE} / "
                              f"{LINEART_COARSE_FILE} (model0.1.weight ... model4.1.bias), missing {len(missing)} "
                              f"such as {', '.join(missing[:3])}")
    bad = [f"{k} {tuple(sd[k].shape)} (expected {s})" for k, s in want.items()
           if not isinstance(sd[k], torch.Tensor) or tuple(sd[k].shape) != s]
    if bad:
        raise CheckpointError(f"{path}: lineart tensors of the wrong shape: {'; '.join(bad[:3])}")
    extra = [k for k in sd if k not in want]
    if extra:
        raise CheckpointError(f"{path}: lineart file with {len(extra)} unexpected tensors such as "
                              f"{', '.join(extra[:3])}; expected exactly the {len(want)} tensors of {LINEART_FILE}")
    return {k: sd[k].float() for k in want}


def read_lineart_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    return check_lineart_state_dict(load_state_dict(path), path)


def build_lineart(sd: dict[str, torch.Tensor], ops=nn) -> LineartGenerator:
    model = LineartGenerator(ops=ops)
    model.load_state_dict(sd, strict=True)
    return model.eval().requires_grad_(False)


def load_lineart(path: str | os.PathLike, ops=nn) -> LineartGenerator:
    return build_lineart(read_lineart_state_dict(path), ops=ops)
