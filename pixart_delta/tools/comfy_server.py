"""Start a real ComfyUI server process on loopback with this pack loaded and every folder (models, custom_nodes,
input, output, temp, user) under one temporary --base-directory, so nothing is written into the checkout.
Used by the server integration tests and by tools/render_graphs.py."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from . import PACK_ROOT

FOLDERS = ("models", "custom_nodes", "input", "output", "temp", "user")
# The frontend's first-run dialogs would cover the graph in screenshots.
QUIET_SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Workflow.ShowMissingModelsWarning": False,
                  "Comfy.Workflow.ShowMissingNodesWarning": False}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_base(base: Path, settings: dict | None = None) -> Path:
    base = Path(base)
    for d in FOLDERS:
        (base / d).mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / "ComfyUI-PixArt-Delta"
    if not link.exists():
        link.symlink_to(PACK_ROOT, target_is_directory=True)
    settings_file = base / "user" / "default" / "comfy.settings.json"
    settings_file.parent.mkdir(parents=True, exist_ok=True)
    if not settings_file.exists():
        settings_file.write_text(json.dumps({**QUIET_SETTINGS, **(settings or {})}))
    return base


class ComfyServer:
    """`python main.py --cpu --listen 127.0.0.1 --port P --base-directory BASE` as a child process."""

    def __init__(self, comfy_path: Path, base: Path, port: int | None = None, extra_args: list[str] = (),
                 settings: dict | None = None, env: dict | None = None):
        self.base = prepare_base(base, settings)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.base / "server.log"
        self.log = open(self.log_path, "w")
        cmd = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--base-directory", str(self.base), "--database-url", f"sqlite:///{self.base / 'user' / 'comfyui.db'}",
               "--disable-auto-launch", "--preview-method", "none", *extra_args]
        self.proc = subprocess.Popen(cmd, cwd=comfy_path, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})

    def wait_ready(self, timeout: float = 300) -> "ComfyServer":
        """Returns once the server lists the pack's nodes; raises with the log tail if it dies or stalls."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/object_info/PixArtCheckpointLoader", timeout=5) as r:
                    if r.status == 200 and b"PixArtCheckpointLoader" in r.read():
                        return self
            except OSError:
                pass
            time.sleep(1)
        raise RuntimeError(f"ComfyUI did not serve the pack within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 4000) -> str:
        self.log.flush()
        return self.log_path.read_text()[-n:]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.stop()
