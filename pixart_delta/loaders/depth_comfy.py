"""DPT depth folders under ComfyUI: models/depth/<name>/ (or the Hugging Face cache) and a cached ModelPatcher."""
from __future__ import annotations

from pathlib import Path

from .depth import MODEL_TYPES, REPOS, WHAT, load_dpt
from .file_cache import FileCache
from .transformers_folder_comfy import list_model_folders, load_patcher, register_folder as _register, resolve_model_folder

FOLDER = "depth"
DEFAULT = "dpt-large"
PATCHERS = FileCache(max_entries=2)


def register_folder():
    _register(FOLDER)


def list_depth_models() -> list[str]:
    return list_model_folders(FOLDER, MODEL_TYPES, REPOS)


def resolve_depth_model(name: str) -> Path:
    return resolve_model_folder(name, FOLDER, MODEL_TYPES, REPOS, WHAT)


def load_depth_patcher(folder):
    """ModelPatcher whose .model.model is DPTForDepthEstimation and .model.extra its ImageProcessing."""
    return load_patcher(PATCHERS, folder, WHAT, load_dpt)
