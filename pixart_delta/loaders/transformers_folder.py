"""transformers model folders (config.json + model.safetensors or pytorch_model.bin [+ preprocessor_config.json]),
as `save_pretrained` writes them and the Hugging Face hub serves them: finding them, checking them with errors
that name the folder, and building the transformers module from them pickle-safely. No ComfyUI."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

import torch

from .files import CheckpointError, load_state_dict
from .identify import identify

CONFIG = "config.json"
PREPROCESSOR = "preprocessor_config.json"
WEIGHTS = ("model.safetensors", "pytorch_model.bin")   # transformers' names, safetensors first as it prefers


def model_type_of(folder: Path) -> str | None:
    """The config's model_type, or None when the folder has no readable config.json."""
    try:
        cfg = json.loads((Path(folder) / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return cfg.get("model_type") if isinstance(cfg, dict) else None


def find_model_folders(roots: Iterable[str | os.PathLike], model_types: tuple[str, ...], depth: int = 3) -> dict[str, Path]:
    """{name relative to its root (with '/'): folder} for every folder under `roots` whose config.json names one
    of `model_types`; the first root wins a name."""
    found: dict[str, Path] = {}
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            here = Path(dirpath)
            rel = here.relative_to(root)
            if len(rel.parts) >= depth:
                dirnames[:] = []
            dirnames.sort()
            if CONFIG in filenames and rel.parts and model_type_of(here) in model_types:
                found.setdefault(rel.as_posix(), here)
    return found


def read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise CheckpointError(f"{path}: not a text file; expected the JSON {what} of a transformers model folder") from None
    except ValueError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e}); expected the {what} of a transformers model folder") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: JSON {type(data).__name__}, expected an object (the {what})")
    return data


def read_config(folder: Path, model_types: tuple[str, ...], what: str) -> dict:
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a folder; expected a transformers model folder of {what} "
                              f"({CONFIG} + {WEIGHTS[0]})")
    path = folder / CONFIG
    if not path.is_file():
        present = sorted(p.name for p in folder.iterdir())[:8]
        raise CheckpointError(f"{folder}: no {CONFIG}; expected a transformers model folder of {what} ({CONFIG} + "
                              f"{WEIGHTS[0]}), found {', '.join(present) if present else 'an empty folder'}")
    cfg = read_json(path, "model config")
    if cfg.get("model_type") not in model_types:
        raise CheckpointError(f"{path}: model_type {cfg.get('model_type')!r} (architectures "
                              f"{cfg.get('architectures')}); expected {' or '.join(map(repr, model_types))}, {what}")
    return cfg


def read_preprocessor_config(folder: Path) -> dict | None:
    path = Path(folder) / PREPROCESSOR
    return read_json(path, "image processor settings") if path.is_file() else None


def weight_file(folder: Path, what: str) -> Path:
    for name in WEIGHTS:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    if any((Path(folder) / f"{name}.index.json").is_file() for name in WEIGHTS):
        raise CheckpointError(f"{folder}: the weights are split in shards; expected one {WEIGHTS[0]} (the "
                              f"checkpoints of {what} are single files)")
    raise CheckpointError(f"{folder}: no weights; expected {' or '.join(WEIGHTS)} beside {CONFIG} ({what})")


def build_model(folder: Path, config_cls, model_cls, model_types: tuple[str, ...], what: str) -> torch.nn.Module:
    """The transformers module of `folder`, in float32, eval mode. Its weights are read pickle-safely (safetensors, or
    torch.load(weights_only=True)) and must match the config's tensors exactly (names and shapes)."""
    folder = Path(folder)
    cfg = read_config(folder, model_types, what)
    path = weight_file(folder, what)
    try:
        config = config_cls.from_dict(cfg)
    except Exception as e:  # transformers raises ValueError/TypeError/KeyError for bad fields
        raise CheckpointError(f"{folder / CONFIG}: transformers cannot read it as a {config_cls.__name__} ({e})") from None
    with torch.device("meta"):   # names and shapes only; the file's tensors are assigned below
        model = model_cls(config)
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    sd = load_state_dict(path)
    missing = [k for k in want if k not in sd]
    if missing:
        found = identify(sd)
        looks = found.looks_like() or f"found {found.found()}"
        raise CheckpointError(f"{path}: not the weights of this {what} config; {looks}; missing {len(missing)} of "
                              f"the {len(want)} tensors {model_cls.__name__} needs, such as {', '.join(missing[:3])}")
    bad = [f"{k} {tuple(sd[k].shape)} (expected {s})" for k, s in want.items() if tuple(sd[k].shape) != s]
    if bad:
        raise CheckpointError(f"{path}: tensors of the wrong shape for {folder / CONFIG}: {'; '.join(bad[:3])}")
    extra = [k for k in sd if k not in want]
    if extra:
        raise CheckpointError(f"{path}: {len(extra)} tensors {model_cls.__name__} does not have, such as "
                              f"{', '.join(extra[:3])}; expected exactly the {len(want)} of {folder / CONFIG}")
    model.load_state_dict({k: sd[k].float() for k in want}, strict=True, assign=True)
    return model.eval().requires_grad_(False)
