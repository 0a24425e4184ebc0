"""Throughput of `queue` over 1 vs 3 ComfyUI servers on this machine: N jobs of the bundled pixart_tinyvae_decode
(tiny random models, 64 px, few steps), images per minute, median of a few runs.

    COMFYUI_PATH=/root/ComfyUI python bench/multi_server.py [--jobs 30] [--repeats 3] [--steps 6]

One server keeps torch's default thread count; each of the three gets one OpenMP thread (three servers with a
thread per core each would oversubscribe the CPU). With tiny models a job is mostly per-prompt overhead (graph
validation, PNG encoding, HTTP), which several servers overlap; large models on one CPU gain nothing from more
servers beyond the core count."""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pixart_delta.tools.cli import load_workflow, shrink_for_tiny  # noqa: E402
from pixart_delta.tools.client import queue_on_servers, queue_workflow  # noqa: E402
from pixart_delta.tools.comfy_runtime import InProcessComfy, require_comfyui  # noqa: E402
from pixart_delta.tools.comfy_server import ComfyServer, prepare_base  # noqa: E402

WORKFLOW = "pixart_tinyvae_decode"
PX = 64


def job_graph(steps: int) -> dict:
    graph = load_workflow(WORKFLOW)
    shrink_for_tiny(graph)
    for node in graph.values():
        for key in ("width", "height"):
            if isinstance(node["inputs"].get(key), int):
                node["inputs"][key] = PX
        if node["class_type"] == "KSampler":
            node["inputs"]["steps"] = steps
    return graph


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()
    comfy_path = require_comfyui(None)
    root = Path(tempfile.mkdtemp(prefix="bench_multi_server_"))
    InProcessComfy.get(comfy_path, root / "m", root / "o", root / "i")  # the tiny writers need ComfyUI's modules
    from pixart_delta.tiny import write_for_workflow
    graph = job_graph(args.steps)
    write_for_workflow(graph, root / "models")

    def servers(n: int, env: dict | None) -> list[ComfyServer]:
        started = []
        for i in range(n):
            base = root / f"n{n}_s{i}"
            base.mkdir()
            (base / "models").symlink_to(root / "models", target_is_directory=True)
            started.append(ComfyServer(comfy_path, prepare_base(base), env=env))
        for s in started:
            s.wait_ready()
        return started

    print(f"{os.cpu_count()} CPU cores; {args.jobs} jobs of {WORKFLOW} at {PX} px, {args.steps} steps; "
          f"median of {args.repeats} runs (after one warm-up job per server)")
    rates = {}
    for n, env in ((1, None), (3, {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})):
        running = servers(n, env)
        try:
            urls = [s.url for s in running]
            for url in urls:  # first prompt loads the models
                queue_workflow(url, graph, root / "warm", progress=False)
            per_min = []
            for r in range(args.repeats):
                out = root / f"out_{n}_{r}"
                t = time.perf_counter()
                if n == 1:
                    jobs = queue_workflow(urls[0], graph, out, count=args.jobs, progress=False)
                else:
                    jobs = queue_on_servers(urls, graph, out, WORKFLOW, count=args.jobs, progress=False).jobs
                elapsed = time.perf_counter() - t
                assert all(j.error is None for j in jobs), [str(j.error) for j in jobs if j.error]
                per_min.append(sum(len(j.images) for j in jobs) / elapsed * 60)
            rates[n] = statistics.median(per_min)
            threads = "default threads" if env is None else "1 thread each"
            print(f"{n} server(s) ({threads}): {rates[n]:.1f} images/min  (runs: "
                  f"{', '.join(f'{x:.1f}' for x in per_min)})")
        finally:
            for s in running:
                s.stop()
    print(f"3 servers / 1 server: {rates[3] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
