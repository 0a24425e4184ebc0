"""Which ComfyUI the CLI and the tests use: --comfyui, $COMFYUI_PATH, the ComfyUI the pack is installed in (also
through a symlinked pack folder, or a symlink to the installed pack), then ~/ComfyUI; the error lists every place
looked at. The last test runs the README's main command from <ComfyUI>/custom_nodes/ComfyUI-PixArt-Delta."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from pixart_delta.tools import PACK_ROOT
from pixart_delta.tools.comfy_runtime import comfyui_not_found, find_comfyui, host_comfyui

from conftest import comfyui_or_skip

PACK_NAME = "ComfyUI-PixArt-Delta"


def fake_comfyui(root: Path) -> Path:
    """The files that make a folder a ComfyUI checkout for the lookup."""
    (root / "comfy").mkdir(parents=True)
    (root / "custom_nodes").mkdir()
    for f in ("main.py", "nodes.py", "comfy/model_management.py"):
        (root / f).write_text("")
    return root


def lookup_from(cwd: Path, home: Path, logical_cwd: Path | None = None, extra_env: dict | None = None) -> str:
    """find_comfyui() in a fresh interpreter started in `cwd` the way a shell starts `python -m` there: the pack
    is imported from the working directory, $PWD is the shell's (logical) path."""
    env = {k: v for k, v in os.environ.items() if k not in ("COMFYUI_PATH", "PYTHONPATH")}
    env.update(HOME=str(home), PWD=str(logical_cwd or cwd), **(extra_env or {}))
    proc = subprocess.run([sys.executable, "-c", "from pixart_delta.tools.comfy_runtime import find_comfyui, "
                           "comfyui_not_found; p = find_comfyui(); print(p if p else comfyui_not_found())"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.fixture
def installed(tmp_path):
    """<tmp>/ComfyUI with the pack linked in as custom_nodes/ComfyUI-PixArt-Delta; HOME without a ComfyUI."""
    comfy = fake_comfyui(tmp_path / "ComfyUI")
    pack = comfy / "custom_nodes" / PACK_NAME
    pack.symlink_to(PACK_ROOT.resolve(), target_is_directory=True)
    home = tmp_path / "home"
    home.mkdir()
    return comfy, pack, home


def test_host_comfyui_through_a_symlinked_pack_folder(installed):
    comfy, pack, _home = installed
    assert host_comfyui(pack) == comfy
    assert host_comfyui(comfy / "custom_nodes") is None


def test_found_from_inside_a_symlinked_pack_folder(installed):
    comfy, pack, home = installed
    # os.getcwd() is the real folder; only $PWD still says custom_nodes/ComfyUI-PixArt-Delta
    assert lookup_from(pack, home) == str(comfy.resolve())


def test_found_through_a_symlink_to_the_installed_pack(tmp_path):
    comfy = fake_comfyui(tmp_path / "ComfyUI")
    real_pack = comfy / "custom_nodes" / PACK_NAME
    real_pack.mkdir()
    (real_pack / "pixart_delta").symlink_to(PACK_ROOT.resolve() / "pixart_delta", target_is_directory=True)
    shortcut = tmp_path / "work" / "pack"
    shortcut.parent.mkdir()
    shortcut.symlink_to(real_pack, target_is_directory=True)
    home = tmp_path / "home"
    home.mkdir()
    # imported through the shortcut from elsewhere: only the resolved path leads into custom_nodes
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert lookup_from(elsewhere, home, extra_env={"PYTHONPATH": str(shortcut)}) == str(comfy.resolve())


def test_order_explicit_then_env_then_host_then_home(installed, tmp_path, monkeypatch):
    comfy, pack, home = installed
    other = fake_comfyui(tmp_path / "Other")
    at_home = fake_comfyui(home / "ComfyUI")
    assert lookup_from(pack, home, extra_env={"COMFYUI_PATH": str(other)}) == str(other.resolve())
    assert lookup_from(pack, home) == str(comfy.resolve())                     # host before ~/ComfyUI
    monkeypatch.setenv("COMFYUI_PATH", str(other))
    assert find_comfyui(at_home) == at_home.resolve()                          # --comfyui first
    assert find_comfyui(tmp_path / "nowhere") is None                          # a wrong --comfyui is not skipped


def test_not_found_lists_every_place(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    message = lookup_from(PACK_ROOT, home, extra_env={"COMFYUI_PATH": str(tmp_path / "missing")})
    if not message.startswith("no ComfyUI"):
        pytest.skip(f"this checkout is itself installed in a ComfyUI ({message})")
    assert "$COMFYUI_PATH" in message and str(tmp_path / "missing") in message and "no such folder" in message
    assert "installed in" in message and "custom_nodes" in message
    assert str(home / "ComfyUI") in message
    monkeypatch.delenv("COMFYUI_PATH", raising=False)
    assert "--comfyui: " + str(tmp_path) in comfyui_not_found(tmp_path)


@pytest.mark.comfyui
def test_readme_command_from_custom_nodes_of_a_real_comfyui(tmp_path):
    """A ComfyUI checkout (every entry a symlink into the real one, custom_nodes of its own) with the pack in its
    custom_nodes: `python -m pixart_delta run pixart_sigma_t2i --tiny` there needs no flag and no COMFYUI_PATH."""
    real = comfyui_or_skip()
    comfy = tmp_path / "ComfyUI"
    comfy.mkdir()
    for entry in real.iterdir():
        if entry.name != "custom_nodes":
            (comfy / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    (comfy / "custom_nodes").mkdir()
    pack = comfy / "custom_nodes" / PACK_NAME
    pack.symlink_to(PACK_ROOT.resolve(), target_is_directory=True)
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("COMFYUI_PATH", "PYTHONPATH")}
    env.update(HOME=str(home), PWD=str(pack))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "pixart_delta", "run", "pixart_sigma_t2i", "--tiny", "--out", str(out),
                           "--set", "6.steps=2"], cwd=pack, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    images = [Path(line) for line in proc.stdout.splitlines() if line.endswith(".png")]
    assert len(images) == 1 and images[0].parent == out
    with Image.open(images[0]) as im:
        assert im.size == (256, 256)
