"""Whole jobs, prompt in and image out, as a ComfyUI user runs them against the diffusers pipeline doing the same
job on the same weights: full-size PixArt transformers (hidden 1152, depth 28, random weights), the full-size SD /
SDXL VAE, and a T5 v1.1 XXL encoder at full width (d_model 4096, d_ff 10240, 64 heads) with --t5-layers of its
24 layers (all 24 are 19 GB in fp32, more than this machine holds twice). CPU, fp32 (the published files' dtype).

    python bench/end_to_end.py [--jobs lcm512,lcm1024,sigma512] [--runs 3] [--t5-layers 4]

Ours: the bundled API workflow in an in-process ComfyUI (ComfyUI's own start-up not counted: a user's server is
already running), our loader and T5 nodes, core samplers and VAE. Diffusers: PixArtAlphaPipeline /
PixArtSigmaPipeline from the diffusers-format copies of the same weights, same scheduler family, steps, guidance,
size, prompt and seed. Every run is a fresh process (the peak RSS is the whole process's), contenders alternate;
the table shows medians of --runs and the ratios ours / diffusers.

Jobs: lcm512 / lcm1024 = `pixart_lcm_4step` (PixArt-LCM-XL-2-1024-MS, 4 LCM steps, cfg 1) at 512 and 1024 px;
sigma512 = `pixart_sigma_t2i` on PixArt-Sigma-XL-2-512-MS (20 steps DPM-Solver++ 2M, cfg 4.5) at 512 px.
Targets: whole-job time <= 0.9 and peak RSS <= 0.75 of diffusers'.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPT = "A small cactus with a happy face in the Sahara desert, golden hour, highly detailed"
SEED = 42
STAGES = ("load", "text", "sampling", "decode")

# job -> (bundled workflow, px, family, diffusers transformer folder, ComfyUI checkpoint name or None to keep)
JOBS = {
    "lcm512": ("pixart_lcm_4step", 512, "alpha", "PixArt-LCM-XL-2-1024-MS/transformer", None),
    "lcm1024": ("pixart_lcm_4step", 1024, "alpha", "PixArt-LCM-XL-2-1024-MS/transformer", None),
    "sigma512": ("pixart_sigma_t2i", 512, "sigma", "diffusers/PixArt-Sigma-XL-2-512-MS/transformer",
                 "PixArt-Sigma-XL-2-512-MS.pth"),
}
VAE_FILE = {"alpha": "vae-ft-mse-840000-ema-pruned.safetensors", "sigma": "sdxl_vae.safetensors"}
VAE_SCALE = {"alpha": 0.18215, "sigma": 0.13025}
# The schedulers of the published diffusers repos (PixArt-alpha/PixArt-LCM-XL-2-1024-MS, PixArt-Sigma-XL-2-512-MS):
# PixArt's linear betas 0.0001 -> 0.02.
BETAS = dict(beta_start=0.0001, beta_end=0.02, beta_schedule="linear", num_train_timesteps=1000)


# ------------------------------------------------------------------------------------------- files (once)
def write_files(models: Path, t5_layers: int):
    """The weights both contenders read, in the layouts users download: ComfyUI's models tree for ours, the
    diffusers-format copies (same tensors) beside it for the pipelines."""
    from pixart_delta.tiny import pixart as fx
    from pixart_delta.tiny import t5 as t5fx
    from pixart_delta.tiny.sd_vae import write_sd_vae
    dm = models / "diffusion_models"
    lcm = dm / "PixArt-LCM-XL-2-1024-MS" / "transformer" / "diffusion_pytorch_model.safetensors"
    if not lcm.exists():
        fx.write_few_step(lcm, True, 1024, "PixArt-alpha/PixArt-LCM-XL-2-1024-MS", seed=31, size=fx.FULL)
    sigma = dm / "PixArt-Sigma-XL-2-512-MS.pth"
    if not sigma.exists():
        kw = dict(**fx.FULL, micro=False, native_px=512, tokens=300)
        sd = fx.random_original(seed=35, **kw)
        fx.write_original(sigma, sd)
        fx.write_diffusers(dm / "diffusers" / "PixArt-Sigma-XL-2-512-MS" / "transformer", sd,
                           fx.diffusers_config(**kw, interpolation_scale=1,
                                               name_or_path="PixArt-alpha/PixArt-Sigma-XL-2-512-MS"))
        del sd
    t5 = models / "text_encoders" / "PixArt-T5"
    if not (t5 / "config.json").exists():
        t5fx.write_hf_t5_folder(t5, dict(t5fx.XXL, num_layers=t5_layers), n_shards=2)
    for name in VAE_FILE.values():
        if not (models / "vae" / name).exists():
            (models / "vae").mkdir(parents=True, exist_ok=True)
            write_sd_vae(models / "vae" / name)


# ------------------------------------------------------------------------------------------- children
class StageTimer:
    def __init__(self):
        self.seconds = {k: 0.0 for k in STAGES}

    def wrap(self, owner, attr, stage):
        original = getattr(owner, attr)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[stage] += time.perf_counter() - start
        setattr(owner, attr, timed)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ours(job: str, models: Path, out: Path) -> dict:
    from pixart_delta.tools.cli import load_workflow
    from pixart_delta.tools.comfy_runtime import InProcessComfy, require_comfyui
    workflow, px, _, _, ckpt = JOBS[job]
    runtime = InProcessComfy.get(require_comfyui(why="ours runs inside ComfyUI"), models_dir=models, output_dir=out)
    import comfy.sample
    import nodes
    timer = StageTimer()
    timer.wrap(nodes.CLIPTextEncode, "encode", "text")
    timer.wrap(comfy.sample, "sample", "sampling")
    timer.wrap(comfy.sample, "sample_custom", "sampling")
    timer.wrap(nodes.VAEDecode, "decode", "decode")
    graph = load_workflow(workflow)
    for node in graph.values():
        inputs = node["inputs"]
        if node["class_type"] == "PixArtResolution":
            inputs.update(width=px, height=px, native_size=str(px))
        if node["class_type"] == "PixArtCheckpointLoader" and ckpt:
            inputs["ckpt_name"] = ckpt
    start = time.perf_counter()
    runtime.run(graph)
    total = time.perf_counter() - start
    timer.seconds["load"] = total - timer.seconds["text"] - timer.seconds["sampling"] - timer.seconds["decode"]
    return timer.seconds


def run_diffusers(job: str, models: Path, out: Path) -> dict:
    import safetensors.torch
    import torch
    from diffusers import (AutoencoderKL, DPMSolverMultistepScheduler, LCMScheduler, PixArtAlphaPipeline,
                           PixArtSigmaPipeline, PixArtTransformer2DModel)
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
    from transformers import T5EncoderModel, T5TokenizerFast
    from pixart_delta.tools.comfy_runtime import require_comfyui
    workflow, px, family, transformer_dir, _ = JOBS[job]
    timer = StageTimer()
    start = time.perf_counter()
    # the T5 tokenizer ComfyUI ships (the T5 v1.1 sentencepiece vocabulary, as PixArt's repos carry it)
    tokenizer = T5TokenizerFast.from_pretrained(require_comfyui() / "comfy" / "text_encoders" / "t5_tokenizer")
    text_encoder = T5EncoderModel.from_pretrained(models / "text_encoders" / "PixArt-T5").eval()
    transformer = PixArtTransformer2DModel.from_pretrained(models / "diffusion_models" / transformer_dir).eval()
    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                        sample_size=1024 if family == "sigma" else 512, scaling_factor=VAE_SCALE[family])
    ldm = safetensors.torch.load_file(models / "vae" / VAE_FILE[family])
    vae.load_state_dict(convert_ldm_vae_checkpoint(ldm, vae.config))
    vae = vae.float().eval()
    del ldm
    if family == "sigma":
        pipe = PixArtSigmaPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                                   scheduler=DPMSolverMultistepScheduler(**BETAS))
        call = dict(num_inference_steps=20, guidance_scale=4.5, max_sequence_length=300)
    else:
        pipe = PixArtAlphaPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                                   scheduler=LCMScheduler(**BETAS))
        call = dict(num_inference_steps=4, guidance_scale=1.0, max_sequence_length=120)
    timer.seconds["load"] = time.perf_counter() - start
    timer.wrap(pipe, "encode_prompt", "text")
    timer.wrap(pipe.vae, "decode", "decode")
    start = time.perf_counter()
    with torch.inference_mode():
        image = pipe(PROMPT, negative_prompt="", height=px, width=px, use_resolution_binning=False,
                     generator=torch.Generator().manual_seed(SEED), clean_caption=True, **call).images[0]
    image.save(out / f"diffusers_{job}.png")
    timer.seconds["sampling"] = time.perf_counter() - start - timer.seconds["text"] - timer.seconds["decode"]
    return timer.seconds


def child(args):
    models, out = Path(args.models), Path(args.out)
    seconds = (run_ours if args.child == "ours" else run_diffusers)(args.job, models, out)
    print("RESULT " + json.dumps({"seconds": seconds, "peak_rss_mib": peak_rss_mib()}), flush=True)


# ------------------------------------------------------------------------------------------- driver
def measure(contender: str, job: str, models: Path, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", contender, "--job", job, "--models", str(models), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"{contender} {job} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", default="lcm512,lcm1024,sigma512")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--t5-layers", type=int, default=4)
    ap.add_argument("--work", default=None, help="folder for the weight files (kept between invocations)")
    ap.add_argument("--child", choices=("ours", "diffusers"))
    ap.add_argument("--job")
    ap.add_argument("--models")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.child:
        return child(args)

    from pixart_delta.tools.comfy_runtime import InProcessComfy, require_comfyui
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_end_to_end_"))
    models, out = work / "models", work / "out"
    out.mkdir(parents=True, exist_ok=True)
    InProcessComfy.get(require_comfyui(why="the benchmark runs our side inside ComfyUI"), models_dir=models,
                       output_dir=out)  # the VAE writer builds ComfyUI's AutoencoderKL
    write_files(models, args.t5_layers)
    import torch
    print(f"weights in {models}; T5 XXL width, {args.t5_layers} of 24 layers; {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} cores; median of {args.runs} fresh processes per contender", flush=True)

    rows = []
    for job in [j for j in args.jobs.split(",") if j]:
        results = {"ours": [], "diffusers": []}
        for r in range(args.runs):
            for contender in (("ours", "diffusers") if r % 2 == 0 else ("diffusers", "ours")):
                res = measure(contender, job, models, out)
                results[contender].append(res)
                s = res["seconds"]
                print(f"  {job} run {r + 1} {contender:9s} " + " ".join(f"{k} {s[k]:.1f}s" for k in STAGES) +
                      f"  peak RSS {res['peak_rss_mib']:.0f} MiB", flush=True)
        med = {c: {k: statistics.median(x["seconds"][k] for x in rs) for k in STAGES} |
               {"job": statistics.median(sum(x["seconds"][k] for k in STAGES[1:]) for x in rs),
                "rss": statistics.median(x["peak_rss_mib"] for x in rs)}
               for c, rs in results.items()}
        rows.append((job, med))

    print("\n| job | stage | ours s | diffusers s | ours / diffusers |\n|---|---|---|---|---|")
    for job, med in rows:
        for key, label in (("load", "model loading"), ("text", "text encoding"), ("sampling", "sampling"),
                           ("decode", "decoding"), ("job", "whole job (text + sampling + decoding)")):
            o, d = med["ours"][key], med["diffusers"][key]
            print(f"| {job} | {label} | {o:.1f} | {d:.1f} | {o / d:.2f} |")
        o, d = med["ours"]["rss"], med["diffusers"]["rss"]
        print(f"| {job} | peak RSS (MiB) | {o:.0f} | {d:.0f} | {o / d:.2f} |")


if __name__ == "__main__":
    main()
