"""transformers model folders under ComfyUI: a models folder of ours listing the folders inside it, the Hugging
Face hub cache (where transformers' from_pretrained, and so comfyui_controlnet_aux's transformers-based MiDaS,
keeps them), and a cached ModelPatcher per folder."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .file_cache import FileCache
from .files import CheckpointError
from .transformers_folder import CONFIG, find_model_folders, weight_file


class TransformersModule(torch.nn.Module):
    """Holds a transformers model for ComfyUI's ModelPatcher, which sets `.device` on its model (a read-only
    property on transformers models)."""

    def __init__(self, model: torch.nn.Module, extra=None):
        super().__init__()
        self.model = model
        self.extra = extra
        self.device = None


def register_folder(folder: str):
    import folder_paths
    if folder not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[folder] = (
            [os.path.join(folder_paths.models_dir, folder)], {".json", *folder_paths.supported_pt_extensions})


def hf_hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(home) / "hub"


def hf_cache_folder(repo_id: str) -> Path | None:
    """The snapshot of `repo_id` in the hub cache that refs/main names (else the newest) if it has a config."""
    repo = hf_hub_cache() / f"models--{repo_id.replace('/', '--')}"
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = repo / "refs" / "main"
    if ref.is_file():
        named = snapshots / ref.read_text().strip()
        if (named / CONFIG).is_file():
            return named
    found = [p for p in snapshots.iterdir() if (p / CONFIG).is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def list_model_folders(folder: str, model_types: tuple[str, ...], repos: tuple[str, ...]) -> list[str]:
    """Names of the model folders in models/<folder> (their paths inside it), then hub-cache repos by id."""
    import folder_paths
    names = list(find_model_folders(folder_paths.get_folder_paths(folder), model_types))
    names += [r for r in repos if r not in names and hf_cache_folder(r) is not None]
    return names


def resolve_model_folder(name: str, folder: str, model_types: tuple[str, ...], repos: tuple[str, ...],
                         what: str) -> Path:
    import folder_paths
    roots = folder_paths.get_folder_paths(folder)
    for root in roots:
        p = Path(root) / name
        if p.is_dir():
            return p
    if name in repos and hf_cache_folder(name) is not None:
        return hf_cache_folder(name)
    raise CheckpointError(f"{name}: no such model folder; expected {what} as a transformers model folder "
                          f"(config.json + model.safetensors [+ preprocessor_config.json]) in {roots}, e.g. "
                          f"{Path(roots[0]) / repos[0].split('/')[-1]}, or {repos[0]} in the Hugging Face cache")


def load_patcher(cache: FileCache, folder: Path, what: str, build):
    """A ModelPatcher around build(folder) -> (module, extra), cached per folder while its weight file and config
    stay the same."""
    import comfy.model_management as mm
    import comfy.model_patcher
    folder = Path(folder)
    weights = weight_file(folder, what)
    config = (folder / CONFIG).stat()

    def make():
        model, extra = build(folder)
        return comfy.model_patcher.ModelPatcher(TransformersModule(model, extra), load_device=mm.get_torch_device(),
                                                offload_device=mm.unet_offload_device())
    return cache.get(weights, (config.st_size, config.st_mtime_ns), make)
