"""Diffusers ControlNets for UNets with reduced blocks (SDXS-512-DreamShaper's sketch ControlNet,
IDKiro/sdxs-512-dreamshaper-sketch): reading the file and telling which mid block it has.

ComfyUI's core loader (comfy/controlnet.py, load_controlnet_state_dict) takes the block layout of a diffusers
ControlNet from the UNet table its key names match (comfy/model_detection.py, unet_config_from_diffusers_unet).
For the SDXS-512 geometry that is SD_XS, a UNet without a middle block, so core builds the ControlNet's middle as
one ResBlock: a ControlNetModel's cross-attention mid block (resnet, transformer, resnet - diffusers' default, and
the only kind diffusers 0.25.1 builds) then loses its transformer and second resnet, which core only logs as
leftover keys, and the middle residual comes out wrong. Here the mid block is read from the keys instead.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .files import CheckpointError, load_state_dict
from .identify import identify

CONTROLNET_MARKER = "controlnet_cond_embedding.conv_in.weight"

MID_CROSS_ATTENTION = "cross_attention"   # UNetMidBlock2DCrossAttn: resnets.0, attentions.0, resnets.1
MID_RESNET = "resnet"                     # UNetMidBlock2D(num_layers=0, add_attention=False): resnets.0
MID_NONE = "none"                         # no mid block: the middle residual is the zero conv of the last features


@dataclass(frozen=True)
class MidBlock:
    kind: str
    transformer_depth: int     # transformer blocks in the mid attention (0 unless cross_attention)


def mid_block_of(keys) -> MidBlock:
    keys = list(keys)
    attention_blocks = {int(m.group(1)) for k in keys
                        if (m := re.match(r"mid_block\.attentions\.0\.transformer_blocks\.(\d+)\.", k))}
    if attention_blocks:
        return MidBlock(MID_CROSS_ATTENTION, max(attention_blocks) + 1)
    if any(k.startswith("mid_block.resnets.0.") for k in keys):
        return MidBlock(MID_RESNET, 0)
    return MidBlock(MID_NONE, 0)


def read_diffusers_controlnet(path: str | os.PathLike) -> dict:
    """The state dict of a diffusers ControlNetModel file (.safetensors, or the .bin pickle diffusers writes,
    read with weights_only), refused with what it looks like otherwise."""
    path = Path(path)
    sd = load_state_dict(path)
    if CONTROLNET_MARKER not in sd:
        raise CheckpointError(f"{path}: {identify(sd).not_('a diffusers ControlNetModel (expected ' + CONTROLNET_MARKER + ')')}"
                              f"; found {identify(sd).found()}")
    if "mid_block.attentions.0.proj_in.weight" in sd and mid_block_of(sd).kind != MID_CROSS_ATTENTION:
        raise CheckpointError(f"{path}: the mid block has an attention projection but no transformer blocks "
                              f"(mid_block.attentions.0.transformer_blocks.*); the file is incomplete")
    return sd
