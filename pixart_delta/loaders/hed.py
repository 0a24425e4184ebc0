"""Reading `ControlNetHED.pth` (fp16 or fp32 storage, pickle-safe) into the HED network. No ComfyUI:
hed_comfy.py keeps it under ComfyUI's model management."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..models.hed import HED, expected_keys, widths_of
from .files import CheckpointError, load_state_dict, unwrap

HED_FILE = "ControlNetHED.pth"


def _describe(sd: dict) -> str:
    keys = list(sd)
    if any(k.startswith(("taesd_decoder.", "decoder.layers.", "encoder.layers.")) for k in keys) or \
            ("1.weight" in sd and "3.conv.0.weight" in sd) or ("0.weight" in sd and "1.conv.0.weight" in sd):
        return "this looks like a tiny VAE (TAESD / AutoencoderTiny) file"
    if any(k.startswith(("decoder.up", "decoder.mid", "first_stage_model.")) for k in keys):
        return "this looks like a VAE"
    if any(k.startswith(("input_blocks.", "control_model.", "down_blocks.")) for k in keys):
        return "this looks like a UNet or ControlNet"
    return f"found {len(keys)} tensors such as {', '.join(keys[:4])}"


def check_hed_state_dict(sd: dict, path) -> dict[str, torch.Tensor]:
    """The 37 HED tensors (float32), or CheckpointError naming what is wrong."""
    sd = unwrap(sd)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    widths = widths_of(sd)
    want = expected_keys(widths) if widths else expected_keys()
    missing = [k for k in want if k not in sd]
    if missing:
        raise CheckpointError(f"{path}: not a HED edge model ({_describe(sd)}); expected the {len(want)} tensors of "
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
