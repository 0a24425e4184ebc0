"""The lineart generator under ComfyUI's model management: the models/lineart folder (and the copies the
comfyui_controlnet_aux pack downloads), and a cached ModelPatcher per file."""
from __future__ import annotations

import os
from pathlib import Path

from .file_cache import FileCache
from .files import CheckpointError
from .lineart import LINEART_FILE, LINEART_FILES, load_lineart

# Where the popular preprocessor pack (comfyui_controlnet_aux) downloads lllyasviel/Annotators files, under each
# custom_nodes folder.
AUX_DIR = ("comfyui_controlnet_aux", "ckpts", "lllyasviel", "Annotators")
FOLDER = "lineart"


def register_folder():
    """models/lineart, a folder ComfyUI lists (extra_model_paths.yaml can add more)."""
    import folder_paths
    if FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[FOLDER] = (
            [os.path.join(folder_paths.models_dir, FOLDER)], set(folder_paths.supported_pt_extensions))


def aux_pack_file(name: str) -> Path | None:
    """sk_model.pth / sk_model2.pth where comfyui_controlnet_aux keeps them, if there."""
    if name not in LINEART_FILES:
        return None
    import folder_paths
    for root in folder_paths.get_folder_paths("custom_nodes"):
        p = Path(root).joinpath(*AUX_DIR, name)
        if p.is_file():
            return p
    return None


def list_lineart_files() -> list[str]:
    import folder_paths
    names = list(folder_paths.get_filename_list(FOLDER))
    for name in LINEART_FILES:
        if name not in names and aux_pack_file(name) is not None:
            names.append(name)
    # the published names first, so the default (sk_model.pth) is offered even before it is downloaded
    return list(LINEART_FILES) + sorted(n for n in names if n not in LINEART_FILES)


def resolve_lineart_file(name: str) -> Path:
    import folder_paths
    p = folder_paths.get_full_path(FOLDER, name)
    if p is not None:
        return Path(p)
    aux = aux_pack_file(name)
    if aux is not None:
        return aux
    raise CheckpointError(f"{name}: lineart model not found; put {' / '.join(LINEART_FILES)} "
                          f"(lllyasviel/Annotators) in {folder_paths.get_folder_paths(FOLDER)} or "
                          f"custom_nodes/{'/'.join(AUX_DIR)}/")


PATCHERS = FileCache(max_entries=2)   # the fine and the coarse model


def load_lineart_patcher(path: str | os.PathLike):
    """A ModelPatcher holding the generator, cached per file (path, size, mtime): ComfyUI loads it onto the
    device with load_models_gpu and offloads it when memory is needed elsewhere."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.ops
    path = Path(path)

    def build():
        model = load_lineart(path, ops=comfy.ops.disable_weight_init)
        return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                                offload_device=mm.unet_offload_device())
    return PATCHERS.get(path, (), build)

