"""Shared test fixtures. Integration tests take the `comfy` fixture: it boots the ComfyUI checkout the CLI
would use (--comfyui aside: $COMFYUI_PATH, the ComfyUI this pack is installed in, ~/ComfyUI) in this process
(once), with this pack loaded and model/output folders in a temporary directory. Without a checkout those tests
are skipped and say why; with PIXART_DELTA_REQUIRE_COMFYUI=1 (CI) they fail instead."""
from __future__ import annotations

import ctypes
import gc
import os
import sys

import pytest

from pixart_delta.tools.comfy_runtime import InProcessComfy, comfyui_not_found, find_comfyui


@pytest.fixture(scope="session")
def comfy_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("comfy")
    dirs = {name: root / name for name in ("models", "output", "input")}
    for d in dirs.values():
        d.mkdir()
    return dirs


def comfyui_or_skip():
    """The ComfyUI checkout for integration tests; skips (fails under PIXART_DELTA_REQUIRE_COMFYUI=1) without."""
    path = find_comfyui()
    if path is None:
        reason = "integration tests need ComfyUI: " + " ".join(comfyui_not_found().split())
        if os.environ.get("PIXART_DELTA_REQUIRE_COMFYUI") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def comfy(comfy_dirs):
    path = comfyui_or_skip()
    return InProcessComfy.get(path, comfy_dirs["models"], comfy_dirs["output"], comfy_dirs["input"])


@pytest.fixture(scope="session")
def models_dir(comfy, comfy_dirs):
    return comfy_dirs["models"]


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core machine OpenMP's spinning threads made each
    forward ~40x slower; restored afterwards for the other modules."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tokenizer(comfy):
    """The T5 tokenizer ComfyUI ships, as transformers reads it."""
    import transformers
    return transformers.T5TokenizerFast.from_pretrained(str(comfy.comfy_path / "comfy/text_encoders/t5_tokenizer"))


def release_memory() -> None:
    """Unloads ComfyUI's models, drops the pack's cached models and returns freed heap pages to the OS: the
    full-size SD1.5 / SDXS / ControlNet stand-ins load several GB each, and without this one test process held
    22 GB by the workflow tests (glibc keeps freed arenas)."""
    if "comfy.model_management" in sys.modules:
        import comfy.model_management as mm
        mm.unload_all_models()
    for name, module in list(sys.modules.items()):   # the tests' import and ComfyUI's (named by the pack's path)
        if name.endswith("pixart_delta.loaders.file_cache"):
            module.clear_all_file_caches()
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):   # not glibc
        pass


@pytest.fixture(scope="module", autouse=True)
def release_memory_after_module():
    yield
    release_memory()


@pytest.fixture
def release_memory_after_test():
    yield
    release_memory()
