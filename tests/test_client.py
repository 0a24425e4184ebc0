"""The queue client's pure parts (no server, no ComfyUI): error reports name the node, --count seeds, --image plans.
The client against a real ComfyUI server is in test_server.py."""
import pytest

from pixart_delta.tools.client import assign_images, outcome_error, refused_error, set_seed_offset

GRAPH = {
    "1": {"class_type": "PixArtCheckpointLoader", "inputs": {"ckpt_name": "a.pth"}},
    "5": {"class_type": "LoadImage", "inputs": {"image": "x.png"}},
    "6": {"class_type": "KSampler", "inputs": {"seed": 42, "steps": 20, "model": ["1", 0]}},
    "7": {"class_type": "SamplerCustom", "inputs": {"noise_seed": 7, "cfg": 1.0}},
    "12": {"class_type": "LoadImage", "inputs": {"image": "y.png"}},
}


def test_refused_prompt_names_each_failing_node():
    # the body ComfyUI's POST /prompt answers with status 400 (server.py / execution.validate_prompt)
    body = {"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                      "details": "", "extra_info": {}},
            "node_errors": {"1": {"errors": [{"type": "value_not_in_list", "message": "Value not in list",
                                              "details": "ckpt_name: 'b.pth' not in ['a.pth']", "extra_info": {}}],
                                  "dependent_outputs": ["9"], "class_type": "PixArtCheckpointLoader"}}}
    err = refused_error(body)
    assert err.node_errors == [("1", "PixArtCheckpointLoader", "Value not in list: ckpt_name: 'b.pth' not in ['a.pth']")]
    assert err.describe() == "node 1 (PixArtCheckpointLoader): Value not in list: ckpt_name: 'b.pth' not in ['a.pth']"


def test_failed_run_reports_node_and_message_from_history():
    # a /history entry of a prompt whose loader raised (main.py task_done with e.status_messages)
    entry = {"outputs": {}, "status": {"status_str": "error", "completed": False, "messages": [
        ["execution_start", {"prompt_id": "p"}],
        ["execution_error", {"prompt_id": "p", "node_id": "1", "node_type": "PixArtCheckpointLoader",
                             "exception_message": "x.safetensors: this is a VAE, not a PixArt checkpoint\n",
                             "exception_type": "CheckpointError", "traceback": []}]]}}
    err = outcome_error(entry)
    assert (err.node_id, err.node_type) == ("1", "PixArtCheckpointLoader")
    assert err.describe() == "node 1 (PixArtCheckpointLoader): x.safetensors: this is a VAE, not a PixArt checkpoint"
    assert outcome_error({"status": {"status_str": "success", "completed": True, "messages": []}}) is None


def test_count_variations_add_i_to_every_seed_and_leave_the_original():
    g = set_seed_offset(GRAPH, 3)
    assert g["6"]["inputs"]["seed"] == 45 and g["7"]["inputs"]["noise_seed"] == 10
    assert g["6"]["inputs"]["steps"] == 20 and g["6"]["inputs"]["model"] == ["1", 0]
    assert GRAPH["6"]["inputs"]["seed"] == 42


def test_image_plans(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    assert assign_images(GRAPH, [str(a)]) == {a: ["5", "12"]}          # one picture feeds every LoadImage
    assert assign_images(GRAPH, [str(a), str(b)]) == {a: ["5"], b: ["12"]}  # several: in node id order
    assert assign_images(GRAPH, [f"12={a}"]) == {a: ["12"]}
    with pytest.raises(ValueError, match="not a LoadImage"):
        assign_images(GRAPH, [f"6={a}"])
    with pytest.raises(ValueError, match="no such file"):
        assign_images(GRAPH, [str(tmp_path / "missing.png")])
    with pytest.raises(ValueError, match="no LoadImage"):
        assign_images({"6": GRAPH["6"]}, [str(a)])


# ---- several servers: the scheduler against fake ComfyUI servers ----------------------------------------------
# The fakes answer like ComfyUI's server.py (POST/GET /prompt, GET /queue, /history/{id}, /view, /upload/image,
# /ws with "status", "executing" and "progress" messages) and run one prompt at a time. Each "image" is the text
# "seed=<seed of the prompt> n=<image index>.png" (also its name), so a test can tell which job a file came from.

import asyncio  # noqa: E402
import json  # noqa: E402
import uuid  # noqa: E402

from aiohttp import web  # noqa: E402
from aiohttp.test_utils import TestServer  # noqa: E402

from pixart_delta.tools.client import job_image_name, run_on_servers  # noqa: E402

SEEDED = {"1": {"class_type": "KSampler", "inputs": {"seed": 100, "steps": 2}},
          "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "a"}},
          "3": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "b"}}}


class FakeComfy:
    def __init__(self, job_time=0.05, foreign_queue=0, die_after_accepting=None, die_on_view=False):
        self.job_time = job_time
        self.foreign_queue = foreign_queue  # other clients' prompts, counted in queue_remaining
        self.die_after_accepting = die_after_accepting
        self.die_on_view = die_on_view
        self.hang = False  # stop answering anything (and stop reading the websocket)
        self.queue: list[tuple[str, dict, str]] = []
        self.running: tuple[str, dict, str] | None = None
        self.history: dict[str, dict] = {}
        self.accepted: list[int] = []  # seeds of the prompts taken
        self.completed: list[int] = []
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.counter = 0
        self.dead = False
        app = web.Application()
        app.router.add_get("/ws", self.ws)
        app.router.add_post("/prompt", self.post_prompt)
        app.router.add_get("/prompt", self.get_prompt)
        app.router.add_get("/queue", self.get_queue)
        app.router.add_get("/history/{pid}", self.get_history)
        app.router.add_get("/view", self.view)
        app.router.add_post("/upload/image", self.upload)
        self.server = TestServer(app, host="127.0.0.1")

    async def start(self):
        await self.server.start_server()
        self.url = str(self.server.make_url("")).rstrip("/")
        self.worker = asyncio.create_task(self.work())
        return self

    async def kill(self):
        """The process died: listening socket and every connection gone."""
        if self.dead:
            return
        self.dead = True
        self.worker.cancel()
        for ws in list(self.sockets.values()):
            if ws._req is not None and ws._req.transport is not None:
                ws._req.transport.abort()
        await self.server.close()

    def remaining(self):
        return self.foreign_queue + len(self.queue) + (self.running is not None)

    async def send(self, sid, kind, data):
        ws = self.sockets.get(sid)
        if ws is not None and not ws.closed:
            try:
                await ws.send_str(json.dumps({"type": kind, "data": data}))
            except ConnectionError:
                pass

    async def broadcast_status(self):
        for sid in list(self.sockets):
            await self.send(sid, "status", {"status": {"exec_info": {"queue_remaining": self.remaining()}}})

    async def gate(self):
        while self.hang:
            await asyncio.sleep(3600)
        if self.dead:
            raise ConnectionResetError

    async def ws(self, request):
        await self.gate()
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        self.sockets[sid] = ws
        await self.send(sid, "status", {"status": {"exec_info": {"queue_remaining": self.remaining()}}, "sid": sid})
        while not self.hang:
            msg = await ws.receive()
            if msg.type in (web.WSMsgType.CLOSE, web.WSMsgType.CLOSED, web.WSMsgType.ERROR):
                break
        await self.gate()
        return ws

    async def post_prompt(self, request):
        await self.gate()
        body = await request.json()
        pid = uuid.uuid4().hex
        seed = body["prompt"]["1"]["inputs"]["seed"]
        self.queue.append((pid, body["prompt"], body["client_id"]))
        self.accepted.append(seed)
        await self.broadcast_status()
        if self.die_after_accepting is not None and len(self.accepted) >= self.die_after_accepting:
            asyncio.get_running_loop().call_later(self.job_time / 2, lambda: asyncio.ensure_future(self.kill()))
        return web.json_response({"prompt_id": pid, "number": len(self.accepted), "node_errors": {}})

    async def get_prompt(self, request):
        await self.gate()
        return web.json_response({"exec_info": {"queue_remaining": self.remaining()}})

    async def get_queue(self, request):
        await self.gate()
        row = lambda item: [0, item[0], item[1], {}, []]  # noqa: E731
        return web.json_response({"queue_running": [row(self.running)] if self.running else [],
                                  "queue_pending": [row(i) for i in self.queue] +
                                                   [[0, f"foreign{k}", {}, {}, []] for k in range(self.foreign_queue)]})

    async def get_history(self, request):
        await self.gate()
        pid = request.match_info["pid"]
        return web.json_response({pid: self.history[pid]} if pid in self.history else {})

    async def view(self, request):
        await self.gate()
        if self.die_on_view:
            request.transport.abort()
            asyncio.ensure_future(self.kill())
            raise ConnectionResetError
        return web.Response(body=request.query["filename"].encode())

    async def upload(self, request):
        await self.gate()
        return web.json_response({"name": "up.png", "subfolder": "", "type": "input"})

    async def work(self):
        while True:
            if not self.queue:
                await asyncio.sleep(0.005)
                continue
            self.running = self.queue.pop(0)
            pid, prompt, sid = self.running
            seed = prompt["1"]["inputs"]["seed"]
            await self.send(sid, "executing", {"node": "1", "prompt_id": pid})
            await self.send(sid, "progress", {"node": "1", "value": 1, "max": 2, "prompt_id": pid})
            await asyncio.sleep(self.job_time)
            outputs = {nid: {"images": [{"filename": f"seed={seed} n={k}.png", "subfolder": "", "type": "output"}]}
                       for k, nid in enumerate(n for n in sorted(prompt) if prompt[n]["class_type"] == "SaveImage")}
            self.history[pid] = {"outputs": outputs, "status": {"status_str": "success", "completed": True,
                                                               "messages": []}}
            self.completed.append(seed)
            self.running = None
            await self.send(sid, "executing", {"node": None, "prompt_id": pid})
            await self.broadcast_status()


def run_fakes(fakes, tmp_path, count, **kw):
    async def main():
        for f in fakes:
            await f.start()
        try:
            return await asyncio.wait_for(run_on_servers([f.url for f in fakes], SEEDED, tmp_path, "wf", count,
                                                         progress=False, poll=0.2, **kw), 60)
        finally:
            for f in fakes:
                await f.kill()
    return asyncio.run(main())


def assert_every_image_once(tmp_path, run, count):
    """Files in --out: exactly two per job (the two SaveImage nodes, in node id order), each from its own job's
    prompt (seed 100 + job index), no temporary leftovers."""
    expected = {job_image_name("wf", i, n): f"seed={100 + i} n={n}.png" for i in range(count) for n in range(2)}
    found = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert found == expected
    assert all(j.error is None and [p.name for p in j.images] == [job_image_name("wf", j.index, 0),
                                                                 job_image_name("wf", j.index, 1)] for j in run.jobs)


def test_jobs_spread_over_servers_each_image_once(tmp_path):
    fakes = [FakeComfy(), FakeComfy(), FakeComfy()]
    run = run_fakes(fakes, tmp_path, 12)
    assert_every_image_once(tmp_path, run, 12)
    assert sorted(s for f in fakes for s in f.completed) == [100 + i for i in range(12)]  # each job ran once
    assert all(f.completed for f in fakes)
    assert [r.done for r in run.servers] == [len(f.completed) for f in fakes]
    assert all(r.lost is None for r in run.servers)


def test_a_new_job_goes_to_the_server_with_the_shortest_queue(tmp_path):
    # one job: the server with other clients' prompts waiting is passed over
    busy, idle = FakeComfy(foreign_queue=3), FakeComfy()
    run = run_fakes([busy, idle], tmp_path, 1)
    assert busy.accepted == [] and idle.accepted == [100]
    assert run.jobs[0].server == idle.url


def test_server_killed_mid_run_its_jobs_run_elsewhere(tmp_path):
    dying = FakeComfy(die_after_accepting=3)
    others = [FakeComfy(), FakeComfy()]
    run = run_fakes([dying, *others], tmp_path, 15)
    assert_every_image_once(tmp_path, run, 15)
    lost = run.servers[0]
    assert lost.url == dying.url and lost.lost is not None and lost.requeued >= 1
    unfinished_there = set(dying.accepted) - set(dying.completed)
    assert len(unfinished_there) == lost.requeued
    assert unfinished_there <= {s for f in others for s in f.completed}  # re-run on the others
    assert all(r.lost is None for r in run.servers[1:])


def test_job_done_on_a_dying_server_but_not_downloaded_is_run_again_and_written_once(tmp_path):
    dying, other = FakeComfy(die_on_view=True), FakeComfy(job_time=0.2)
    run = run_fakes([dying, other], tmp_path, 4)
    assert_every_image_once(tmp_path, run, 4)
    assert dying.completed  # it finished a job whose images never arrived ...
    assert set(dying.completed) <= set(other.completed)  # ... which the other server ran again
    assert run.servers[0].lost is not None and run.servers[0].done == 0


def test_silent_server_is_dropped_after_the_answer_timeout(tmp_path):
    silent, other = FakeComfy(job_time=0.5), FakeComfy()

    async def hang_soon():
        await asyncio.sleep(0.1)
        silent.hang = True

    async def main():
        for f in (silent, other):
            await f.start()
        try:
            asyncio.get_running_loop().create_task(hang_soon())
            return await asyncio.wait_for(run_on_servers([silent.url, other.url], SEEDED, tmp_path, "wf", 6,
                                                         progress=False, poll=0.2, answer_timeout=1.0), 60)
        finally:
            silent.hang = False
            for f in (silent, other):
                await f.kill()

    run = asyncio.run(main())
    assert_every_image_once(tmp_path, run, 6)
    assert run.servers[0].lost is not None and run.servers[0].requeued >= 1


def test_unreachable_servers(tmp_path):
    up = FakeComfy()
    down_url = "http://127.0.0.1:9"  # discard port: nothing listens
    run = asyncio.run(_with_fakes([up], lambda urls: run_on_servers([down_url, *urls], SEEDED, tmp_path, "wf", 3,
                                                                     progress=False, poll=0.2)))
    assert_every_image_once(tmp_path, run, 3)
    assert run.servers[0].lost is not None and run.servers[0].done == 0
    with pytest.raises(ConnectionError, match="no server could be reached"):
        asyncio.run(run_on_servers([down_url, "http://127.0.0.1:7"], SEEDED, tmp_path, "wf", 1, progress=False))


def test_every_server_lost_fails_the_remaining_jobs_without_hanging(tmp_path):
    fakes = [FakeComfy(die_after_accepting=2), FakeComfy(die_after_accepting=2)]
    run = run_fakes(fakes, tmp_path, 8)
    failed = [j for j in run.jobs if j.error is not None]
    assert failed and all("every server was lost" in j.error.describe() for j in failed)
    assert all(r.lost is not None for r in run.servers)
    assert not any(p.name.endswith(".part") for p in tmp_path.iterdir())


async def _with_fakes(fakes, body):
    for f in fakes:
        await f.start()
    try:
        return await asyncio.wait_for(body([f.url for f in fakes]), 60)
    finally:
        for f in fakes:
            await f.kill()
