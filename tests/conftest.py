"""Shared test fixtures. Integration tests take the `comfy` fixture: it boots the ComfyUI checkout found
at $COMFYUI_PATH or ~/ComfyUI in this process (once), with this pack loaded and model/output folders in a
temporary directory; without a checkout those tests are skipped and say why."""
from __future__ import annotations

import pytest

from pixart_delta.comfy_runtime import InProcessComfy, find_comfyui


@pytest.fixture(scope="session")
def comfy_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("comfy")
    dirs = {name: root / name for name in ("models", "output", "input")}
    for d in dirs.values():
        d.mkdir()
    return dirs


@pytest.fixture(scope="session")
def comfy(comfy_dirs):
    path = find_comfyui()
    if path is None:
        pytest.skip("no ComfyUI checkout: set COMFYUI_PATH or put one at ~/ComfyUI to run the integration tests")
    return InProcessComfy.get(path, comfy_dirs["models"], comfy_dirs["output"], comfy_dirs["input"])


@pytest.fixture(scope="session")
def models_dir(comfy, comfy_dirs):
    return comfy_dirs["models"]
