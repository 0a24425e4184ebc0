"""The model manifest (workflows/manifest/models.json): which weight files each bundled workflow needs, where they go in
a ComfyUI models tree, and fetching the missing ones from Hugging Face (`python -m pixart_delta models`).

Downloads are resumable (an interrupted file stays as `<target>.part` and continues from there), checked for
size and sha256 (the manifest's, else the LFS sha256 the hub announces), and shown with a progress bar.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from . import PACK_ROOT

MANIFEST = PACK_ROOT / "workflows" / "manifest" / "models.json"  # not workflows/*.json: ComfyUI lists those as templates
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".sft", ".gguf")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class DownloadError(RuntimeError):
    pass


@dataclass
class ModelFile:
    target: str          # "<ComfyUI models folder>/<file name>"
    repo: str
    path: str
    size: int | None = None
    sha256: str | None = None
    revision: str | None = None
    with_: tuple[str, ...] = ()

    @property
    def folder(self) -> str:
        return self.target.split("/", 1)[0]

    @property
    def name(self) -> str:
        """The name as a loader widget shows it (path inside the ComfyUI folder)."""
        return self.target.split("/", 1)[1]


def load_manifest(path: Path = MANIFEST) -> dict:
    data = json.loads(Path(path).read_text())
    files = {}
    for e in data["files"]:
        f = ModelFile(e["target"], e["repo"], e["path"], e.get("size"), e.get("sha256"), e.get("revision"),
                      tuple(e.get("with", ())))
        files[f.target] = f
    return {"files": files, "workflows": data.get("workflows", {}), "raw": data}


def weight_names(graph: dict) -> set[str]:
    """String inputs of an API graph that name a weight file (the loaders' widget values)."""
    return {v.replace("\\", "/") for node in graph.values() for v in node.get("inputs", {}).values()
            if isinstance(v, str) and v.lower().endswith(WEIGHT_SUFFIXES)}


def files_for_graph(graph: dict, manifest: dict) -> tuple[list[ModelFile], set[str]]:
    """(manifest files the graph needs, companions included; weight names the manifest does not know)."""
    files = manifest["files"]
    wanted = weight_names(graph)
    found, unknown = [], set()
    for name in sorted(wanted):
        hits = [f for f in files.values() if f.name == name]
        if not hits:
            unknown.add(name)
        found.extend(hits)
    out, seen = [], set()
    stack = list(found)
    while stack:
        f = stack.pop(0)
        if f.target in seen:
            continue
        seen.add(f.target)
        out.append(f)
        stack.extend(files[t] for t in f.with_ if t in files)
    return out, unknown


def workflow_section(manifest: dict, workflows: dict[str, dict]) -> dict[str, list[str]]:
    return {name: [f.target for f in files_for_graph(graph, manifest)[0]] for name, graph in sorted(workflows.items())}


def write_workflow_section(workflows: dict[str, dict], path: Path = MANIFEST) -> dict:
    """Regenerates the manifest's "workflows" section from the bundled API graphs (keeps everything else)."""
    manifest = load_manifest(path)
    raw = manifest["raw"]
    raw["workflows"] = workflow_section(manifest, workflows)
    lines = ["{", f'  "about": {json.dumps(raw["about"], ensure_ascii=False)},', '  "files": [']
    lines.append(",\n".join("    " + json.dumps(e, ensure_ascii=False) for e in raw["files"]))
    lines.append("  ],")
    lines.append('  "workflows": {')
    lines.append(",\n".join(f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in raw["workflows"].items()))
    lines.append("  }")
    lines.append("}")
    Path(path).write_text("\n".join(lines) + "\n")
    return raw["workflows"]


def file_status(f: ModelFile, models_dir: Path, verify: bool = False) -> str:
    """"present", "missing", "partial" (an interrupted download), "wrong size" or "sha256 mismatch"."""
    target = Path(models_dir) / f.target
    if not target.is_file():
        return "partial" if part_path(target).is_file() else "missing"
    if f.size is not None and target.stat().st_size != f.size:
        return "wrong size"
    if verify and f.sha256 and sha256_of(target) != f.sha256:
        return "sha256 mismatch"
    return "present"


def part_path(target: Path) -> Path:
    return target.with_name(target.name + ".part")


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _endpoint(endpoint: str | None) -> str | None:
    # huggingface_hub reads HF_ENDPOINT once at import: read it at call time so a later setting counts too
    return endpoint or os.environ.get("HF_ENDPOINT") or None


def download(f: ModelFile, models_dir: Path, endpoint: str | None = None, token=None, progress: bool = True) -> Path:
    """Fetches one file into models_dir/<target>, resuming `<target>.part`; checks size and sha256, and removes
    a file that fails the check (raising DownloadError) so a bad copy never lands in the models tree."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    endpoint = _endpoint(endpoint)
    target = Path(models_dir) / f.target
    url = hf_hub_url(f.repo, f.path, revision=f.revision, endpoint=endpoint)
    meta = get_hf_file_metadata(url, token=token, endpoint=endpoint)
    if f.size is not None and meta.size is not None and meta.size != f.size:
        raise DownloadError(f"{f.repo}/{f.path}: the hub announces {meta.size} bytes, the manifest expects "
                            f"{f.size}; not downloading (the file changed upstream or the manifest is wrong)")
    size = f.size if f.size is not None else meta.size
    etag = (meta.etag or "").strip('"').lower()
    sha = f.sha256 or (etag if SHA256_RE.match(etag) else None)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(target)
    have = part.stat().st_size if part.is_file() else 0
    if size is not None and have > size:
        part.unlink()
        have = 0
    # huggingface_hub's own hf_hub_download deletes an interrupted file, so the resumable .part is kept here
    headers = build_hf_headers(token=token)
    extra = {}
    if not progress and "tqdm_class" in inspect.signature(http_get).parameters:  # (older hub versions lack it)
        extra["tqdm_class"] = _NoBar
    with open(part, "ab") as fh:
        if size is None or have < size:
            http_get(meta.location or url, fh, resume_size=have, headers=headers, expected_size=size,
                     displayed_filename=Path(f.target).name, **extra)
    got = part.stat().st_size
    if size is not None and got != size:
        part.unlink()
        raise DownloadError(f"{f.target}: got {got} bytes, expected {size}; removed the file")
    if sha is not None:
        digest = sha256_of(part)
        if digest != sha:
            part.unlink()
            raise DownloadError(f"{f.target}: sha256 {digest} does not match the expected {sha} "
                                f"({f.repo}/{f.path}); removed the downloaded file")
    os.replace(part, target)
    return target


class _NoBar:
    """A tqdm stand-in that shows nothing (--quiet)."""

    def __init__(self, *a, **k):
        self.n = k.get("initial", 0)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False

    def update(self, n=1):
        self.n += n

    def close(self):
        pass
