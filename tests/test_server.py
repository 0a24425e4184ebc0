"""Every bundled workflow through a real ComfyUI server process (POST /prompt, websocket, /history, /view) with
the queue client: tiny random models in a temporary models tree, the pack loaded from a temporary custom_nodes
folder (a symlink to this checkout), all directories under a temporary --base-directory (nothing is written
into the ComfyUI checkout). Also: bad prompts leave the server serving, and 30 mixed prompts do not grow its
memory. Skipped, saying why, when no ComfyUI checkout is found."""
from __future__ import annotations

import asyncio
import itertools
import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from pixart_delta.tools.cli import bundled_workflows, load_workflow, shrink_for_tiny, write_missing_inputs
from pixart_delta.tools.client import ComfyClient, PromptError, outcome_error, queue_workflow, set_seed_offset
from pixart_delta.tools.comfy_runtime import PACK_ROOT, find_comfyui
from pixart_delta.tools.comfy_server import ComfyServer, prepare_base

pytestmark = pytest.mark.comfyui
# The point is the plumbing, not the pictures: small images (the tiny fixtures keep the full-size SD VAE, whose
# decode dominates) and few KSampler steps (few-step schedules keep their own step counts).
SERVER_STEPS = 2
SERVER_PX = 64


def small(graph: dict) -> dict:
    shrink_for_tiny(graph)
    for node in graph.values():
        inputs = node["inputs"]
        for key in ("width", "height", "resolution"):
            if isinstance(inputs.get(key), int) and inputs[key] > SERVER_PX:
                inputs[key] = SERVER_PX
        if node["class_type"] in ("KSampler", "KSamplerAdvanced") and inputs.get("steps", 0) > SERVER_STEPS:
            inputs["steps"] = SERVER_STEPS
    return graph


def image_args(graph: dict, folder: Path) -> list[str]:
    """Synthetic pictures for the LoadImage nodes, uploaded by the client (--image NODE=PATH)."""
    write_missing_inputs(graph, folder)
    return [f"{nid}={folder / n['inputs']['image']}" for nid, n in graph.items() if n["class_type"] == "LoadImage"]


@pytest.fixture(scope="module")
def server(comfy, tmp_path_factory):
    """A ComfyUI server with every bundled workflow's tiny models (written after the in-process boot that the
    writers need) and one non-PixArt file in diffusion_models for the wrong-model test."""
    from pixart_delta.tiny import write_for_workflow
    base = prepare_base(tmp_path_factory.mktemp("server"))
    for name in bundled_workflows():
        write_for_workflow(small(load_workflow(name)), base / "models")
    vae = sorted((base / "models" / "vae").glob("*.safetensors"))[0]  # a real file that is no PixArt model
    (base / "models" / "diffusion_models" / "not_a_pixart_model.safetensors").write_bytes(vae.read_bytes())
    srv = ComfyServer(find_comfyui(), base)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def output_files(base: Path) -> dict[str, bytes]:
    return {str(p.relative_to(base / "output")): p.read_bytes() for p in (base / "output").rglob("*.png")}


@pytest.mark.parametrize("name", bundled_workflows())
def test_workflow_through_the_server(server, tmp_path, name):
    graph = small(load_workflow(name))
    before = output_files(server.base)
    [job] = queue_workflow(server.url, graph, tmp_path / "out", images=image_args(graph, tmp_path / "in"),
                           progress=False, timeout=600)
    assert job.error is None, f"{name}: {job.error}\n{server.log_tail()}"
    written = {k: v for k, v in output_files(server.base).items() if k not in before}
    assert written, f"{name}: the server saved no image"
    downloaded = {str(p.relative_to(tmp_path / "out")): p.read_bytes() for p in job.images}
    assert {k: v for k, v in downloaded.items() if k in written} == written  # every saved image, byte for byte
    for p in job.images:
        with Image.open(p) as im:
            im.load()
            assert im.size[0] > 0 and im.size[1] > 0


def test_preprocessors_on_a_512_px_picture_through_the_server(server, tmp_path):
    """control_preprocessors as bundled (small() would cap its 512 detect resolutions): one 512 x 512 picture
    through every preprocessor node; every map comes back at 512 x 512."""
    import numpy as np
    graph = load_workflow("control_preprocessors")
    y, x = np.mgrid[0:512, 0:512]
    rgb = np.stack([(x / 2) % 256, (y / 2) % 256, ((x - 256) ** 2 + (y - 256) ** 2 < 150 ** 2) * 255], -1)
    picture = tmp_path / "picture_512.png"
    Image.fromarray(rgb.astype("uint8")).save(picture)
    loader = next(nid for nid, n in graph.items() if n["class_type"] == "LoadImage")
    [job] = queue_workflow(server.url, graph, tmp_path / "out", images=[f"{loader}={picture}"], progress=False,
                           timeout=900)
    assert job.error is None, f"{job.error}\n{server.log_tail()}"
    prefixes = {n["inputs"]["filename_prefix"] for n in graph.values() if n["class_type"] == "SaveImage"}
    sizes = {}
    for p in job.images:
        with Image.open(p) as im:
            sizes[p.name.rsplit("_", 2)[0]] = im.size
    assert sizes == {p: (512, 512) for p in prefixes}


def test_template_browser_lists_every_bundled_workflow(server):
    """ComfyUI serves the pack's example_workflows/ to its template browser: exactly the bundled workflows, each
    file byte for byte (and nothing else of ours, such as a stray JSON in workflows/)."""
    import json
    import urllib.request
    pack = next(p.name for p in (server.base / "custom_nodes").iterdir() if p.resolve() == PACK_ROOT)
    with urllib.request.urlopen(f"{server.url}/api/workflow_templates", timeout=30) as r:
        listed = json.loads(r.read())
    assert sorted(listed.get(pack, [])) == bundled_workflows()
    for name in bundled_workflows():
        with urllib.request.urlopen(f"{server.url}/api/workflow_templates/{pack}/{name}.json", timeout=30) as r:
            assert r.read() == (PACK_ROOT / "example_workflows" / f"{name}.json").read_bytes(), name


def test_cli_queue_count_and_set(server, tmp_path):
    """`queue NAME --count 2 --set ...`: two variations (seed, seed + 1), both downloaded, different pictures."""
    name = "pixart_sigma_t2i" if "pixart_sigma_t2i" in bundled_workflows() else bundled_workflows()[0]
    graph = load_workflow(name)
    # the sizes small() chose, and PixArt Resolution's native_size (else it samples the 1024 bucket)
    sets = [f"{nid}.{k}={json.dumps(v)}" for nid, n in small(graph).items() for k, v in n["inputs"].items()
            if k in ("width", "height", "steps", "native_size") and isinstance(v, (int, str))]
    args = [sys.executable, "-m", "pixart_delta", "queue", name, "--server", server.url, "--count", "2",
            "--out", str(tmp_path)]  # with the progress bar (on stderr)
    for s in sets:
        args += ["--set", s]
    for img in image_args(graph, tmp_path / "in"):
        args += ["--image", img]
    proc = subprocess.run(args, cwd=PACK_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    images = [Path(line) for line in proc.stdout.splitlines() if line.endswith(".png")]
    assert len(images) >= 2 and all(p.is_file() for p in images)
    assert "2/2 prompt(s) done" in proc.stdout
    assert len({p.read_bytes() for p in images}) == len(images), "the two seeds gave identical images"
    assert "2/2" in proc.stderr, proc.stderr  # the progress bar counted both prompts


def loader_node(graph: dict) -> str:
    return next(nid for nid, n in graph.items() if n["class_type"] == "PixArtCheckpointLoader")


def good_prompt_succeeds(server, tmp_path) -> None:
    graph = small(load_workflow("pixart_sigma_t2i"))
    [job] = queue_workflow(server.url, graph, tmp_path / "good", progress=False, timeout=600)
    assert job.error is None and job.images, f"the next good prompt failed: {job.error}"
    assert server.alive()


def test_missing_model_file_is_reported_and_server_keeps_serving(server, tmp_path):
    graph = small(load_workflow("pixart_sigma_t2i"))
    nid = loader_node(graph)
    graph[nid]["inputs"]["ckpt_name"] = "PixArt-not-downloaded.pth"
    [job] = queue_workflow(server.url, graph, tmp_path / "out", progress=False, timeout=600)
    assert isinstance(job.error, PromptError)
    if job.prompt_id is None:  # refused at POST /prompt by the combo check
        assert [(n, ct) for n, ct, _ in job.error.node_errors] == [(nid, "PixArtCheckpointLoader")]
    else:  # accepted, failed in the loader
        assert (job.error.node_id, job.error.node_type) == (nid, "PixArtCheckpointLoader")
    assert "PixArt-not-downloaded.pth" in job.error.describe()
    good_prompt_succeeds(server, tmp_path)


def test_wrong_model_in_loader_is_reported_and_server_keeps_serving(server, tmp_path):
    graph = small(load_workflow("pixart_sigma_t2i"))
    nid = loader_node(graph)
    graph[nid]["inputs"]["ckpt_name"] = "not_a_pixart_model.safetensors"
    [job] = queue_workflow(server.url, graph, tmp_path / "out", progress=False, timeout=600)
    assert job.error is not None and job.prompt_id is not None  # accepted, failed while running
    assert (job.error.node_id, job.error.node_type) == (nid, "PixArtCheckpointLoader")
    assert "not_a_pixart_model.safetensors" in job.error.message, job.error.message
    good_prompt_succeeds(server, tmp_path)


def test_corrupt_input_image_is_reported_and_server_keeps_serving(server, tmp_path):
    with_image = [n for n in bundled_workflows()
                  if any(node["class_type"] == "LoadImage" for node in load_workflow(n).values())]
    if not with_image:
        pytest.skip("no bundled workflow reads an input image")
    graph = small(load_workflow(with_image[0]))
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"this is not image data" * 50)
    nid = next(n for n, node in graph.items() if node["class_type"] == "LoadImage")
    [job] = queue_workflow(server.url, graph, tmp_path / "out", images=[f"{nid}={bad}"], progress=False, timeout=600)
    assert job.error is not None, "a corrupt image was accepted"
    assert (job.error.node_id, job.error.node_type) == (nid, "LoadImage"), job.error.describe()
    assert job.error.message
    good_prompt_succeeds(server, tmp_path)


def test_free_memory_button_drops_the_pack_cached_models(server, tmp_path):
    """ComfyUI's free-memory request (POST /free {"free_memory": true}; ComfyUI-Manager's "Free model and node
    cache") reaches the pack's cached preprocessor models in a real server: its prompt worker drops them and the
    next prompt reads them again."""
    graph = small(load_workflow("hed_edges"))
    [job] = queue_workflow(server.url, graph, tmp_path / "out", images=image_args(graph, tmp_path / "in"),
                           progress=False, timeout=600)
    assert job.error is None, f"{job.error}\n{server.log_tail()}"
    logged = len(server.log_tail(10**9))
    request = urllib.request.Request(server.url + "/free", data=json.dumps({"free_memory": True}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
    deadline = time.time() + 60
    while "PixArt-Delta: free memory: dropped" not in server.log_tail(10**9)[logged:] and time.time() < deadline:
        time.sleep(0.5)
    after = server.log_tail(10**9)[logged:]
    dropped = re.search(r"PixArt-Delta: free memory: dropped (\d+) cached", after)
    assert dropped and int(dropped.group(1)) >= 1, after[-4000:]     # the HED model the prompt cached
    [job] = queue_workflow(server.url, graph, tmp_path / "again", images=image_args(graph, tmp_path / "in"),
                           progress=False, timeout=600)
    assert job.error is None and job.images and server.alive()


def test_cli_reports_the_failing_node(server, tmp_path):
    graph = load_workflow("pixart_sigma_t2i")
    nid = loader_node(graph)
    proc = subprocess.run([sys.executable, "-m", "pixart_delta", "queue", "pixart_sigma_t2i", "--server", server.url,
                           "--set", f"{nid}.ckpt_name=not_a_pixart_model.safetensors", "--set", "5.width=128",
                           "--set", "5.height=128", "--out", str(tmp_path), "--quiet"],
                          cwd=PACK_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1
    assert f"node {nid} (PixArtCheckpointLoader)" in proc.stderr and "not_a_pixart_model" in proc.stderr, proc.stderr


def load_mix(names: list[str], pack_types: set[str], size: int = 5) -> list[str]:
    """Up to `size` workflows that together use the most of this pack's node types (greedy; ties go to the smaller
    graph; no workflow that adds no new node type), so the first round of the load test loads every model the later prompts use: RSS growth after it
    would be a leak, not a first load."""
    types = {n: {node["class_type"] for node in load_workflow(n).values()} for n in names}
    mix, covered = [], set()
    while len(mix) < min(size, len(names)):
        best = max((n for n in names if n not in mix),
                   key=lambda n: (len((types[n] & pack_types) - covered), -len(types[n]), -names.index(n)))
        if len(mix) >= 2 and not (types[best] & pack_types) - covered:
            break
        mix.append(best)
        covered |= types[best] & pack_types
    return mix


def test_thirty_mixed_prompts_complete_without_growing_memory(server, tmp_path):
    import psutil
    from pixart_delta.nodes import all_nodes
    names = load_mix(bundled_workflows(), {cls.GET_SCHEMA().node_id for cls in all_nodes()})
    graphs = [(n, small(load_workflow(n))) for n in names]
    uploads = {n: image_args(g, tmp_path / "in" / n) for n, g in graphs}
    plan = list(itertools.islice(itertools.cycle(graphs), 30))
    proc = psutil.Process(server.proc.pid)

    async def run(jobs, offset):
        async with ComfyClient(server.url, progress=False, timeout=900) as client:
            ids = []
            for i, (n, g) in enumerate(jobs):
                g = set_seed_offset(g, offset + i + 1)
                for item in uploads[n]:
                    node, _, path = item.partition("=")
                    g[node]["inputs"]["image"] = await client.upload_image(Path(path))
                ids.append(await client.queue(g))
            entries = await client.wait(ids)
            return [(pid, entries[pid]) for pid in ids]

    first = asyncio.run(run(plan[:5], 0))
    rss_5 = proc.memory_info().rss
    rest = asyncio.run(run(plan[5:], 5))
    rss_30 = proc.memory_info().rss
    print(f"load mix {names}: server RSS {rss_5 / 2**20:.0f} MiB after 5 prompts, {rss_30 / 2**20:.0f} MiB after 30")
    results = first + rest
    assert len(results) == 30
    failures = [(pid, outcome_error(e)) for pid, e in results if outcome_error(e) is not None]
    assert not failures, failures
    assert all(any(ui.get("images") for ui in (e.get("outputs") or {}).values()) for _, e in results)
    assert server.alive()
    assert abs(rss_30 - rss_5) <= 0.10 * rss_5, f"server RSS {rss_5 / 2**20:.0f} MiB after 5 prompts, " \
                                                f"{rss_30 / 2**20:.0f} MiB after 30"
