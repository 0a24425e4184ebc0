"""A diffusers ControlNet for a reduced UNet (SDXS) as ComfyUI's CONTROL_NET: core's cldm ControlNet built with
the mid block the file has (see sdxs_controlnet.py), every tensor of the file placed or the load refused, wrapped
in core's comfy.controlnet.ControlNet (model management, strength, timestep range, chaining as usual)."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from .file_cache import FileCache
from .files import CheckpointError
from .sdxs_controlnet import MID_CROSS_ATTENTION, MID_NONE, mid_block_of, read_diffusers_controlnet

FOLDER = "controlnet"
log = logging.getLogger(__name__)


def controlnet_config(sd: dict, path: Path) -> dict:
    """core's UNet config for the file's blocks (its diffusers table), with the file's own mid block."""
    import comfy.model_detection
    config = comfy.model_detection.unet_config_from_diffusers_unet(sd)
    if config is None:
        raise CheckpointError(f"{path}: a diffusers ControlNet whose block layout ComfyUI does not know "
                              f"(none of comfy/model_detection.py's diffusers UNet tables matches)")
    mid = mid_block_of(sd)
    # cldm builds a lone ResBlock for a negative middle depth, resnet + transformer + resnet otherwise
    config["transformer_depth_middle"] = mid.transformer_depth if mid.kind == MID_CROSS_ATTENTION else -1
    config.pop("out_channels", None)
    return config


def diffusers_to_cldm_keys(config: dict, sd: dict) -> dict[str, str]:
    """diffusers ControlNetModel key -> cldm ControlNet key: the UNet encoder names from core's unet_to_diffusers,
    the zero convolutions and the hint embedding numbered as core's diffusers branch does (comfy/controlnet.py)."""
    import comfy.utils
    keys = {k: v for k, v in comfy.utils.unet_to_diffusers(config).items()
            if not k.startswith(("up_blocks.", "conv_norm_out.", "conv_out."))}
    keys["controlnet_mid_block.weight"] = "middle_block_out.0.weight"
    keys["controlnet_mid_block.bias"] = "middle_block_out.0.bias"
    n = 0
    while f"controlnet_down_blocks.{n}.weight" in sd:
        for s in ("weight", "bias"):
            keys[f"controlnet_down_blocks.{n}.{s}"] = f"zero_convs.{n}.0.{s}"
        n += 1
    blocks = 0
    while f"controlnet_cond_embedding.blocks.{blocks}.weight" in sd:
        blocks += 1
    for s in ("weight", "bias"):
        keys[f"controlnet_cond_embedding.conv_in.{s}"] = f"input_hint_block.0.{s}"
        for b in range(blocks):
            keys[f"controlnet_cond_embedding.blocks.{b}.{s}"] = f"input_hint_block.{2 * (b + 1)}.{s}"
        keys[f"controlnet_cond_embedding.conv_out.{s}"] = f"input_hint_block.{2 * (blocks + 1)}.{s}"
    return keys


def load_sdxs_controlnet(path: str | os.PathLike):
    """comfy.controlnet.ControlNet for a diffusers ControlNetModel file; CheckpointError naming the tensors when the
    file and the network built for it do not match one to one."""
    import comfy.cldm.cldm
    import comfy.controlnet
    import comfy.ldm.modules.diffusionmodules.openaimodel as openaimodel
    import comfy.model_management as mm
    import comfy.ops
    import comfy.utils
    path = Path(path)
    sd = read_diffusers_controlnet(path)
    config = controlnet_config(sd, path)
    names = diffusers_to_cldm_keys(config, sd)
    mid = mid_block_of(sd)
    converted, leftover = {}, []
    for k, v in sd.items():
        if k in names:
            converted[names[k]] = v
        else:
            leftover.append(k)
    if leftover:
        raise CheckpointError(f"{path}: {len(leftover)} tensors of this ControlNet have no place in the network "
                              f"built for its blocks, e.g. {', '.join(sorted(leftover)[:4])}")

    weight_dtype = comfy.utils.weight_dtype(converted)
    unet_dtype = mm.unet_dtype(model_params=-1, supported_dtypes=[mm.unet_dtype()], weight_dtype=weight_dtype)
    load_device = mm.get_torch_device()
    manual_cast_dtype = mm.unet_manual_cast(unet_dtype, load_device)
    config.update(operations=comfy.ops.pick_operations(unet_dtype, manual_cast_dtype), dtype=unet_dtype,
                  device=mm.unet_offload_device(),
                  hint_channels=converted["input_hint_block.0.weight"].shape[1])
    control_model = comfy.cldm.cldm.ControlNet(**config)
    if mid.kind == MID_NONE:
        control_model.middle_block = openaimodel.TimestepEmbedSequential()
    missing, unexpected = control_model.load_state_dict(converted, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: the ControlNet's tensors do not fit the network built for its blocks "
                              f"(missing {sorted(missing)[:4]}, unexpected {sorted(unexpected)[:4]})")
    log.info("%s: diffusers ControlNet, %d tensors, mid block %s", path.name, len(converted), mid.kind)
    return comfy.controlnet.ControlNet(control_model, load_device=load_device, manual_cast_dtype=manual_cast_dtype)


CONTROLNETS = FileCache(max_entries=2)


def cached_sdxs_controlnet(path: str | os.PathLike):
    return CONTROLNETS.get(path, (), lambda: load_sdxs_controlnet(path))
