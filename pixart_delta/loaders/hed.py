"""Loading `ControlNetHED.pth` (fp16 or fp32 storage, pickle-safe) and keeping it under ComfyUI's model
management. `read_hed_state_dict` and `build_hed` need no ComfyUI; `load_hed_patcher` does."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..models.hed import HED, expected_keys, widths_of
from .files import CheckpointError, load_state_dict, unwrap

HED_FILE = "ControlNetHED.pth"
# Where the popular preprocessor pack (comfyui_controlnet_aux) downloads it, under each custom_nodes folder.
AUX_SUBPATH = ("comfyui_controlnet_aux", "ckpts", "lllyasviel", "Annotators", HED_FILE)


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


# ---- ComfyUI side -------------------------------------------------------------------------------------------

FOLDER = "hed"


def register_folder():
    """models/hed, a folder ComfyUI lists (extra_model_paths.yaml can add more)."""
    import folder_paths
    if FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[FOLDER] = (
            [os.path.join(folder_paths.models_dir, FOLDER)], set(folder_paths.supported_pt_extensions))


def aux_pack_file() -> Path | None:
    """ControlNetHED.pth where comfyui_controlnet_aux keeps it, if there."""
    import folder_paths
    for root in folder_paths.get_folder_paths("custom_nodes"):
        p = Path(root).joinpath(*AUX_SUBPATH)
        if p.is_file():
            return p
    return None


def list_hed_files() -> list[str]:
    import folder_paths
    names = list(folder_paths.get_filename_list(FOLDER))
    if HED_FILE not in names and aux_pack_file() is not None:
        names.append(HED_FILE)
    return names


def resolve_hed_file(name: str) -> Path:
    import folder_paths
    p = folder_paths.get_full_path(FOLDER, name)
    if p is not None:
        return Path(p)
    if name == HED_FILE and aux_pack_file() is not None:
        return aux_pack_file()
    raise CheckpointError(f"{name}: HED model not found; put {HED_FILE} (lllyasviel/Annotators) in "
                          f"{folder_paths.get_folder_paths(FOLDER)} or custom_nodes/{'/'.join(AUX_SUBPATH)}")


_CACHE: dict = {}


def load_hed_patcher(path: str | os.PathLike):
    """A ModelPatcher holding the HED network, cached per file (path, size, mtime): ComfyUI loads it onto the
    device with load_models_gpu and offloads it when memory is needed elsewhere."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.ops
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _CACHE:
        model = load_hed(path, ops=comfy.ops.disable_weight_init)
        _CACHE.clear()
        _CACHE[key] = comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                                       offload_device=mm.unet_offload_device())
    return _CACHE[key]
