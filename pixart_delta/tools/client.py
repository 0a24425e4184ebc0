"""Queue API-format workflows on running ComfyUI servers and collect the images (`python -m pixart_delta queue`).

Uses only aiohttp (a ComfyUI requirement): POST /upload/image for input pictures, POST /prompt, the /ws
websocket for progress, GET /history/{id} for the outcome and GET /view to download every output image.
With several servers (`queue_on_servers`), each job goes to the server with the shortest queue, and the jobs of
a server that stops answering are queued again on the others.
"""
from __future__ import annotations

import asyncio
import copy
import json
import os
import sys
import uuid
from collections import deque
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
    server: str | None = None  # (several servers) where it ran
    requeued: int = 0  # (several servers) how often it was queued again after its server was lost


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
                 timeout: float = 3600.0, progress: bool = True, answer_timeout: float | None = None):
        """answer_timeout: seconds a server may stay silent on a request (and on websocket pings) before the
        call fails; None waits as long as the connection stays open."""
        self.server = normalize_url(server)
        self.client_id = client_id or uuid.uuid4().hex
        self.timeout = timeout
        self.progress = progress
        self.answer_timeout = answer_timeout
        self.session: aiohttp.ClientSession | None = None
        self.ws = None

    async def __aenter__(self):
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=self.answer_timeout or 30, sock_read=self.answer_timeout))
        try:
            await self.connect_ws()
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            await self.session.close()
            raise ConnectionError(f"cannot reach a ComfyUI server at {self.server}: {e}") from e
        return self

    async def connect_ws(self):
        self.ws = await self.session.ws_connect(f"{self.server}/ws?clientId={self.client_id}",
                                                heartbeat=self.answer_timeout or 30)

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

    async def queue_state(self) -> tuple[int, set[str]]:
        """GET /queue: (running + pending prompts of every client, the ids among them)."""
        status, body, text = await self._json("GET", "/queue")
        if status != 200 or not isinstance(body, dict):
            raise PromptError(f"GET /queue: HTTP {status} {_short(text)}")
        items = list(body.get("queue_running", [])) + list(body.get("queue_pending", []))
        return len(items), {item[1] for item in items}

    async def fetch(self, image: dict) -> bytes:
        params = {"filename": image["filename"], "subfolder": image.get("subfolder", ""),
                  "type": image.get("type", "output")}
        async with self.session.get(f"{self.server}/view", params=params) as r:
            if r.status != 200:
                raise PromptError(f"GET /view {params}: HTTP {r.status}")
            return await r.read()

    async def download(self, image: dict, out_dir: Path) -> Path:
        data = await self.fetch(image)
        target = Path(out_dir) / image.get("subfolder", "") / image["filename"]
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


def normalize_url(server: str) -> str:
    server = server.rstrip("/")
    return server if "://" in server else "http://" + server


def output_images(entry: dict) -> list[dict]:
    """The images of a /history entry, in output node id order (numeric ids first), each node's in its order."""
    outputs = entry.get("outputs") or {}
    ordered = sorted(outputs, key=lambda n: (len(n), n))
    return [image for nid in ordered for image in (outputs[nid].get("images") or [])]


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


# ---- several servers ------------------------------------------------------------------------------------------

# What a server that stopped answering raises: refused or reset connections, a closed websocket that cannot be
# opened again, silence longer than answer_timeout.
SERVER_GONE = (aiohttp.ClientError, ConnectionError, OSError, asyncio.TimeoutError)


def job_image_name(workflow: str, index: int, n: int, suffix: str = ".png") -> str:
    """Where image `n` (0-based, output node id order) of job `index` (the --count index, also the seed offset)
    lands in --out when several servers share the work: <workflow>_<job index, 4 digits>_<n, 2 digits><ext>."""
    return f"{workflow}_{index:04d}_{n:02d}{suffix}"


def write_atomically(target: Path, data: bytes) -> None:
    """A reader (or a second attempt at the same job) never sees half a file: write a temporary file beside the
    target and rename it over."""
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


@dataclass
class ServerReport:
    url: str
    done: int = 0  # jobs finished (successfully or not) on it
    requeued: int = 0  # its unfinished jobs that went to the others when it was lost
    lost: str | None = None  # why it was dropped; None while it answered to the end


@dataclass
class MultiRun:
    jobs: list[JobResult]
    servers: list[ServerReport]


class _Server:
    def __init__(self, url: str, answer_timeout: float):
        self.client = ComfyClient(url, progress=False, answer_timeout=answer_timeout)
        self.report = ServerReport(self.client.server)
        self.in_flight: dict[str, JobResult] = {}
        self.queue_remaining = 0  # every client's prompts, as the server last said
        self.assigned = 0
        self.graph: dict | None = None  # the workflow with this server's names for the uploaded pictures
        self.status = ""
        self.task: asyncio.Task | None = None
        self.open = False

    @property
    def url(self) -> str:
        return self.report.url

    @property
    def live(self) -> bool:
        return self.report.lost is None

    @property
    def load(self) -> int:
        """Prompts ahead of a new one: the server's count (other clients' prompts too) or ours in flight there,
        whichever is larger (the server's count lags behind our own POSTs)."""
        return max(self.queue_remaining, len(self.in_flight))


class _MultiProgress:
    """One display for several servers on stderr. On a terminal: a bar for all jobs and a line per server (jobs
    done, in flight, the node and step running); otherwise plain lines, one per finished job and per event."""

    def __init__(self, servers: list[_Server], total: int, enabled: bool, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.total, self.done = total, 0
        self.servers = servers
        self.bars = None
        if enabled and getattr(self.stream, "isatty", lambda: False)():
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bars = [tqdm(total=total, unit="prompt", file=self.stream, dynamic_ncols=True, position=0,
                                  desc="all servers")]
                self.bars += [tqdm(total=None, file=self.stream, position=i + 1, desc=s.url,
                                   bar_format="{desc}: {n_fmt} done {postfix}") for i, s in enumerate(servers)]

    def server_status(self, server: _Server):
        if self.bars is not None:
            bar = self.bars[1 + self.servers.index(server)]
            state = f"{len(server.in_flight)} in flight" if server.live else "LOST"
            bar.set_postfix_str(f"{state} {server.status}".rstrip(), refresh=True)

    def job_done(self, server: _Server, job: JobResult):
        self.done += 1
        if self.bars is not None:
            self.bars[0].update(1)
            self.bars[1 + self.servers.index(server)].update(1)
            self.server_status(server)
        elif self.enabled:
            state = "failed" if job.error is not None else f"{len(job.images)} image(s)"
            self._line(f"[{self.done}/{self.total}] job {job.index} done on {server.url}: {state}")

    def event(self, text: str):
        if self.bars is not None:
            self.bars[0].write(text, file=self.stream)
        elif self.enabled:
            self._line(text)

    def _line(self, text: str):
        print(text, file=self.stream, flush=True)

    def close(self):
        for bar in self.bars or []:
            bar.close()


class _Scheduler:
    def __init__(self, servers: list[str], graph: dict, out_dir: Path, workflow: str, count: int, images: list[str],
                 progress: bool, timeout: float, window: int, poll: float, answer_timeout: float):
        self.plan = assign_images(graph, list(images))
        self.graph = graph
        self.out_dir = Path(out_dir)
        self.workflow = workflow
        self.jobs = [JobResult(i) for i in range(count)]
        self.pending = deque(self.jobs)
        self.finished = 0
        unique = list(dict.fromkeys(normalize_url(u) for u in servers))
        self.servers = [_Server(u, answer_timeout) for u in unique]
        self.timeout, self.window, self.poll = timeout, max(1, window), poll
        self.wake = asyncio.Event()
        self.display = _MultiProgress(self.servers, count, progress)

    # -- server life --

    async def open(self, srv: _Server):
        """Connects, learns the server's queue and uploads the pictures; a server that fails here is lost."""
        try:
            await srv.client.__aenter__()
            srv.open = True
            srv.queue_remaining, _ = await srv.client.queue_state()
            graph = copy.deepcopy(self.graph)
            for path, nodes in self.plan.items():
                name = await srv.client.upload_image(path)
                for nid in nodes:
                    graph[nid]["inputs"]["image"] = name
            srv.graph = graph
        except (*SERVER_GONE, PromptError) as e:
            self.lose(srv, e)

    def lose(self, srv: _Server, reason) -> None:
        """Drops the server; its unfinished jobs (queued, running, or done but not yet downloaded) go first in
        line for the others."""
        if not srv.live:
            return
        if isinstance(reason, BaseException):
            reason = f"{type(reason).__name__}: {reason}".rstrip(": ") if str(reason) else type(reason).__name__
        srv.report.lost = reason
        orphans = sorted(srv.in_flight.values(), key=lambda j: j.index)
        srv.in_flight.clear()
        for job in reversed(orphans):
            job.requeued += 1
            job.prompt_id = job.server = None
            self.pending.appendleft(job)
        srv.report.requeued += len(orphans)
        if srv.task is not None and srv.task is not asyncio.current_task():
            srv.task.cancel()
        self.display.server_status(srv)
        if srv.graph is None:
            self.display.event(f"cannot use server {srv.url} ({reason}): going on without it")
        else:
            others = "the other servers" if any(s.live for s in self.servers) else "no server (none left)"
            self.display.event(f"lost server {srv.url} ({reason}): {len(orphans)} unfinished job(s) queued again "
                               f"on {others}")
        self.wake.set()

    async def follow(self, srv: _Server):
        """Reads the server's websocket (progress, queue size, prompts ending) and collects every finished job;
        with a quiet socket it polls /history every `poll` s, which also notices a server that stopped answering."""
        client = srv.client
        loop = asyncio.get_running_loop()
        last_check = loop.time()
        try:
            while srv.live:
                try:
                    msg = await client.ws.receive(timeout=self.poll)
                except asyncio.TimeoutError:
                    msg = None
                check = msg is None or loop.time() - last_check > self.poll  # a missed message cannot hang a job
                if msg is not None and msg.type == aiohttp.WSMsgType.TEXT:
                    event = json.loads(msg.data)
                    kind, data = event.get("type"), event.get("data") or {}
                    pid = data.get("prompt_id")
                    if kind == "status":
                        info = ((data.get("status") or {}).get("exec_info") or {})
                        if isinstance(info.get("queue_remaining"), int):
                            srv.queue_remaining = info["queue_remaining"]
                            self.wake.set()
                    elif pid in srv.in_flight:
                        job = srv.in_flight[pid]
                        if kind == "progress":
                            srv.status = f"job {job.index} node {data.get('node')}: step {data.get('value')}/{data.get('max')}"
                        elif kind == "executing" and data.get("node") is not None:
                            srv.status = f"job {job.index} node {data['node']}"
                        elif kind in ("executing", "execution_error", "execution_success", "execution_interrupted"):
                            srv.status, check = "", True
                        self.display.server_status(srv)
                elif msg is not None and msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR,
                                                      aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING):
                    await client.connect_ws()  # fails when the server is gone
                    await self.forget_unknown(srv)
                    check = True
                if check and srv.in_flight:
                    last_check = loop.time()
                    await self.collect(srv)
        except asyncio.CancelledError:
            raise
        except (*SERVER_GONE, PromptError) as e:
            self.lose(srv, e)

    async def forget_unknown(self, srv: _Server):
        """After the websocket dropped: prompts the server knows neither in its queue nor in its history (it was
        restarted) are queued again."""
        _, queued = await srv.client.queue_state()
        for pid, job in list(srv.in_flight.items()):
            if pid not in queued and await srv.client.history(pid) is None:
                del srv.in_flight[pid]
                job.requeued += 1
                job.prompt_id = job.server = None
                self.pending.appendleft(job)
                srv.report.requeued += 1
                self.display.event(f"{srv.url} forgot job {job.index} (restarted?): queued again")
                self.wake.set()

    async def collect(self, srv: _Server):
        """Every ended prompt of ours on `srv`: its images downloaded, then written under the job's names. A job
        is finished once, by the server it is in flight on; a lost server's late answers are dropped."""
        for pid, job in sorted(srv.in_flight.items(), key=lambda kv: kv[1].index):
            entry = await srv.client.history(pid)
            if entry is None or (entry.get("status") or {}).get("completed") is None:
                continue
            blobs = [(image, await srv.client.fetch(image)) for image in output_images(entry)]
            if srv.in_flight.get(pid) is not job:
                continue
            del srv.in_flight[pid]
            job.error = outcome_error(entry)
            self.out_dir.mkdir(parents=True, exist_ok=True)
            for n, (image, data) in enumerate(blobs):
                target = self.out_dir / job_image_name(self.workflow, job.index, n,
                                                              Path(image["filename"]).suffix or ".png")
                write_atomically(target, data)
                job.images.append(target)
            self.finish(job, srv)

    def finish(self, job: JobResult, srv: _Server | None):
        self.finished += 1
        if srv is not None:
            srv.report.done += 1
            self.display.job_done(srv, job)
        self.wake.set()

    # -- dispatch --

    def pick(self) -> _Server | None:
        """The live server with the shortest queue among those with room: fewer than `window` of our prompts
        and (unless none of ours is there) fewer than `window` prompts in all."""
        room = [s for s in self.servers if s.live and len(s.in_flight) < self.window
                and (not s.in_flight or s.load < self.window)]
        return min(room, key=lambda s: (s.load, len(s.in_flight), s.assigned), default=None)

    async def dispatch(self):
        while self.pending:
            srv = self.pick()
            if srv is None:
                return
            job = self.pending.popleft()
            try:
                pid = await srv.client.queue(set_seed_offset(srv.graph, job.index))
            except PromptError as e:  # refused (validation): the same graph is refused by every server
                job.error = e
                self.finish(job, None)
                continue
            except SERVER_GONE as e:
                self.pending.appendleft(job)
                self.lose(srv, e)
                continue
            if not srv.live:  # lost while the POST was under way: the prompt may run there, unread
                self.pending.appendleft(job)
                continue
            job.prompt_id, job.server = pid, srv.url
            srv.in_flight[pid] = job
            srv.assigned += 1
            self.display.server_status(srv)

    async def run(self) -> MultiRun:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        try:
            await asyncio.gather(*(self.open(s) for s in self.servers))
            if not any(s.live for s in self.servers):
                raise ConnectionError("no server could be reached: " + "; ".join(
                    f"{s.url}: {s.report.lost}" for s in self.servers))
            for srv in self.servers:
                if srv.live:
                    srv.task = asyncio.create_task(self.follow(srv))
            while self.finished < len(self.jobs):
                await self.dispatch()
                if not any(s.live for s in self.servers):
                    self.give_up("not run: every server was lost")
                    break
                remaining = deadline - loop.time()
                if remaining <= 0:
                    self.give_up(f"unfinished after {self.timeout:.0f} s")
                    break
                try:
                    await asyncio.wait_for(self.wake.wait(), remaining)
                except asyncio.TimeoutError:
                    pass
                self.wake.clear()
        finally:
            for srv in self.servers:
                if srv.task is not None:
                    srv.task.cancel()
            await asyncio.gather(*(s.task for s in self.servers if s.task is not None), return_exceptions=True)
            await asyncio.gather(*(s.client.__aexit__(None, None, None) for s in self.servers if s.open),
                                 return_exceptions=True)
            self.display.close()
        return MultiRun(self.jobs, [s.report for s in self.servers])

    def give_up(self, why: str):
        unfinished = list(self.pending) + [j for s in self.servers for j in s.in_flight.values()]
        self.pending.clear()
        for srv in self.servers:
            srv.in_flight.clear()
        for job in sorted(unfinished, key=lambda j: j.index):
            job.error = PromptError(why)
            self.finish(job, None)


async def run_on_servers(servers: list[str], graph: dict, out_dir: Path, workflow: str, count: int = 1,
                         images: list[str] = (), progress: bool = True, timeout: float = 3600.0, window: int = 2,
                         poll: float = 2.0, answer_timeout: float = 60.0) -> MultiRun:
    """`count` variations of `graph` (seed + i) spread over `servers`: each job goes to the server with the
    shortest queue, at most `window` of ours queued per server (so a server never waits for the client, and a
    fast one takes more jobs). A server that stops answering (connection refused or reset, websocket gone,
    silent for `answer_timeout` s) is dropped and its unfinished jobs run on the others. Every job's images are
    written once into `out_dir` as job_image_name(workflow, job, n). Failures are reported per job, not raised
    (ConnectionError only when no server can be reached at all)."""
    return await _Scheduler(servers, graph, out_dir, workflow, count, images, progress, timeout, window, poll,
                            answer_timeout).run()


def queue_on_servers(servers: list[str], graph: dict, out_dir: Path, workflow: str, count: int = 1,
                     images: list[str] = (), progress: bool = True, timeout: float = 3600.0, window: int = 2,
                     poll: float = 2.0, answer_timeout: float = 60.0) -> MultiRun:
    """Synchronous run_on_servers."""
    return asyncio.run(run_on_servers(servers, graph, out_dir, workflow, count, images, progress, timeout, window,
                                      poll, answer_timeout))
