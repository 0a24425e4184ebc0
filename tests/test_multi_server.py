"""`queue --server A --server B --server C` against three real ComfyUI server processes on loopback (tiny random
models, one models tree shared through a symlink in each server's --base-directory): 30 jobs, one server killed
(SIGKILL) once it has finished a job and holds more; every image arrives once in --out under its job's name, the
client exits 0 and names the server it lost. The scheduling edge cases are tested against fake servers in
test_client.py. Skipped, saying why, when no ComfyUI checkout is found."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from pixart_delta.tools.cli import load_workflow
from pixart_delta.tools.client import job_image_name
from pixart_delta.tools.comfy_runtime import PACK_ROOT, find_comfyui
from pixart_delta.tools.comfy_server import ComfyServer, prepare_base
from test_server import small

pytestmark = pytest.mark.comfyui

WORKFLOW = "pixart_tinyvae_decode"  # tiny PixArt + T5 + TAESD decoder: the cheapest bundled graph with a seed
JOBS = 30
# Enough sampling steps that a job outlasts the test's reaction time (it kills the victim while it holds jobs).
STEPS = 6
# Three servers on a small shared CPU: one OpenMP thread each (spinning threads of oversubscribed servers made
# tiny forwards orders of magnitude slower).
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def shared_models_bases(root: Path, graph: dict, n: int) -> list[Path]:
    from pixart_delta.tiny import write_for_workflow
    models = root / "models"
    write_for_workflow(graph, models)
    bases = []
    for i in range(n):
        base = root / f"server{i}"
        base.mkdir()
        (base / "models").symlink_to(models, target_is_directory=True)
        bases.append(prepare_base(base))
    return bases


@pytest.fixture(scope="module")
def servers(comfy, tmp_path_factory):
    graph = job_graph()
    bases = shared_models_bases(tmp_path_factory.mktemp("multi"), graph, 3)
    started = [ComfyServer(find_comfyui(), b, env=ONE_THREAD) for b in bases]  # the three boot in parallel
    try:
        for s in started:
            s.wait_ready()
        yield started
    finally:
        for s in started:
            s.stop()


def job_graph() -> dict:
    graph = small(load_workflow(WORKFLOW))
    sampler = next(n for n in graph.values() if n["class_type"] == "KSampler")
    sampler["inputs"]["steps"] = STEPS
    return graph


def saved_seed(path: Path) -> int:
    """The KSampler seed of the prompt that made the image (SaveImage writes the prompt into the PNG)."""
    with Image.open(path) as im:
        prompt = json.loads(im.info["prompt"])
    return next(n["inputs"]["seed"] for n in prompt.values() if n["class_type"] == "KSampler")


def test_thirty_jobs_over_three_servers_one_killed(servers, tmp_path):
    graph = job_graph()
    workflow = tmp_path / f"{WORKFLOW}.json"
    workflow.write_text(json.dumps(graph))
    base_seed = next(n["inputs"]["seed"] for n in graph.values() if n["class_type"] == "KSampler")
    out = tmp_path / "out"
    victim = servers[1]
    args = [sys.executable, "-m", "pixart_delta", "queue", str(workflow), "--count", str(JOBS), "--out", str(out),
            "--timeout", "600"]
    for s in servers:
        args += ["--server", s.url]
    stdout, stderr = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with open(stdout, "w") as so, open(stderr, "w") as se:
        proc = subprocess.Popen(args, cwd=PACK_ROOT, stdout=so, stderr=se, text=True)
        try:
            deadline = time.time() + 300
            while not list((victim.base / "output").glob("*.png")):  # it took jobs and finished one
                assert proc.poll() is None, stderr.read_text()
                assert time.time() < deadline, "the victim server finished no job"
                time.sleep(0.05)
            victim.proc.kill()
            victim.proc.wait()
            proc.wait(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
    out_text, err_text = stdout.read_text(), stderr.read_text()
    assert proc.returncode == 0, out_text + err_text
    names = sorted(p.name for p in out.iterdir())
    assert names == [job_image_name(WORKFLOW, i, 0) for i in range(JOBS)], names  # each job's image, once
    assert [saved_seed(out / name) for name in names] == [base_seed + i for i in range(JOBS)]
    assert f"{JOBS}/{JOBS} prompt(s) done" in out_text
    lost = re.search(rf"lost server {re.escape(victim.url)}: .*; (\d+) of its job\(s\) queued again", err_text)
    assert lost, err_text
    assert int(lost.group(1)) >= 1, err_text  # it was killed holding unfinished jobs
    assert all(s.alive() for s in servers if s is not victim)
    print(out_text.splitlines()[-1])
