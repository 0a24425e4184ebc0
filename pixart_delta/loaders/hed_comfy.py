"""The HED network under ComfyUI's model management: the models/hed folder (and the copy the
comfyui_controlnet_aux pack downloads), and a cached ModelPatcher per file."""
from __future__ import annotations

import os
from pathlib import Path

from .file_cache import FileCache
from .files import CheckpointError
from .hed import HED_FILE, load_hed

# Where the popular preprocessor pack (comfyui_controlnet_aux) downloads it, under each custom_nodes folder.
AUX_SUBPATH = ("comfyui_controlnet_aux", "ckpts", "lllyasviel", "Annotators", HED_FILE)
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


PATCHERS = FileCache(max_entries=1)


def load_hed_patcher(path: str | os.PathLike):
    """A ModelPatcher holding the HED network, cached per file (path, size, mtime): ComfyUI loads it onto the
    device with load_models_gpu and offloads it when memory is needed elsewhere."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.ops
    path = Path(path)

    def build():
        model = load_hed(path, ops=comfy.ops.disable_weight_init)
        return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                                offload_device=mm.unet_offload_device())
    return PATCHERS.get(path, (), build)
