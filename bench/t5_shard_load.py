"""Sharded T5 load into bf16: peak RSS / final weight bytes, our loader (PixArt T5 Loader's load_t5_clip, into
ComfyUI's T5) vs transformers' T5EncoderModel.from_pretrained(dtype=bf16), on the same random T5 (>= 2 GB of fp32
in 2 safetensors shards, HF layout). Every load runs in its own fresh subprocess (peak RSS = VmHWM), under
torch.inference_mode(); the two loaders alternate; median of N runs each.

    python bench/t5_shard_load.py [--runs 3] [--layers 10] [--dir /tmp/t5_bench]

Reported per loader: peak RSS / weight bytes (the whole process, imports included) and (peak RSS - RSS just
before the load call) / weight bytes (what loading itself costs). Target: ours <= 1.25.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# ~2.2 GB fp32: 10 layers of d_model 2048 / d_ff 5120 (gated) plus the 32128 x 2048 embedding.
BENCH = dict(d_model=2048, d_kv=64, num_heads=32, d_ff=5120, num_layers=10, vocab_size=32128)


def proc_status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(which: str, folder: str) -> None:
    import torch
    if which == "ours":
        from pixart_delta.tools.comfy_runtime import find_comfyui
        comfy_path = find_comfyui()
        sys.path.insert(0, str(comfy_path))
        import comfy.options
        comfy.options.enable_args_parsing(False)
        import comfy.cli_args
        comfy.cli_args.args.cpu = True
        import comfy.sd  # noqa: F401
        from pixart_delta.loaders.t5_comfy import load_t5_clip
        base = proc_status("VmRSS")
        t = time.perf_counter()
        with torch.inference_mode():
            clip = load_t5_clip(folder, weight_dtype="bf16", device="cpu")
        seconds = time.perf_counter() - t
        model = clip.cond_stage_model.t5xxl.transformer
    else:
        from transformers import T5EncoderModel
        base = proc_status("VmRSS")
        t = time.perf_counter()
        with torch.inference_mode():
            try:
                model = T5EncoderModel.from_pretrained(folder, dtype=torch.bfloat16)
            except TypeError:  # transformers < 4.56 names it torch_dtype
                model = T5EncoderModel.from_pretrained(folder, torch_dtype=torch.bfloat16)
        seconds = time.perf_counter() - t
    storages = {}
    for p in model.parameters():
        storages[p.untyped_storage().data_ptr()] = p.untyped_storage().nbytes()
    dtypes = sorted({str(p.dtype) for p in model.parameters()})
    print(json.dumps({"peak": proc_status("VmHWM"), "base": base, "weights": sum(storages.values()),
                      "seconds": seconds, "dtypes": dtypes}))


def run_child(which: str, folder: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, __file__, "--child", which, "--dir", str(folder)], env=env,
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{which} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--layers", type=int, default=BENCH["num_layers"])
    ap.add_argument("--dir", default="/tmp/t5_shard_bench")
    ap.add_argument("--child", choices=["ours", "transformers"])
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.dir)

    from pixart_delta.tiny.t5 import t5_shapes, write_hf_t5_folder
    import torch
    cfg = {**BENCH, "num_layers": args.layers}
    folder = Path(args.dir) / f"t5-{args.layers}"
    fp32_bytes = sum(torch.Size(s).numel() * 4 for s in t5_shapes(**cfg).values())
    if not (folder / "model.safetensors.index.json").is_file():
        print(f"writing a random T5 ({fp32_bytes / 1e9:.2f} GB fp32, 2 shards) to {folder} ...", flush=True)
        write_hf_t5_folder(folder, cfg, n_shards=2)
    shards = sorted(folder.glob("model-*.safetensors"))
    print(f"T5 {cfg}: {len(shards)} shards, {sum(p.stat().st_size for p in shards) / 1e9:.2f} GB on disk")

    results = {"ours": [], "transformers": []}
    for i in range(args.runs):
        for which in ("ours", "transformers"):
            r = run_child(which, folder)
            results[which].append(r)
            print(f"  run {i + 1} {which:12s} peak {r['peak'] / 1e9:.2f} GB, before load {r['base'] / 1e9:.2f} GB, "
                  f"weights {r['weights'] / 1e9:.2f} GB {r['dtypes']}, {r['seconds']:.1f} s", flush=True)

    print("\nmedian over runs (peak RSS / final weight bytes):")
    summary = {}
    for which, rs in results.items():
        whole = statistics.median(r["peak"] / r["weights"] for r in rs)
        load = statistics.median((r["peak"] - r["base"]) / r["weights"] for r in rs)
        secs = statistics.median(r["seconds"] for r in rs)
        summary[which] = (whole, load)
        print(f"  {which:12s} whole process {whole:.3f}   load only {load:.3f}   load time {secs:.1f} s")
    print(f"ours / transformers: whole {summary['ours'][0] / summary['transformers'][0]:.3f}, "
          f"load only {summary['ours'][1] / summary['transformers'][1]:.3f}")
    print(f"target ours <= 1.25: whole process {'met' if summary['ours'][0] <= 1.25 else 'NOT met'}, "
          f"load only {'met' if summary['ours'][1] <= 1.25 else 'NOT met'}")


if __name__ == "__main__":
    main()
