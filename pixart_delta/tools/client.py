"""Queue API-format workflows on a running ComfyUI server and collect the images (`python -m pixart_delta queue`).

Uses only aiohttp (a ComfyUI requirement): POST /upload/image for input pictures, POST /prompt, the /ws
websocket for progress, GET /history/{id} for the outcome and GET /view to download every output image.
"""
from __future__ import annotations

import asyncio
import copy
import json
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

SEED_INPUTS = ("seed", "noise_seed")


class PromptError(RuntimeError):
    """A prompt the server refused (validation) or that failed while running: which node, and why."""

    def __init__(self, message: str, node_id=None, node_type=None, node_errors: list | None = None, raw=None):
        self.message, self.node_id, self.node_type, self.raw = message, node_id, node_type, raw
        self.node_errors = node_errors or []  # [(node_id, class_type, message), ...] for refused prompts
        super().__init__(self.describe())

    def describe(self) -> str:
        if self.node_errors:
            return "; ".join(f"node {nid} ({ct}): {msg}" for nid, ct, msg in self.node_errors)
        if self.node_id is not None:
            return f"node {self.node_id} ({self.node_type}): {self.message}"
        return self.message


@dataclass
class JobResult:
    index: int
    prompt_id: str | None = None
    images: list[Path] = field(default_factory=list)
    error: PromptError | None = None


def _short(text, limit=400) -> str:
    text = str(text)
    return text if len(text) <= limit else text[:limit] + " ..."


def refused_error(body: dict) -> PromptError:
    """The body of a 400 answer to POST /prompt -> PromptError naming each failing node."""
    err = body.get("error") or {}
    if isinstance(err, str):
        err = {"message": err}
    node_errors = []
    for nid, ne in (body.get("node_errors") or {}).items():
        for e in ne.get("errors", []):
            msg = e.get("message", "")
            if e.get("details"):
                msg += f": {_short(e['details'])}"
            node_errors.append((nid, ne.get("class_type"), msg))
    message = err.get("message", "prompt refused") + (f": {_short(err['details'])}" if err.get("details") else "")
    return PromptError(message, node_errors=node_errors, raw=body)


def execution_error(data: dict) -> PromptError:
    return PromptError(data.get("exception_message", "execution failed").strip(), data.get("node_id"),
                       data.get("node_type"), raw=data)


def set_seed_offset(graph: dict, offset: int) -> dict:
    """A copy of `graph` with every integer seed input increased by `offset` (for --count variations)."""
    graph = copy.deepcopy(graph)
    if offset:
        for node in graph.values():
            for name in SEED_INPUTS:
                if isinstance(node["inputs"].get(name), int):
                    node["inputs"][name] += offset
    return graph


def image_nodes(graph: dict) -> list[str]:
    return sorted((nid for nid, n in graph.items() if n.get("class_type") == "LoadImage"),
                  key=lambda n: (len(n), n))


def assign_images(graph: dict, images: list[str]) -> dict[str, list[Path]]:
    """--image PATH / --image NODE=PATH -> {path: [node ids]}. A lone PATH goes to every LoadImage node,
    several PATHs to the LoadImage nodes in id order."""
    targets = image_nodes(graph)
    plan: dict[Path, list[str]] = {}
    plain = []
    for item in images:
        node, sep, path = item.partition("=")
        if sep and node in graph:
            if graph[node].get("class_type") != "LoadImage":
                raise ValueError(f"--image {item}: node {node} is a {graph[node]['class_type']}, not a LoadImage")
            plan.setdefault(Path(path), []).append(node)
        else:
            plain.append(Path(item))
    if plain:
        if not targets:
            raise ValueError("--image given but the workflow has no LoadImage node")
        if len(plain) == 1:
            plan.setdefault(plain[0], []).extend(targets)
        elif len(plain) > len(targets):
            raise ValueError(f"{len(plain)} images for {len(targets)} LoadImage nodes ({', '.join(targets)})")
        else:
            for p, nid in zip(plain, targets):
                plan.setdefault(p, []).append(nid)
    for p in plan:
        if not p.is_file():
            raise ValueError(f"--image {p}: no such file")
    return plan


class ComfyClient:
    """One websocket session with a ComfyUI server. Use as `async with ComfyClient(url) as c:`."""

    def __init__(self, server: str = "http://127.0.0.1:8188", client_id: str | None = None,
                 timeout: float = 3600.0, progress: bool = True):
        self.server = server.rstrip("/")
        if "://" not in self.server:
            self.server = "http://" + self.server
        self.client_id = client_id or uuid.uuid4().hex
        self.timeout = timeout
        self.progress = progress
        self.session: aiohttp.ClientSession | None = None
        self.ws = None

    async def __aenter__(self):
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=30))
        try:
            self.ws = await self.session.ws_connect(f"{self.server}/ws?clientId={self.client_id}", heartbeat=30)
        except aiohttp.ClientError as e:
            await self.session.close()
            raise ConnectionError(f"cannot reach a ComfyUI server at {self.server}: {e}") from e
        return self

    async def __aexit__(self, *exc):
        if self.ws is not None:
            await self.ws.close()
        await self.session.close()

    async def _json(self, method: str, path: str, **kw):
        async with self.session.request(method, self.server + path, **kw) as r:
            text = await r.text()
            try:
                body = json.loads(text) if text else None
            except json.JSONDecodeError:
                body = None
            return r.status, body, text

    async def upload_image(self, path: Path) -> str:
        """Uploads to the server's input folder; returns the name a LoadImage node takes."""
        form = aiohttp.FormData()
        form.add_field("image", Path(path).read_bytes(), filename=Path(path).name)
        status, body, text = await self._json("POST", "/upload/image", data=form)
        if status != 200 or not body:
            raise PromptError(f"uploading {path} failed: HTTP {status} {_short(text)}")
        return f"{body['subfolder']}/{body['name']}" if body.get("subfolder") else body["name"]

    async def queue(self, graph: dict) -> str:
        status, body, text = await self._json("POST", "/prompt", json={"prompt": graph, "client_id": self.client_id})
        if status != 200:
            if body:
                raise refused_error(body)
            raise PromptError(f"POST /prompt: HTTP {status} {_short(text)}")
        return body["prompt_id"]

    async def history(self, prompt_id: str) -> dict | None:
        status, body, _ = await self._json("GET", f"/history/{prompt_id}")
        return (body or {}).get(prompt_id) if status == 200 else None

    async def download(self, image: dict, out_dir: Path) -> Path:
        params = {"filename": image["filename"], "subfolder": image.get("subfolder", ""),
                  "type": image.get("type", "output")}
        async with self.session.get(f"{self.server}/view", params=params) as r:
            if r.status != 200:
                raise PromptError(f"GET /view {params}: HTTP {r.status}")
            data = await r.read()
        target = Path(out_dir) / params["subfolder"] / params["filename"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return target

    async def wait(self, prompt_ids: list[str], poll: float = 2.0) -> dict[str, dict]:
        """Follows the websocket until every prompt has ended; returns {prompt_id: history entry}.
        The websocket drives the progress bar and wakes us up; the outcome is read from /history (also polled
        when the socket is quiet, so a missed message cannot hang the wait)."""
        pending = set(prompt_ids)
        done: dict[str, dict] = {}
        bar = _Bar(len(prompt_ids), self.progress)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        try:
            while pending:
                if loop.time() > deadline:
                    raise TimeoutError(f"{len(pending)} prompt(s) still unfinished after {self.timeout:.0f} s")
                ended = set()
                try:
                    msg = await self.ws.receive(timeout=poll)
                except asyncio.TimeoutError:
                    msg = None
                if msg is not None and msg.type == aiohttp.WSMsgType.TEXT:
                    event = json.loads(msg.data)
                    kind, data = event.get("type"), event.get("data") or {}
                    pid = data.get("prompt_id")
                    if kind == "progress" and pid in pending:
                        bar.status(f"node {data.get('node')}: step {data.get('value')}/{data.get('max')}")
                    elif kind == "executing" and pid in pending:
                        if data.get("node") is None:
                            ended.add(pid)
                        else:
                            bar.status(f"node {data['node']}")
                    elif kind in ("execution_error", "execution_success", "execution_interrupted") and pid in pending:
                        ended.add(pid)
                elif msg is not None and msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR,
                                                      aiohttp.WSMsgType.CLOSE):
                    self.ws = await self.session.ws_connect(f"{self.server}/ws?clientId={self.client_id}")
                if msg is None or ended:
                    for pid in sorted(pending):
                        entry = await self.history(pid)
                        if entry is not None and (entry.get("status") or {}).get("completed") is not None:
                            done[pid] = entry
                            pending.discard(pid)
                            bar.advance()
        finally:
            bar.close()
        return done


class _Bar:
    def __init__(self, total: int, enabled: bool):
        self.tqdm = None
        if enabled:
            try:
                from tqdm import tqdm
                self.tqdm = tqdm(total=total, unit="prompt", file=sys.stderr, dynamic_ncols=True)
            except ImportError:
                pass

    def status(self, text):
        if self.tqdm is not None:
            self.tqdm.set_postfix_str(text, refresh=True)

    def advance(self):
        if self.tqdm is not None:
            self.tqdm.update(1)

    def close(self):
        if self.tqdm is not None:
            self.tqdm.close()


def outcome_error(entry: dict) -> PromptError | None:
    status = entry.get("status") or {}
    if status.get("status_str") == "success":
        return None
    for kind, data in status.get("messages", []):
        if kind == "execution_error":
            return execution_error(data)
        if kind == "execution_interrupted":
            return PromptError("interrupted", data.get("node_id"), data.get("node_type"), raw=data)
    return PromptError(f"prompt ended with status {status.get('status_str')!r}", raw=entry)


async def run_jobs(server: str, graph: dict, out_dir: Path, count: int = 1, images: list[str] = (),
                   progress: bool = True, timeout: float = 3600.0) -> list[JobResult]:
    """Uploads the images, queues `count` variations of `graph` (seed + i), waits for all of them and
    downloads every image they produced into `out_dir`. Failures are reported per job, not raised."""
    plan = assign_images(graph, list(images))
    out_dir = Path(out_dir)
    results = [JobResult(i) for i in range(count)]
    async with ComfyClient(server, progress=progress, timeout=timeout) as client:
        graph = copy.deepcopy(graph)
        for path, nodes in plan.items():
            name = await client.upload_image(path)
            for nid in nodes:
                graph[nid]["inputs"]["image"] = name
        for job in results:
            try:
                job.prompt_id = await client.queue(set_seed_offset(graph, job.index))
            except PromptError as e:
                job.error = e
        queued = [j.prompt_id for j in results if j.prompt_id]
        entries = await client.wait(queued) if queued else {}
        for job in results:
            if job.prompt_id is None:
                continue
            entry = entries[job.prompt_id]
            job.error = outcome_error(entry)
            for ui in (entry.get("outputs") or {}).values():
                for image in ui.get("images", []) or []:
                    job.images.append(await client.download(image, out_dir))
    return results


def queue_workflow(server: str, graph: dict, out_dir: Path, count: int = 1, images: list[str] = (),
                   progress: bool = True, timeout: float = 3600.0) -> list[JobResult]:
    """Synchronous run_jobs."""
    return asyncio.run(run_jobs(server, graph, out_dir, count, images, progress, timeout))
