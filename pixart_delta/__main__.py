"""Command line: `python -m pixart_delta run WORKFLOW [--tiny]` runs a bundled API workflow in-process in a
ComfyUI checkout and prints where the images went."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from .comfy_runtime import PACK_ROOT, ExecutionFailed, InProcessComfy, find_comfyui

API_DIR = PACK_ROOT / "workflows" / "api"
TINY_MAX_SIZE = 256


def bundled_workflows() -> list[str]:
    return sorted(p.stem for p in API_DIR.glob("*.json"))


def load_workflow(name_or_path: str) -> dict:
    path = Path(name_or_path)
    if not path.is_file():
        path = API_DIR / f"{name_or_path}.json"
    if not path.is_file():
        raise SystemExit(f"no workflow '{name_or_path}': give a path to an API-format JSON or one of: "
                         f"{', '.join(bundled_workflows())}")
    graph = json.loads(path.read_text())
    if "nodes" in graph and "links" in graph:
        raise SystemExit(f"{path} is a UI-format workflow (for drag and drop); run the API-format one in "
                         f"{API_DIR} (ComfyUI's server executes API-format graphs only)")
    return graph


def apply_sets(graph: dict, sets: list[str]) -> None:
    for item in sets:
        target, _, raw = item.partition("=")
        node_id, _, name = target.partition(".")
        if node_id not in graph or not name or not _:
            raise SystemExit(f"--set {item}: expected NODE.INPUT=VALUE with a node id of the workflow "
                             f"({', '.join(graph)})")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        graph[node_id]["inputs"][name] = value


def shrink_for_tiny(graph: dict) -> None:
    for node in graph.values():
        for key in ("width", "height"):
            v = node["inputs"].get(key)
            if isinstance(v, int) and v > TINY_MAX_SIZE:
                node["inputs"][key] = TINY_MAX_SIZE


def write_missing_inputs(graph: dict, input_dir: Path) -> None:
    """--tiny: a synthetic picture for every LoadImage file that is not there."""
    import numpy as np
    from PIL import Image
    for node in graph.values():
        if node.get("class_type") == "LoadImage":
            target = input_dir / node["inputs"]["image"]
            if not target.exists():
                y, x = np.mgrid[0:384, 0:512]
                img = np.stack([(x / 2) % 256, (y / 1.5) % 256, ((x - 256) ** 2 + (y - 192) ** 2 < 120 ** 2) * 255], -1)
                target.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img.astype("uint8")).save(target)


def cmd_run(args) -> int:
    comfy_path = find_comfyui(args.comfyui)
    if comfy_path is None:
        raise SystemExit("no ComfyUI checkout found: pass --comfyui PATH, set COMFYUI_PATH, or put one at ~/ComfyUI")
    graph = load_workflow(args.workflow)
    apply_sets(graph, args.set or [])
    out_dir = Path(args.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    models_dir = input_dir = None
    if args.tiny:
        work = Path(tempfile.mkdtemp(prefix="pixart_delta_tiny_"))
        models_dir, input_dir = work / "models", work / "input"
        input_dir.mkdir(parents=True)
    comfy = InProcessComfy.get(comfy_path, models_dir=models_dir, output_dir=out_dir, input_dir=input_dir)
    if args.tiny:
        from .fixtures.tiny_models import write_for_workflow  # some writers build ComfyUI modules: after boot
        shrink_for_tiny(graph)
        written = write_for_workflow(graph, models_dir)
        write_missing_inputs(graph, input_dir)
        print(f"--tiny: wrote {len(written)} random-weight model files under {models_dir}")
    try:
        outputs = comfy.run(graph)
    except ExecutionFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    images = [out_dir / img.get("subfolder", "") / img["filename"]
              for ui in outputs.values() for img in ui.get("images", []) if img.get("type") == "output"]
    for p in images:
        print(p)
    print(f"{len(images)} image(s) saved in {out_dir}")
    return 0


def cmd_ui(args) -> int:
    """Regenerates example_workflows/NAME.json (UI format) from workflows/api/NAME.json + workflows/notes/NAME.md."""
    from .workflow_format import write_ui_workflow
    comfy_path = find_comfyui(args.comfyui)
    if comfy_path is None:
        raise SystemExit("no ComfyUI checkout found (the node definitions come from it)")
    comfy = InProcessComfy.get(comfy_path)
    import nodes
    for name in args.workflows or bundled_workflows():
        note_path = PACK_ROOT / "workflows" / "notes" / f"{name}.md"
        note = note_path.read_text() if note_path.is_file() else None
        target = PACK_ROOT / "example_workflows" / f"{name}.json"
        write_ui_workflow(API_DIR / f"{name}.json", target, comfy.node_classes, nodes.NODE_DISPLAY_NAME_MAPPINGS, note)
        print(target)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pixart_delta", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a bundled API workflow in-process in a ComfyUI checkout")
    run.add_argument("workflow", help=f"bundled name ({', '.join(bundled_workflows()) or 'none yet'}) or a path")
    run.add_argument("--comfyui", help="ComfyUI checkout (default: $COMFYUI_PATH, else ~/ComfyUI)")
    run.add_argument("--tiny", action="store_true",
                     help=f"write small random-weight models in the real layouts first (no downloads) and cap "
                          f"image sizes at {TINY_MAX_SIZE} px: a smoke test of the whole chain")
    run.add_argument("--out", default="out", help="output folder (default ./out)")
    run.add_argument("--set", action="append", metavar="NODE.INPUT=VALUE", help="override an input (JSON value)")
    run.set_defaults(func=cmd_run)
    ui = sub.add_parser("ui", help="(maintainers) regenerate the UI-format example_workflows/ from workflows/api/")
    ui.add_argument("workflows", nargs="*", help="names (default: all bundled)")
    ui.add_argument("--comfyui", help="ComfyUI checkout (default: $COMFYUI_PATH, else ~/ComfyUI)")
    ui.set_defaults(func=cmd_ui)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
