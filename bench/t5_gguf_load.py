"""GGUF T5 load: peak RSS / final weight bytes of PixArt T5 Loader's load_t5_clip for GGUF T5 encoders (Q8_0 and
Q4_K, as city96/t5-v1_1-xxl-encoder-gguf ships them) beside the fp32 shards and a plain fp8 file of the same random
T5, per storage dtype. Every load runs in its own fresh subprocess (peak RSS = VmHWM) under torch.inference_mode().
Also printed: the resident T5 bytes of each storage choice (kept quantised = the GGUF's tensor bytes), and how long
gguf-py takes to dequantise the whole model (what a T5 kept quantised and dequantised with gguf-py at run time would
pay on every prompt).

    python bench/t5_gguf_load.py [--layers 24] [--runs 1] [--dir /tmp/t5_gguf_bench]

Default: the full T5-XXL encoder (d_model 4096, d_ff 10240, 64 heads, 24 blocks; ~5 GB Q8_0, 19 GB of fp32 shards
on disk); --layers N keeps the full widths with fewer blocks. Files are written once into --dir and reused.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # tests/gguf_files.py: the GGUF writer (and its Q4_K packer)

from t5_shard_load import proc_status  # noqa: E402

# (row name, source, weight_dtype)
ROWS = [("fp32 shards -> bf16", "shards", "bf16"),
        ("fp32 shards -> fp8", "shards", "fp8_e4m3fn"),
        ("fp8 file -> fp8 (default)", "fp8", "default"),
        ("GGUF Q8_0 -> bf16", "Q8_0", "bf16"),
        ("GGUF Q8_0 -> fp8", "Q8_0", "fp8_e4m3fn"),
        ("GGUF Q4_K -> bf16", "Q4_K", "bf16"),
        ("GGUF Q4_K -> fp8", "Q4_K", "fp8_e4m3fn")]


def _comfy():
    from pixart_delta.tools.comfy_runtime import find_comfyui
    sys.path.insert(0, str(find_comfyui()))
    import comfy.options
    comfy.options.enable_args_parsing(False)
    import comfy.cli_args
    comfy.cli_args.args.cpu = True
    import comfy.sd  # noqa: F401


def child_load(path: str, weight_dtype: str) -> None:
    import torch
    _comfy()
    from pixart_delta.loaders.t5_comfy import load_t5_clip
    base = proc_status("VmRSS")
    t = time.perf_counter()
    with torch.inference_mode():
        clip = load_t5_clip(path, weight_dtype=weight_dtype, device="cpu")
    seconds = time.perf_counter() - t
    model = clip.cond_stage_model.t5xxl.transformer
    storages = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in model.parameters()}
    print(json.dumps({"peak": proc_status("VmHWM"), "base": base, "weights": sum(storages.values()),
                      "seconds": seconds, "dtypes": sorted({str(p.dtype) for p in model.parameters()})}))


def child_dequantise(path: str) -> None:
    """Every tensor of the GGUF read and dequantised by gguf-py, in the loader's 16 MB pieces, then dropped."""
    from pixart_delta.loaders.t5_gguf import iter_gguf_pieces
    t = time.perf_counter()
    values = sum(piece.numel() for _k, _s, _r0, piece in iter_gguf_pieces(path, lambda k: True, 16 << 20))
    print(json.dumps({"seconds": time.perf_counter() - t, "values": values}))


def run_child(*args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, __file__, "--child", *args], env=env, capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_sources(folder: Path, cfg: dict) -> dict[str, Path]:
    import torch
    from gguf_files import write_t5_gguf
    from pixart_delta.tiny.io import save
    from pixart_delta.tiny.t5 import random_tensor, t5_shapes, write_hf_t5_folder
    folder.mkdir(parents=True, exist_ok=True)
    fp32_bytes = sum(math.prod(s) * 4 for s in t5_shapes(**cfg).values())
    paths = {"shards": folder / "fp32-shards", "fp8": folder / "t5xxl_fp8_e4m3fn.safetensors",
             "Q8_0": folder / "t5-v1_1-xxl-encoder-Q8_0.gguf", "Q4_K": folder / "t5-v1_1-xxl-encoder-Q4_K.gguf"}
    if not (paths["shards"] / "model.safetensors.index.json").is_file():
        n_shards = max(2, math.ceil(fp32_bytes / 5e9))  # at most ~5 GB of tensors in memory while writing
        print(f"writing fp32 shards ({fp32_bytes / 1e9:.1f} GB, {n_shards} shards) ...", flush=True)
        write_hf_t5_folder(paths["shards"], cfg, n_shards=n_shards)
    if not paths["fp8"].is_file():
        print("writing the fp8 file ...", flush=True)
        sd = {k: random_tensor(k, s, cfg, 0, i).to(torch.float8_e4m3fn)
              for i, (k, s) in enumerate(t5_shapes(**cfg).items())}
        save(paths["fp8"], sd)
        del sd
    for file_type in ("Q8_0", "Q4_K"):
        if not paths[file_type].is_file():
            print(f"writing the {file_type} GGUF ...", flush=True)
            part = paths[file_type].with_suffix(".part")
            write_t5_gguf(part, cfg, file_type, vocab=True, reference=False)
            part.rename(paths[file_type])
    return paths


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--dir", default="/tmp/t5_gguf_bench")
    ap.add_argument("--child", nargs="+")
    args = ap.parse_args()
    if args.child:
        kind, *rest = args.child
        return child_load(*rest) if kind == "load" else child_dequantise(*rest)

    from pixart_delta.loaders.t5_gguf import read_gguf_header
    from pixart_delta.tiny.t5 import XXL, t5_shapes
    cfg = {**XXL, "num_layers": args.layers}
    full = "the full T5-XXL encoder" if args.layers == XXL["num_layers"] else \
        f"T5-XXL widths with {args.layers} of its 24 blocks"
    paths = write_sources(Path(args.dir) / f"t5-xxl-{args.layers}", cfg)
    numel = sum(math.prod(s) for s in t5_shapes(**cfg).values())
    print(f"\n{full}: {numel / 1e9:.3f} G weights; on disk: " + ", ".join(
        f"{k} {sum(f.stat().st_size for f in (p.glob('*.safetensors') if p.is_dir() else [p])) / 1e9:.2f} GB"
        for k, p in paths.items()))

    print("\nresident T5 weight bytes per storage choice:")
    for name, size in (("fp32", 4), ("fp16 / bf16", 2), ("fp8_e4m3fn", 1)):
        print(f"  {name:28s} {numel * size / 1e9:6.2f} GB")
    for file_type in ("Q8_0", "Q4_K"):
        kept = sum(t.nbytes for t in read_gguf_header(paths[file_type]).tensors)
        print(f"  {'kept quantised ' + file_type:28s} {kept / 1e9:6.2f} GB  ({kept * 8 / numel:.2f} bits per weight)")

    results: dict[str, list[dict]] = {name: [] for name, _s, _d in ROWS}
    for i in range(args.runs):
        for name, source, weight_dtype in ROWS:
            r = run_child("load", str(paths[source]), weight_dtype)
            results[name].append(r)
            print(f"  run {i + 1} {name:26s} peak {r['peak'] / 1e9:6.2f} GB, before load {r['base'] / 1e9:.2f} GB, "
                  f"weights {r['weights'] / 1e9:6.2f} GB {r['dtypes']}, {r['seconds']:.1f} s", flush=True)

    print("\nmedian over runs (peak RSS / final weight bytes):")
    for name, rs in results.items():
        whole = statistics.median(r["peak"] / r["weights"] for r in rs)
        load = statistics.median((r["peak"] - r["base"]) / r["weights"] for r in rs)
        secs = statistics.median(r["seconds"] for r in rs)
        weights = statistics.median(r["weights"] for r in rs)
        print(f"  {name:26s} weights {weights / 1e9:6.2f} GB   whole process {whole:.3f}   load only {load:.3f}   "
              f"load time {secs:6.1f} s")

    print("\ngguf-py dequantising the whole model (read + gguf.quants.dequantize, 16 MB pieces, one thread):")
    for file_type in ("Q8_0", "Q4_K"):
        r = run_child("dequantise", str(paths[file_type]))
        print(f"  {file_type}: {r['seconds']:.1f} s ({r['values'] / r['seconds'] / 1e6:.0f} M weights/s)")


if __name__ == "__main__":
    main()
