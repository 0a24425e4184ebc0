"""CustomNet: one generation as the reference samples it (50 DDIM steps, cfg 3, 256 px), our nodes in ComfyUI
against the same computation written with TencentARC/CustomNet's formulas in plain torch, on the same weights.

    python bench/customnet.py [--runs 3] [--size full|tiny] [--model object|inpaint] [--work DIR] [--fp32-text-enc]
                              [--threads N] [--steps N]

Weights: a customnet_v1.pt (--model inpaint: customnet_inpaint_v1.pt) in the released key layout with random fp32
weights (pixart_delta/tiny/customnet.py), at the released sizes (--size full: SD1.5 UNet, KL-f8 VAE, CLIP ViT-L/14
image tower, CLIP-L text encoder; ~5.7 GB like the published file) or the tiny ones (--size tiny: a quick check
that the script works, 10 steps and one torch thread unless --steps / --threads say otherwise). --work keeps the
written file between invocations (without it a temporary folder is removed at the end).

Ours: PixArt CustomNet Loader, PixArt CustomNet Conditioning (object picture + mask, box, polar/azimuth, prompt;
background picture for the inpaint model), core KSampler (ddim, ddim_uniform, 50 steps, cfg 3) and VAE Decode,
called in an in-process ComfyUI under torch.inference_mode() as ComfyUI's executor runs them. ComfyUI's defaults
apply: on CPU it stores the text and image encoders in fp16 (--fp32-text-enc: fp32, as the reference).
Reference: tests/customnet_reference.py (the restatement the parity tests check ours against): transformers
CLIPVisionModelWithProjection / CLIPTextModel, diffusers AutoencoderKL and UNet2DConditionModel with the dual
cross-attention of customnet/attention.py, the conditioning of main/app.py (main_inpaint.py), customnet/ddim.py's
DDIM loop (timesteps 1, 21, ..., 981, eta 0, cond and uncond as two model calls, e = uc + 3 (c - uc)) and ldm's
decode_first_stage; the file read with torch.load(weights_only=True, mmap=True), modules loaded with
load_state_dict, fp32 throughout.

Every measurement is a fresh process (load, then one generation; the peak RSS is the whole process's), the two
contenders alternate; the table shows medians of --runs and ours / reference. Generation = conditioning +
sampling + decoding (loading reported apart). Memory: the resident set after loading minus before (anonymous
memory = what the loaded model holds; file pages = the memory-mapped checkpoint, which the kernel can drop),
the parameter bytes of the loaded networks (ours: ModelPatcher.model_size()), both against the file size.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # tests/customnet_reference.py: the reference's computation, restated

SEED = 42
CFG = 3.0
BOX, POLAR, AZIMUTH = (40, 30, 220, 200), -15.0, 35.0
TEXT = "a backpack on the seaside, sunny day"
STAGES = ("load", "conditioning", "sampling", "decode")
FILES = {("full", False): "customnet_v1.pt", ("full", True): "customnet_inpaint_v1.pt",
         ("tiny", False): "tiny_customnet_v1.pt", ("tiny", True): "tiny_customnet_inpaint_v1.pt"}


def sizes_of(size: str) -> dict:
    from pixart_delta.tiny.customnet import FULL, TINY
    return FULL if size == "full" else TINY


def inputs(inpaint: bool):
    """The object picture (uint8 RGB), its alpha (255 = object) and, for the inpaint model, a background."""
    import numpy as np
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:240, 0:200]
    image = np.stack([xx * 255 // 200, yy * 255 // 240, (xx + yy) % 256], -1).astype(np.uint8)
    image = np.clip(image.astype(int) + rng.integers(-20, 21, image.shape), 0, 255).astype(np.uint8)
    alpha = ((((xx - 100) / 70.0) ** 2 + ((yy - 120) / 95.0) ** 2) < 1).astype(np.uint8) * 255
    background = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8) if inpaint else None
    return image, alpha, background


def rss_mib() -> dict:
    """Resident anonymous and file-backed memory of this process (/proc/self/status), MiB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("RssAnon:", "RssFile:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return {"anon": out["RssAnon"], "file": out["RssFile"]}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def module_bytes(*modules) -> int:
    return sum(t.numel() * t.element_size() for m in modules for t in list(m.parameters()) + list(m.buffers()))


# ------------------------------------------------------------------------------------------- children
def write_file(path: Path, size: str, inpaint: bool):
    from pixart_delta.tools.comfy_runtime import InProcessComfy, require_comfyui
    from pixart_delta.tiny.customnet import write_customnet
    InProcessComfy.get(require_comfyui(why="the writer takes the UNet shapes from ComfyUI's UNetModel"))
    tmp = path.with_suffix(".part")
    write_customnet(tmp, inpaint=inpaint, sizes=sizes_of(size), seed=1 if inpaint else 0)
    tmp.rename(path)


def run_ours(path: Path, inpaint: bool, fp32_text_enc: bool, steps: int, out: Path) -> dict:
    from pixart_delta.tools.comfy_runtime import InProcessComfy, require_comfyui
    InProcessComfy.get(require_comfyui(why="ours runs inside ComfyUI"), models_dir=path.parent.parent,
                       output_dir=out)
    import comfy.cli_args
    comfy.cli_args.args.fp32_text_enc = fp32_text_enc
    import nodes
    import torch
    from pixart_delta.nodes.customnet import MASK_OBJECT, PixArtCustomNetConditioning, PixArtCustomNetLoader
    image_u8, alpha_u8, background_u8 = inputs(inpaint)
    seconds = {}
    before = rss_mib()
    start = time.perf_counter()
    model, clip, clip_vision, vae = PixArtCustomNetLoader.execute(path.name).result
    seconds["load"] = time.perf_counter() - start
    after = rss_mib()
    sizes = {"unet": model.model_size(), "clip": clip.patcher.model_size(),
             "clip_vision": clip_vision.patcher.model_size(), "vae": vae.patcher.model_size()}
    image = torch.from_numpy(image_u8).float()[None] / 255.0
    mask = torch.from_numpy(alpha_u8).float()[None] / 255.0
    background = None if background_u8 is None else torch.from_numpy(background_u8).float()[None] / 255.0
    with torch.inference_mode():
        start = time.perf_counter()
        positive, negative, latent, _, _ = PixArtCustomNetConditioning.execute(
            clip, clip_vision, vae, image, *BOX, POLAR, AZIMUTH, TEXT, mask=mask, mask_convention=MASK_OBJECT,
            background=background).result
        seconds["conditioning"] = time.perf_counter() - start
        start = time.perf_counter()
        samples = nodes.KSampler().sample(model, SEED, steps, CFG, "ddim", "ddim_uniform", positive, negative,
                                          latent)[0]
        seconds["sampling"] = time.perf_counter() - start
        start = time.perf_counter()
        pixels = nodes.VAEDecode().decode(vae, samples)[0]
        seconds["decode"] = time.perf_counter() - start
    torch.save(pixels.float().clone(), out / "ours.pt")
    return {"seconds": seconds, "before": before, "after": after, "model_bytes": sizes}


def run_reference(path: Path, inpaint: bool, size: str, steps: int, out: Path) -> dict:
    import torch
    from customnet_reference import (reference_conditioning, reference_ddim, reference_decode, reference_models)
    from pixart_delta.tools.comfy_runtime import require_comfyui
    # the libraries imported before measuring, as ComfyUI's are on our side
    import diffusers.loaders.single_file_utils  # noqa: F401
    from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: F401
    from transformers import CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection  # noqa: F401
    image_u8, alpha_u8, background_u8 = inputs(inpaint)
    seconds = {}
    before = rss_mib()
    start = time.perf_counter()
    sd = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    models = reference_models(sd, sizes_of(size), require_comfyui(why="the CLIP tokenizer ComfyUI ships"), inpaint)
    keep = ("cc_projection.weight", "cc_projection.bias", "alphas_cumprod")
    sd = {k: sd[k] for k in keep}
    seconds["load"] = time.perf_counter() - start
    after = rss_mib()
    sizes = {"unet": module_bytes(models.unet), "clip": module_bytes(models.encode.model), "clip_vision": module_bytes(models.vision),
             "vae": module_bytes(models.vae)}
    with torch.inference_mode():
        start = time.perf_counter()
        cond, uncond = reference_conditioning(sd, models, image_u8, alpha_u8, BOX, POLAR, AZIMUTH, TEXT,
                                              background_u8)
        seconds["conditioning"] = time.perf_counter() - start
        start = time.perf_counter()
        x_T = torch.randn(1, 4, 32, 32, generator=torch.manual_seed(SEED))   # ComfyUI's noise for this seed
        z = reference_ddim(models.unet, cond, uncond, x_T, sd["alphas_cumprod"], steps, CFG)
        seconds["sampling"] = time.perf_counter() - start
        start = time.perf_counter()
        pixels = reference_decode(models.vae, z)
        seconds["decode"] = time.perf_counter() - start
    torch.save(pixels.float().clone(), out / "reference.pt")
    return {"seconds": seconds, "before": before, "after": after, "model_bytes": sizes}


def child(args):
    path, out = Path(args.file), Path(args.out)
    if args.child == "write":
        return write_file(path, args.size, args.model == "inpaint")
    inpaint = args.model == "inpaint"
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    res = run_ours(path, inpaint, args.fp32_text_enc, args.steps, out) if args.child == "ours" else \
        run_reference(path, inpaint, args.size, args.steps, out)
    res["peak_rss_mib"] = peak_rss_mib()
    res["threads"] = torch.get_num_threads()
    print("RESULT " + json.dumps(res), flush=True)


# ------------------------------------------------------------------------------------------- driver
def spawn(args, contender: str, path: Path, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", contender, "--file", str(path), "--out", str(out), "--size", args.size,
           "--model", args.model, "--threads", str(args.threads), "--steps", str(args.steps)] + (["--fp32-text-enc"] if args.fp32_text_enc else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or (contender != "write" and not lines):
        sys.exit(f"{contender} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):]) if lines else {}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size", choices=("full", "tiny"), default="full")
    ap.add_argument("--model", choices=("object", "inpaint"), default="object",
                    help="customnet_v1.pt (text background) or customnet_inpaint_v1.pt (image background)")
    ap.add_argument("--work", default=None, help="folder for the weight file (kept between invocations)")
    ap.add_argument("--fp32-text-enc", action="store_true",
                    help="ours stores the CLIP text and image encoders in fp32 (ComfyUI's --fp32-text-enc)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads in both contenders (default: torch's choice at full size, 1 at tiny size, "
                         "where spinning OpenMP threads on a busy machine cost more than they give)")
    ap.add_argument("--steps", type=int, default=None, help="DDIM steps, a divisor of 1000 (default 50 as the reference; 10 at tiny size)")
    ap.add_argument("--child", choices=("write", "ours", "reference"))
    ap.add_argument("--file")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.child:
        return child(args)
    if args.threads is None:
        args.threads = 1 if args.size == "tiny" else 0
    if args.steps is None:
        args.steps = 10 if args.size == "tiny" else 50
    if 1000 % args.steps:
        # ldm's make_ddim_timesteps and ComfyUI's ddim_uniform only agree (and ldm's stays in range) then
        ap.error(f"--steps {args.steps}: give a divisor of 1000 (10, 20, 25, 50, ...)")

    from pixart_delta.tools.comfy_runtime import require_comfyui
    require_comfyui(why="the benchmark runs our side inside ComfyUI")
    keep = args.work is not None
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_customnet_"))
    path = work / "models" / "customnet" / FILES[(args.size, args.model == "inpaint")]
    out = work / "out"
    out.mkdir(parents=True, exist_ok=True)
    try:
        if not path.exists():
            print(f"writing {path} ({args.size} sizes, random weights) ...", flush=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            spawn(args, "write", path, out)
        file_mib = path.stat().st_size / 2**20
        print(f"{path}: {file_mib:.0f} MiB; {os.cpu_count()} cores; median of {args.runs} fresh processes per "
              f"contender", flush=True)
        results = {"ours": [], "reference": []}
        images = {}
        for r in range(args.runs):
            for contender in (("ours", "reference") if r % 2 == 0 else ("reference", "ours")):
                res = spawn(args, contender, path, out)
                results[contender].append(res)
                images[contender] = out / f"{contender}.pt"
                s = res["seconds"]
                print(f"  run {r + 1} {contender:9s} " + " ".join(f"{k} {s[k]:.1f}s" for k in STAGES) +
                      f"  loaded +{res['after']['anon'] - res['before']['anon']:.0f} MiB anon"
                      f" +{res['after']['file'] - res['before']['file']:.0f} MiB file"
                      f"  peak RSS {res['peak_rss_mib']:.0f} MiB", flush=True)
            if r + 1 < args.runs:   # the table so far, in case a long full-size run is cut short
                report(args, results, file_mib, images)
        report(args, results, file_mib, images)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def report(args, results: dict, file_mib: float, images: dict):
    import torch

    def med(c, f):
        return statistics.median(f(x) for x in results[c])

    gen = lambda x: sum(x["seconds"][k] for k in STAGES[1:])   # noqa: E731
    threads = results["ours"][0]["threads"]
    enc = "fp32" if args.fp32_text_enc else "fp16 (ComfyUI's CPU default)"
    done = len(results["ours"])
    print(f"\n{'after ' + str(done) + ' of ' + str(args.runs) + ' runs: ' if done < args.runs else ''}"
          f"CustomNet {args.model} model, {args.size} size, {args.steps} DDIM steps, cfg {CFG}, 256 px, CPU "
          f"({threads} threads), fp32 (ours: CLIP text/image encoders {enc}); median of {done} fresh "
          f"processes; file {file_mib:.0f} MiB\n")
    print("| measure | ours | reference | ours / reference |\n|---|---|---|---|")
    for key, label in (("conditioning", "conditioning (object, CLIP image + text, VAE encode) s"),
                       ("sampling", f"sampling ({args.steps} steps, cfg {CFG}) s"), ("decode", "decoding s")):
        o, r = med("ours", lambda x: x["seconds"][key]), med("reference", lambda x: x["seconds"][key])
        print(f"| {label} | {o:.2f} | {r:.2f} | {o / r:.3f} |")
    o, r = med("ours", gen), med("reference", gen)
    print(f"| **generation** (conditioning + sampling + decoding) s | {o:.2f} | {r:.2f} | **{o / r:.3f}** |")
    o, r = med("ours", lambda x: x["seconds"]["load"]), med("reference", lambda x: x["seconds"]["load"])
    print(f"| loading s (apart) | {o:.2f} | {r:.2f} | {o / r:.3f} |")
    rows = (("loaded model, anonymous RSS after - before load, MiB", lambda x: x["after"]["anon"] - x["before"]["anon"]),
            ("loaded model, file-backed RSS after - before load (mapped checkpoint), MiB",
             lambda x: x["after"]["file"] - x["before"]["file"]),
            ("loaded networks' parameter bytes, MiB", lambda x: sum(x["model_bytes"].values()) / 2**20),
            ("peak RSS, MiB", lambda x: x["peak_rss_mib"]))
    for label, f in rows:
        o, r = med("ours", f), med("reference", f)
        print(f"| {label} | {o:.0f} ({o / file_mib:.2f} x file) | {r:.0f} ({r / file_mib:.2f} x file) | "
              f"{o / r:.3f} |")
    parts = results["ours"][0]["model_bytes"]
    ref_parts = results["reference"][0]["model_bytes"]
    print("\nparameter bytes by part, MiB (ours / reference): " + ", ".join(
        f"{k} {parts[k] / 2**20:.0f} / {ref_parts[k] / 2**20:.0f}" for k in parts))
    a, b = torch.load(images["ours"]), torch.load(images["reference"])
    print(f"last run's images, ours vs reference (0..1): mean |diff| {(a - b).abs().mean():.4f}, "
          f"max {(a - b).abs().max():.4f} (the reference starts from x_T = the noise at t = 981 and ends at "
          f"alphas_cumprod[0]; ComfyUI's ddim_uniform from noise * sigma(981), ending at sigma 0)")


if __name__ == "__main__":
    main()
