"""Tooling that ComfyUI never imports: the command line (cli.py), the queue client, the in-process runtime and
the server launcher, the model downloader, the workflow format converter, and the maintainers' README and
graph-picture generators."""
import os
from pathlib import Path

# as imported (not resolved): a symlinked pack folder keeps its place in custom_nodes
PACK_ROOT = Path(os.path.abspath(__file__)).parents[2]
API_DIR = PACK_ROOT / "workflows" / "api"
