"""Run API-format graphs inside a ComfyUI checkout, in this process (CLI `run` and the tests).

ComfyUI is not a library: it must be put on sys.path, told to use the CPU when there is no GPU,
and have its model/output folders pointed at ours before any node runs.
"""
from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path

from . import PACK_ROOT


def is_comfyui(path: Path) -> bool:
    return (path / "main.py").is_file() and (path / "comfy" / "model_management.py").is_file() \
        and (path / "nodes.py").is_file()


def pack_locations(pack_root: Path = PACK_ROOT) -> list[Path]:
    """The pack folder under every name it is reached by: as imported, resolved, and, when the shell's working
    directory ($PWD, which keeps symlinks) is inside the pack, the logical path through a symlinked pack folder."""
    real = Path(pack_root).resolve()
    found = [Path(os.path.abspath(pack_root)), real]
    pwd = os.environ.get("PWD")
    if pwd and Path(pwd).is_absolute():
        for p in (Path(pwd), *Path(pwd).parents):
            if p.resolve() == real:
                found.append(p)
                break
    return list(dict.fromkeys(found))


def host_comfyui(pack_root: Path = PACK_ROOT) -> Path | None:
    """The ComfyUI this pack is installed in: <ComfyUI>/custom_nodes/<pack>, with the pack folder itself, or
    any folder above it, possibly a symlink."""
    for pack in pack_locations(pack_root):
        if pack.parent.name == "custom_nodes" and is_comfyui(pack.parent.parent):
            return pack.parent.parent
    return None


def comfyui_candidates(explicit: str | os.PathLike | None = None) -> list[tuple[str, Path | None]]:
    """Where a ComfyUI checkout is looked for, in order: (what the place is, the path or None)."""
    env = os.environ.get("COMFYUI_PATH")
    return [("--comfyui", Path(explicit) if explicit else None),
            ("$COMFYUI_PATH", Path(env) if env else None),
            ("the ComfyUI this pack is installed in", host_comfyui()),
            ("~/ComfyUI", Path.home() / "ComfyUI")]


def find_comfyui(explicit: str | os.PathLike | None = None) -> Path | None:
    """The ComfyUI checkout to use: `explicit` (--comfyui), else $COMFYUI_PATH, else the ComfyUI the pack is
    installed in, else ~/ComfyUI. A --comfyui that is not a checkout is an error, never passed over."""
    if explicit:
        return Path(explicit).resolve() if is_comfyui(Path(explicit)) else None
    for _what, path in comfyui_candidates(explicit):
        if path is not None and is_comfyui(path):
            return path.resolve()
    return None


def comfyui_not_found(explicit: str | os.PathLike | None = None) -> str:
    """The message for no ComfyUI found: every place looked at, and what was there."""
    lines = []
    for what, path in comfyui_candidates(explicit):
        if path is None:
            lines.append(f"  {what}: not set" if what.startswith(("--", "$")) else
                         f"  {what}: the pack is at {', '.join(map(str, pack_locations()))}, not in the "
                         f"custom_nodes folder of a ComfyUI checkout")
        else:
            state = "no such folder" if not path.exists() else "not a ComfyUI checkout (no main.py, nodes.py, comfy/)"
            lines.append(f"  {what}: {path}: {state}")
    return ("no ComfyUI checkout found. Looked at:\n" + "\n".join(lines) +
            "\nPass --comfyui PATH, set COMFYUI_PATH, or install the pack in ComfyUI/custom_nodes.")


def require_comfyui(explicit: str | os.PathLike | None = None, why: str = "") -> Path:
    path = find_comfyui(explicit)
    if path is None:
        raise SystemExit(comfyui_not_found(explicit) + (f" ({why})" if why else ""))
    return path


class ExecutionFailed(RuntimeError):
    def __init__(self, node_id, node_type, message, details=None):
        super().__init__(f"node {node_id} ({node_type}) failed: {message}")
        self.node_id, self.node_type, self.message, self.details = node_id, node_type, message, details


class _SilentServer:
    """What PromptExecutor needs of a PromptServer, with messages kept for inspection."""
    client_id = None
    last_node_id = None
    last_prompt_id = None

    def __init__(self):
        self.messages = []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))

    def queue_updated(self):
        pass


class InProcessComfy:
    """One booted ComfyUI per process (ComfyUI keeps global state, so it cannot be booted twice)."""
    _instance: "InProcessComfy | None" = None

    @classmethod
    def get(cls, comfy_path: Path, models_dir: Path | None = None, output_dir: Path | None = None,
            input_dir: Path | None = None) -> "InProcessComfy":
        if cls._instance is None:
            cls._instance = cls(comfy_path)
        cls._instance.set_folders(models_dir, output_dir, input_dir)
        return cls._instance

    def __init__(self, comfy_path: Path):
        self.comfy_path = Path(comfy_path)
        sys.path.insert(0, str(self.comfy_path))
        import comfy.options
        comfy.options.enable_args_parsing(False)
        import comfy.cli_args
        import torch
        if not torch.cuda.is_available():
            comfy.cli_args.args.cpu = True
        import utils.extra_config  # (must come before `nodes`, which changes the import path)
        extra_paths = self.comfy_path / "extra_model_paths.yaml"
        if extra_paths.is_file():
            utils.extra_config.load_extra_path_config(str(extra_paths))
        import nodes
        import execution
        self._nodes, self._execution = nodes, execution
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
        ok = self.loop.run_until_complete(nodes.load_custom_node(str(PACK_ROOT)))
        if not ok:
            raise RuntimeError(f"ComfyUI at {self.comfy_path} could not import the pack at {PACK_ROOT}; see the log above")
        self.server = _SilentServer()
        self.executor = execution.PromptExecutor(self.server, cache_type=False)

    def set_folders(self, models_dir=None, output_dir=None, input_dir=None):
        import folder_paths
        if models_dir is not None:
            models_dir = Path(models_dir)
            for name in list(folder_paths.folder_names_and_paths):
                sub = models_dir / name
                folder_paths.add_model_folder_path(name, str(sub), is_default=True)
            for alias, name in (("unet", "diffusion_models"), ("clip", "text_encoders")):
                folder_paths.add_model_folder_path(name, str(models_dir / alias))
        if output_dir is not None:
            folder_paths.set_output_directory(str(output_dir))
        if input_dir is not None:
            folder_paths.set_input_directory(str(input_dir))

    @property
    def node_classes(self):
        return self._nodes.NODE_CLASS_MAPPINGS

    def run(self, prompt: dict) -> dict:
        """Validate and execute an API-format graph; return {node_id: ui_output}. Raises ExecutionFailed."""
        prompt_id = str(uuid.uuid4())
        valid = self.loop.run_until_complete(self._execution.validate_prompt(prompt_id, prompt, None))
        if not valid[0]:
            err, node_errors = valid[1], valid[3]
            detail = "; ".join(f"node {nid} ({ne.get('class_type')}): " +
                               ", ".join(f"{e['message']}: {e['details']}" for e in ne["errors"])
                               for nid, ne in node_errors.items())
            raise ExecutionFailed(None, None, f"{err['message']}: {err.get('details', '')} {detail}".strip(), valid)
        self.server.messages.clear()
        self.executor.reset()
        self.executor.execute(prompt, prompt_id, {}, valid[2])
        for event, data in self.executor.status_messages:
            if event == "execution_error":
                raise ExecutionFailed(data["node_id"], data["node_type"], data["exception_message"], data)
        return self.executor.history_result["outputs"]
