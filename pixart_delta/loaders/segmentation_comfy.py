"""UperNet segmentation folders under ComfyUI: models/segmentation/<name>/ (or the Hugging Face cache) and a cached
ModelPatcher."""
from __future__ import annotations

from pathlib import Path

from .file_cache import FileCache
from .segmentation import MODEL_TYPES, REPOS, WHAT, load_upernet
from .transformers_folder_comfy import list_model_folders, load_patcher, register_folder as _register, resolve_model_folder

FOLDER = "segmentation"
DEFAULT = "upernet-convnext-small"
PATCHERS = FileCache(max_entries=1)


def register_folder():
    _register(FOLDER)


def list_segmentation_models() -> list[str]:
    return list_model_folders(FOLDER, MODEL_TYPES, REPOS)


def resolve_segmentation_model(name: str) -> Path:
    return resolve_model_folder(name, FOLDER, MODEL_TYPES, REPOS, WHAT)


def load_segmentation_patcher(folder):
    """ModelPatcher whose .model.model is UperNetForSemanticSegmentation and .model.extra its ImageProcessing."""
    return load_patcher(PATCHERS, folder, WHAT, load_upernet)
