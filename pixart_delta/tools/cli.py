"""Command line: `python -m pixart_delta run WORKFLOW [--tiny]` runs a bundled API workflow in-process in a
ComfyUI checkout and prints where the images went; `queue WORKFLOW` sends it to a running ComfyUI server and
downloads the images; `models [--workflow NAME] [--download]` lists and fetches the weight files."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from . import API_DIR, PACK_ROOT
from .comfy_runtime import ExecutionFailed, InProcessComfy, find_comfyui, require_comfyui


DEFAULT_SERVER = "http://127.0.0.1:8188"
TINY_MAX_SIZE = 256
# PixArt Resolution picks its bucket from the MODEL's native size (a 2K model samples about 2048 px even when asked
# for 256): under --tiny it uses the 256 table, whose square bucket is 256 x 256.
TINY_NATIVE_SIZE = "256"


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
    """--tiny: every width/height input capped at TINY_MAX_SIZE, and PixArt Resolution's native_size set to
    TINY_NATIVE_SIZE (with its asked size capped, a square asked size gives the 256 x 256 bucket)."""
    for node in graph.values():
        for key in ("width", "height"):
            v = node["inputs"].get(key)
            if isinstance(v, int) and v > TINY_MAX_SIZE:
                node["inputs"][key] = TINY_MAX_SIZE
        if node.get("class_type") == "PixArtResolution":
            node["inputs"]["native_size"] = TINY_NATIVE_SIZE


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
    comfy_path = require_comfyui(args.comfyui)
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
        from ..tiny import write_for_workflow  # some writers build ComfyUI modules: after boot
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
    comfy_path = require_comfyui(args.comfyui, "the node definitions come from it")
    comfy = InProcessComfy.get(comfy_path)
    import nodes
    for name in args.workflows or bundled_workflows():
        note_path = PACK_ROOT / "workflows" / "notes" / f"{name}.md"
        note = note_path.read_text() if note_path.is_file() else None
        target = PACK_ROOT / "example_workflows" / f"{name}.json"
        write_ui_workflow(API_DIR / f"{name}.json", target, comfy.node_classes, nodes.NODE_DISPLAY_NAME_MAPPINGS, note)
        print(target)
    return 0


def cmd_queue(args) -> int:
    """Posts a workflow to a running ComfyUI server (or spreads it over several), follows it and downloads the
    images."""
    from .client import PromptError, queue_on_servers, queue_workflow
    graph = load_workflow(args.workflow)
    apply_sets(graph, args.set or [])
    out_dir = Path(args.out).resolve()
    servers = args.server or [DEFAULT_SERVER]
    reports = []
    try:
        if len(servers) == 1:
            results = queue_workflow(servers[0], graph, out_dir, count=args.count, images=args.image or [],
                                     progress=not args.quiet, timeout=args.timeout)
        else:
            run = queue_on_servers(servers, graph, out_dir, Path(args.workflow).stem, count=args.count,
                                   images=args.image or [], progress=not args.quiet, timeout=args.timeout,
                                   answer_timeout=args.server_timeout)
            results, reports = run.jobs, run.servers
    except (ValueError, ConnectionError, PromptError, TimeoutError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    failed = 0
    for job in results:
        if job.error is not None:
            failed += 1
            print(f"error: job {job.index} (prompt {job.prompt_id or 'not queued'}): {job.error.describe()}",
                  file=sys.stderr)
        for p in job.images:
            print(p)
    for r in reports:
        if r.lost is not None:
            print(f"lost server {r.url}: {r.lost}; {r.requeued} of its job(s) queued again on the others",
                  file=sys.stderr)
    n_images = sum(len(j.images) for j in results)
    print(f"{len(results) - failed}/{len(results)} prompt(s) done, {n_images} image(s) saved in {out_dir}")
    if reports:
        print("per server: " + ", ".join(f"{r.url} {r.done} done" + (" (lost)" if r.lost else "") for r in reports))
    return 1 if failed else 0


def cmd_models(args) -> int:
    """Lists the weight files of the bundled workflows, present or missing, and downloads the missing ones."""
    from .downloads import DownloadError, download, file_status, files_for_graph, load_manifest, write_workflow_section
    if args.write_manifest:
        section = write_workflow_section({n: load_workflow(n) for n in bundled_workflows()})
        print(f"updated the workflows section of the manifest ({len(section)} workflows)")
        return 0
    manifest = load_manifest()
    if args.models:
        models_dir = Path(args.models)
    else:
        comfy_path = find_comfyui(args.comfyui)
        if comfy_path is None:
            raise SystemExit("no models tree: pass --models DIR (ComfyUI's models folder) or --comfyui PATH")
        models_dir = comfy_path / "models"
    names = [args.workflow] if args.workflow else bundled_workflows()
    todo, problems = {}, 0
    for name in names:
        files, unknown = files_for_graph(load_workflow(name), manifest)
        print(f"{name}:")
        for f in files:
            status = file_status(f, models_dir, verify=args.verify)
            size = f"{f.size / 1e6:,.1f} MB" if f.size else "size unknown"
            print(f"  [{status}] {f.target}  <- {f.repo}/{f.path} ({size})")
            if status != "present":
                todo[f.target] = f
        for name_ in sorted(unknown):
            problems += 1
            print(f"  [not in manifest] {name_}: place it in the right ComfyUI folder by hand")
    if not args.download:
        if todo:
            print(f"{len(todo)} file(s) to fetch: add --download (to {models_dir})")
        return 0
    for f in todo.values():
        if file_status(f, models_dir) in ("wrong size", "sha256 mismatch"):
            print(f"  {f.target}: existing file fails the check; moving it aside to {f.target}.bad")
            bad = models_dir / f.target
            bad.replace(bad.with_name(bad.name + ".bad"))
        try:
            print(f"  {download(f, models_dir, progress=not args.quiet)}")
        except (DownloadError, OSError) as e:
            problems += 1
            print(f"error: {f.target}: {e}", file=sys.stderr)
        except Exception as e:  # hub errors (not found, gated, offline) come in many classes
            problems += 1
            print(f"error: {f.target}: {type(e).__name__}: {e}", file=sys.stderr)
    return 1 if problems else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pixart_delta", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a bundled API workflow in-process in a ComfyUI checkout")
    run.add_argument("workflow", help=f"bundled name ({', '.join(bundled_workflows()) or 'none yet'}) or a path")
    run.add_argument("--comfyui", help="ComfyUI checkout (default: $COMFYUI_PATH, else the ComfyUI this pack is installed in, else ~/ComfyUI)")
    run.add_argument("--tiny", action="store_true",
                     help=f"write small random-weight models in the real layouts first (no downloads) and cap "
                          f"image sizes at {TINY_MAX_SIZE} px (width/height inputs capped; PixArt Resolution set to "
                          f"native_size {TINY_NATIVE_SIZE}, so a 1024 or 2K model samples the 256 buckets): a smoke "
                          f"test of the whole chain")
    run.add_argument("--out", default="out", help="output folder (default ./out)")
    run.add_argument("--set", action="append", metavar="NODE.INPUT=VALUE", help="override an input (JSON value)")
    run.set_defaults(func=cmd_run)
    ui = sub.add_parser("ui", help="(maintainers) regenerate the UI-format example_workflows/ from workflows/api/")
    ui.add_argument("workflows", nargs="*", help="names (default: all bundled)")
    ui.add_argument("--comfyui", help="ComfyUI checkout (default: $COMFYUI_PATH, else the ComfyUI this pack is installed in, else ~/ComfyUI)")
    ui.set_defaults(func=cmd_ui)
    queue = sub.add_parser("queue", help="queue a workflow on a running ComfyUI server and download the images")
    queue.add_argument("workflow", help="bundled name or a path to an API-format JSON")
    queue.add_argument("--server", action="append", metavar="URL",
                       help=f"ComfyUI URL (default {DEFAULT_SERVER}); repeat it to spread the jobs over several "
                            f"servers: each job goes to the server with the shortest queue, the jobs of a server "
                            f"that stops answering run on the others, and the images are saved once each as "
                            f"<workflow>_<job>_<n>.png")
    queue.add_argument("--set", action="append", metavar="NODE.INPUT=VALUE", help="override an input (JSON value)")
    queue.add_argument("--image", action="append", metavar="[NODE=]PATH",
                       help="upload a picture for the LoadImage node(s): one PATH feeds every LoadImage node, "
                            "several go to them in id order, NODE=PATH to a given node")
    queue.add_argument("--out", default="out", help="where the images are downloaded (default ./out)")
    queue.add_argument("--count", type=int, default=1, help="queue N variations (every seed input + i)")
    queue.add_argument("--timeout", type=float, default=3600.0, help="give up after this many seconds")
    queue.add_argument("--server-timeout", type=float, default=60.0,
                       help="(several servers) drop a server that does not answer for this many seconds and run "
                            "its jobs on the others (default 60)")
    queue.add_argument("--quiet", action="store_true", help="no progress bar")
    queue.set_defaults(func=cmd_queue)
    models = sub.add_parser("models", help="which weight files the workflows need, present or missing; --download "
                                           "fetches the missing ones from Hugging Face")
    models.add_argument("--workflow", help="only this bundled workflow")
    models.add_argument("--models", help="ComfyUI models folder (default: <ComfyUI checkout>/models)")
    models.add_argument("--comfyui", help="ComfyUI checkout (default: $COMFYUI_PATH, else the ComfyUI this pack is installed in, else ~/ComfyUI)")
    models.add_argument("--download", action="store_true", help="fetch missing files (resumable, size/sha256 checked)")
    models.add_argument("--verify", action="store_true", help="also hash present files with a known sha256")
    models.add_argument("--quiet", action="store_true", help="no progress bar")
    models.add_argument("--write-manifest", action="store_true",
                        help="(maintainers) regenerate the workflows section of workflows/manifest/models.json")
    models.set_defaults(func=cmd_models)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
