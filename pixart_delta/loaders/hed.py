"""Reading `ControlNetHED.pth` (fp16 or fp32 storage, pickle-safe) into the HED network. No ComfyUI:
hed_comfy.py keeps it under ComfyUI's model management."""
from __future__ import annotations

import os

import torch
from torch import nn

from ..models.hed import HED, expected_keys, widths_of
from .files import CheckpointError, load_state_dict, unwrap
from .identify import HED_NODE, identify

HED_FILE = "ControlNetHED.pth"


def check_hed_state_dict(sd: dict, path) -> dict[str, torch.Tensor]:
    """The 37 HED tensors (float32), or CheckpointError naming what is wrong."""
    sd = unwrap(sd)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    widths = widths_of(sd)
    want = expected_keys(widths) if widths else expected_keys()
    missing = [k for k in want if k not in sd]
    if missing:
        found = identify(sd)
        what = "an incomplete HED edge model" if found.node == HED_NODE[0] else \
            f"not a HED edge model ({found.looks_like() or 'found ' + found.found()})"
        raise CheckpointError(f"{path}: {what}; expected the {len(want)} tensors of "
                              f"{HED_FILE} (norm, block1.convs.0.weight ... block5.projection.bias), "
                              f"missing {len(missing)} such as {', '.join(missing[:3])}")
    bad = [f"{k} {tuple(sd[k].shape)} (expected {s})" for k, s in want.items() if tuple(sd[k].shape) != s]
    if bad:
        raise CheckpointError(f"{path}: HED tensors of the wrong shape: {'; '.join(bad[:3])}")
    extra = [k for k in sd if k not in want]
    if extra:
        raise CheckpointError(f"{path}: HED file with {len(extra)} unexpected tensors such as {', '.join(extra[:3])}; "
                              f"expected exactly the {len(want)} tensors of {HED_FILE}")
    return {k: sd[k].float() for k in want}


def read_hed_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    return check_hed_state_dict(load_state_dict(path), path)


def build_hed(sd: dict[str, torch.Tensor], ops=nn) -> HED:
    model = HED(widths_of(sd), ops=ops)
    model.load_state_dict(sd, strict=True)
    # channels-last weights: faster oneDNN/cuDNN kernels for the VGG convolutions; device moves keep the layout
    return model.to(memory_format=torch.channels_last).eval().requires_grad_(False)


def load_hed(path: str | os.PathLike, ops=nn) -> HED:
    return build_hed(read_hed_state_dict(path), ops=ops)
