"""Whole jobs, prompt in and image out, as a ComfyUI user runs them against the diffusers pipeline doing the same
job on the same weights: full-size PixArt transformers (hidden 1152, depth 28, random weights), the full-size SD /
SDXL VAE, the full-size PixArt-δ ControlNet and HED, and a T5 v1.1 XXL encoder at full width (d_model 4096, d_ff
10240, 64 heads) with --t5-layers of its 24 layers (all 24 are 19 GB in fp32, more than this machine holds twice).
CPU, fp32 files (the published files' dtype).

    python bench/end_to_end.py [--jobs lcm512,lcm1024,sigma512,controlnet1024] [--runs 3] [--t5-layers 4]
                               [--t5-dtype default] [--comfyui-args=--use-pytorch-cross-attention] [--work DIR]

Ours: the bundled API workflow in an in-process ComfyUI (ComfyUI's own start-up not counted: a user's server is
already running; no ComfyUI flags but --cpu and --comfyui-args), our loader and T5 nodes, core samplers and VAE.
--t5-dtype sets the PixArt T5 Loader's weight_dtype (default: the workflow's "default", i.e. ComfyUI's
text-encoder dtype, fp16 on CPU). --use-pytorch-cross-attention gives core's VAE PyTorch attention on CPU instead
of split attention, which at 1024 px holds two 1 GB score matrices.
Diffusers: PixArtAlphaPipeline / PixArtSigmaPipeline from the diffusers-format copies of the same weights, same
scheduler family, steps, guidance, size, prompt and seed; for the ControlNet job diffusers' PixArtTransformer2DModel
driving the research project's adapter (tests/pixart_controlnet_reference.py) in the research pipeline's loop.
Every run is a fresh process (the peak RSS is the whole process's), contenders alternate; the table shows medians
of --runs and the ratios ours / diffusers, for wall time and for CPU time (all threads), which the other
processes of a shared machine disturb much less.

Jobs: lcm512 / lcm1024 = `pixart_lcm_4step` (PixArt-LCM-XL-2-1024-MS, 4 LCM steps, cfg 1: neither side encodes a
negative, the workflow zeroes the positive and the pipeline skips it) at 512 and 1024 px;
sigma512 = `pixart_sigma_t2i` on PixArt-Sigma-XL-2-512-MS (20 steps DPM-Solver++ 2M, cfg 4.5) at 512 px;
controlnet1024 = `pixart_controlnet_hed` (PixArt-XL-2-1024-ControlNet.pth, 14 steps DPM-Solver++ 2M, cfg 4.5,
1024 px, HED of a 512x384 picture). The ControlNet job's "hint" stage (HED + the hint's VAE encode, the same
preprocessing code on both sides) counts in its whole job.
Targets: whole-job time <= 0.9 and peak RSS <= 0.75 of diffusers'.
On a CPU with avx512_bf16 or AMX, --comfyui-args="--use-pytorch-cross-attention --bf16-unet --bf16-text-enc" runs
our PixArt MODEL, ControlNet and T5 in bf16 (the loaders' weight_dtype "default" follows these flags) and core's VAE
with PyTorch attention; diffusers stays in fp32.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
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
STAGES = ("load", "text", "hint", "sampling", "decode")
WORK_STAGES = STAGES[1:]

CONTROLNET_FILE = "PixArt-XL-2-1024-ControlNet.pth"
JOBS = {
    "lcm512": dict(workflow="pixart_lcm_4step", px=512, family="alpha",
                   transformer="PixArt-LCM-XL-2-1024-MS/transformer"),
    "lcm1024": dict(workflow="pixart_lcm_4step", px=1024, family="alpha",
                    transformer="PixArt-LCM-XL-2-1024-MS/transformer"),
    "sigma512": dict(workflow="pixart_sigma_t2i", px=512, family="sigma",
                     transformer="diffusers/PixArt-Sigma-XL-2-512-MS/transformer", ckpt="PixArt-Sigma-XL-2-512-MS.pth"),
    # the research project's layouts: base PixArt-alpha/PixArt-XL-2-1024-MS (the ControlNet file's own base
    # tensors), adapter raulc0399/pixart-alpha-hed-controlnet (config.json + diffusion_pytorch_model.safetensors)
    "controlnet1024": dict(workflow="pixart_controlnet_hed", px=1024, family="alpha",
                           transformer="diffusers/PixArt-XL-2-1024-MS/transformer",
                           adapter="pixart-alpha-hed-controlnet"),
}
VAE_FILE = {"alpha": "vae-ft-mse-840000-ema-pruned.safetensors", "sigma": "sdxl_vae.safetensors"}
VAE_SCALE = {"alpha": 0.18215, "sigma": 0.13025}
# The schedulers of the published diffusers repos (PixArt-alpha/PixArt-LCM-XL-2-1024-MS, PixArt-Sigma-XL-2-512-MS,
# PixArt-alpha/PixArt-XL-2-1024-MS): PixArt's linear betas 0.0001 -> 0.02.
BETAS = dict(beta_start=0.0001, beta_end=0.02, beta_schedule="linear", num_train_timesteps=1000)
CONTROLNET_STEPS, CONTROLNET_CFG = 14, 4.5   # the research project's example and the bundled workflow


# ------------------------------------------------------------------------------------------- files (once)
def write_files(models: Path, inputs: Path, t5_layers: int, jobs: list[str]):
    """The weights both contenders read, in the layouts users download: ComfyUI's models tree for ours, the
    diffusers-format copies (same tensors) beside it for the pipelines. Only what `jobs` need."""
    from pixart_delta.tiny import pixart as fx
    from pixart_delta.tiny import t5 as t5fx
    from pixart_delta.tiny.sd_vae import write_sd_vae
    dm = models / "diffusion_models"
    lcm = dm / "PixArt-LCM-XL-2-1024-MS" / "transformer" / "diffusion_pytorch_model.safetensors"
    if {"lcm512", "lcm1024"} & set(jobs) and not lcm.exists():
        fx.write_few_step(lcm, True, 1024, "PixArt-alpha/PixArt-LCM-XL-2-1024-MS", seed=31, size=fx.FULL)
    sigma = dm / "PixArt-Sigma-XL-2-512-MS.pth"
    if "sigma512" in jobs and not sigma.exists():
        kw = dict(**fx.FULL, micro=False, native_px=512, tokens=300)
        sd = fx.random_original(seed=35, **kw)
        fx.write_original(sigma, sd)
        fx.write_diffusers(dm / "diffusers" / "PixArt-Sigma-XL-2-512-MS" / "transformer", sd,
                           fx.diffusers_config(**kw, interpolation_scale=1,
                                               name_or_path="PixArt-alpha/PixArt-Sigma-XL-2-512-MS"))
        del sd
    if "controlnet1024" in jobs:
        write_controlnet_files(models, inputs)
    t5 = models / "text_encoders" / "PixArt-T5"
    if not (t5 / "config.json").exists():
        t5fx.write_hf_t5_folder(t5, dict(t5fx.XXL, num_layers=t5_layers), n_shards=2)
    for name in VAE_FILE.values():
        if not (models / "vae" / name).exists():
            (models / "vae").mkdir(parents=True, exist_ok=True)
            write_sd_vae(models / "vae" / name)


def write_controlnet_files(models: Path, inputs: Path):
    import gc
    from pixart_delta.loaders.pixart_keys import original_controlnet_to_diffusers_adapter
    from pixart_delta.tiny import pixart as fx
    from pixart_delta.tiny.hed import write_hed
    from pixart_delta.tiny.io import save
    from pixart_delta.tiny.pixart_controlnet import random_controlnet_file
    from pixart_delta.tools.cli import load_workflow, write_missing_inputs
    path = models / "controlnet" / CONTROLNET_FILE
    adapter = models / "controlnet" / JOBS["controlnet1024"]["adapter"]
    if not path.exists():
        sd = random_controlnet_file(seed=37)   # 668 keys: base_model.* (PixArt-XL-2-1024-MS) + controlnet.*
        fx.write_original(path, sd)
        base = {k[len("base_model."):]: v for k, v in sd.items() if k.startswith("base_model.")}
        fx.write_diffusers(models / "diffusion_models" / JOBS["controlnet1024"]["transformer"], base,
                           fx.diffusers_config(**fx.FULL, micro=True, native_px=1024,
                                               name_or_path="PixArt-alpha/PixArt-XL-2-1024-MS"))
        save(adapter / "diffusion_pytorch_model.safetensors", original_controlnet_to_diffusers_adapter(sd))
        (adapter / "config.json").write_text(json.dumps({"_class_name": "PixArtControlNetAdapterModel",
                                                         "num_layers": 13}))
        del sd, base
        gc.collect()
    if not (models / "hed" / "ControlNetHED.pth").exists():
        write_hed(models / "hed" / "ControlNetHED.pth")
    write_missing_inputs(load_workflow(JOBS["controlnet1024"]["workflow"]), inputs)


# ------------------------------------------------------------------------------------------- children
class StageTimer:
    """Wall seconds and CPU seconds (all threads of the process) per stage. The CPU seconds are the work done,
    which the other processes of a shared machine disturb far less than the wall time."""

    def __init__(self):
        self.seconds = {k: 0.0 for k in STAGES}
        self.cpu = {k: 0.0 for k in STAGES}
        self.start = (time.perf_counter(), time.process_time())

    def add(self, stage, since):
        self.seconds[stage] += time.perf_counter() - since[0]
        self.cpu[stage] += time.process_time() - since[1]

    def rest_is(self, stage):
        """Everything since the timer was made that no other stage counted."""
        for clock, total in ((self.seconds, time.perf_counter() - self.start[0]),
                             (self.cpu, time.process_time() - self.start[1])):
            clock[stage] = total - sum(v for k, v in clock.items() if k != stage)

    def wrap(self, owner, attr, stage):
        original = getattr(owner, attr)

        def timed(*args, **kwargs):
            since = (time.perf_counter(), time.process_time())
            try:
                return original(*args, **kwargs)
            finally:
                self.add(stage, since)
        setattr(owner, attr, timed)

    def wrap_classmethod(self, owner, attr, stage):
        """A V3 node's `execute`: ComfyUI binds the underlying function to a clone of the class, so the
        replacement stays a classmethod."""
        original = owner.__dict__[attr].__func__

        def timed(cls, *args, **kwargs):
            since = (time.perf_counter(), time.process_time())
            try:
                return original(cls, *args, **kwargs)
            finally:
                self.add(stage, since)
        setattr(owner, attr, classmethod(timed))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ours_graph(job: str, t5_dtype: str, steps: int | None) -> dict:
    from pixart_delta.tools.cli import load_workflow
    spec = JOBS[job]
    graph = load_workflow(spec["workflow"])
    for node in graph.values():
        inputs = node["inputs"]
        kind = node["class_type"]
        if kind == "PixArtResolution":
            inputs.update(width=spec["px"], height=spec["px"], native_size=str(spec["px"]))
        elif kind == "PixArtCheckpointLoader" and spec.get("ckpt"):
            inputs["ckpt_name"] = spec["ckpt"]
        elif kind == "PixArtT5Loader":
            inputs["weight_dtype"] = t5_dtype
        elif kind == "CLIPTextEncode" and inputs["text"]:
            inputs["text"] = PROMPT
        elif kind == "KSampler" and steps:
            inputs["steps"] = steps
    return graph


def set_comfyui_flags(comfy_path: Path, comfyui_args: str):
    """ComfyUI's command-line flags for the in-process ComfyUI, set before its model management is imported."""
    if not comfyui_args:
        return
    sys.path.insert(0, str(comfy_path))
    import comfy.options
    comfy.options.enable_args_parsing(False)
    import comfy.cli_args
    # only the flags given: cli_args post-processes some defaults (--fast None -> set()) after parsing
    defaults = vars(comfy.cli_args.parser.parse_args([]))
    for name, value in vars(comfy.cli_args.parser.parse_args(shlex.split(comfyui_args))).items():
        if value != defaults[name]:
            setattr(comfy.cli_args.args, name, value)


def run_ours(job: str, models: Path, out: Path, inputs: Path, t5_dtype: str, steps: int | None,
             comfyui_args: str = "") -> StageTimer:
    from pixart_delta.tools.comfy_runtime import InProcessComfy, require_comfyui
    graph = ours_graph(job, t5_dtype, steps)
    comfy_path = require_comfyui(why="ours runs inside ComfyUI")
    set_comfyui_flags(comfy_path, comfyui_args)
    runtime = InProcessComfy.get(comfy_path, models_dir=models, output_dir=out, input_dir=inputs)
    import comfy.sample
    import nodes
    timer = StageTimer()   # ComfyUI's start-up is not the job's
    timer.wrap(nodes.CLIPTextEncode, "encode", "text")
    timer.wrap(comfy.sample, "sample", "sampling")
    timer.wrap(comfy.sample, "sample_custom", "sampling")
    timer.wrap(nodes.VAEDecode, "decode", "decode")
    for node_id in ("PixArtHEDEdgeDetector", "PixArtControlNetApply"):   # V3 nodes: classmethod execute
        cls = runtime.node_classes[node_id]
        timer.wrap_classmethod(cls, "execute", "hint")
    runtime.run(graph)
    timer.rest_is("load")
    return timer


def diffusers_vae(models: Path, family: str):
    import safetensors.torch
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                        sample_size=1024 if family == "sigma" else 512, scaling_factor=VAE_SCALE[family])
    ldm = safetensors.torch.load_file(models / "vae" / VAE_FILE[family])
    vae.load_state_dict(convert_ldm_vae_checkpoint(ldm, vae.config))
    return vae.float().eval()


def run_diffusers(job: str, models: Path, out: Path, inputs: Path, t5_dtype: str, steps: int | None,
                  comfyui_args: str = "") -> StageTimer:
    import torch
    from diffusers import (DPMSolverMultistepScheduler, LCMScheduler, PixArtAlphaPipeline, PixArtSigmaPipeline,
                           PixArtTransformer2DModel)
    from transformers import T5EncoderModel, T5TokenizerFast
    from pixart_delta.tools.comfy_runtime import require_comfyui
    spec = JOBS[job]
    px, family = spec["px"], spec["family"]
    timer = StageTimer()
    # the T5 tokenizer ComfyUI ships (the T5 v1.1 sentencepiece vocabulary, as PixArt's repos carry it)
    tokenizer = T5TokenizerFast.from_pretrained(require_comfyui() / "comfy" / "text_encoders" / "t5_tokenizer")
    text_encoder = T5EncoderModel.from_pretrained(models / "text_encoders" / "PixArt-T5").eval()
    transformer = PixArtTransformer2DModel.from_pretrained(models / "diffusion_models" / spec["transformer"]).eval()
    vae = diffusers_vae(models, family)
    if job == "controlnet1024":
        return controlnet_reference(timer, models, out, inputs, tokenizer, text_encoder, transformer, vae, steps)
    if family == "sigma":
        pipe = PixArtSigmaPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                                   scheduler=DPMSolverMultistepScheduler(**BETAS))
        call = dict(num_inference_steps=steps or 20, guidance_scale=4.5, max_sequence_length=300)
    else:
        pipe = PixArtAlphaPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                                   scheduler=LCMScheduler(**BETAS))
        call = dict(num_inference_steps=4, guidance_scale=1.0, max_sequence_length=120)
    timer.rest_is("load")
    timer.wrap(pipe, "encode_prompt", "text")
    timer.wrap(pipe.vae, "decode", "decode")
    with torch.inference_mode():
        image = pipe(PROMPT, negative_prompt="", height=px, width=px, use_resolution_binning=False,
                     generator=torch.Generator().manual_seed(SEED), clean_caption=True, **call).images[0]
    image.save(out / f"diffusers_{job}.png")
    timer.rest_is("sampling")
    return timer


def controlnet_reference(timer, models, out, inputs, tokenizer, text_encoder, transformer, vae, steps):
    """The research pipeline's job (PixArtAlphaControlnetPipeline.__call__, huggingface/diffusers
    examples/research_projects/pixart/pipeline_pixart_alpha_controlnet.py): prompt encoding as PixArtAlphaPipeline,
    the hint's VAE latents, DPM-Solver++ multistep with CFG on a batch of 2, decode. The hint is our HED and our
    hint fitting, as on our side; it is VAE-encoded once (the research pipeline encodes the CFG-doubled batch)."""
    import numpy as np
    import safetensors.torch
    import torch
    from PIL import Image
    from diffusers import DPMSolverMultistepScheduler, PixArtAlphaPipeline
    from pixart_delta.loaders.hed import load_hed
    from pixart_delta.preprocessors.controlnet_hint import fit_hint
    from pixart_delta.preprocessors.hed import detect
    from pixart_delta.tools.cli import load_workflow
    sys.path.insert(0, str(ROOT / "tests"))
    from pixart_controlnet_reference import Adapter, controlled_forward
    spec = JOBS["controlnet1024"]
    px = spec["px"]
    adapter = Adapter().eval()
    adapter.load_state_dict(safetensors.torch.load_file(
        models / "controlnet" / spec["adapter"] / "diffusion_pytorch_model.safetensors"), strict=True)
    hed = load_hed(models / "hed" / "ControlNetHED.pth")
    scheduler = DPMSolverMultistepScheduler(**BETAS)
    pipe = PixArtAlphaPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                               scheduler=scheduler)
    picture = next(n["inputs"]["image"] for n in load_workflow(spec["workflow"]).values()
                   if n["class_type"] == "LoadImage")
    image = torch.from_numpy(np.asarray(Image.open(inputs / picture).convert("RGB"), dtype=np.float32) / 255)[None]
    timer.rest_is("load")
    generator = torch.Generator().manual_seed(SEED)
    with torch.inference_mode():
        since = (time.perf_counter(), time.process_time())
        emb, mask, neg_emb, neg_mask = pipe.encode_prompt(PROMPT, True, negative_prompt="", clean_caption=True,
                                                          max_sequence_length=120)
        text, text_mask = torch.cat([neg_emb, emb]), torch.cat([neg_mask, mask])
        timer.add("text", since)

        since = (time.perf_counter(), time.process_time())
        pixels = fit_hint(detect(hed, image), px, px).movedim(-1, 1) * 2 - 1
        hint = vae.encode(pixels).latent_dist.sample(generator) * vae.config.scaling_factor
        timer.add("hint", since)

        since = (time.perf_counter(), time.process_time())
        scheduler.set_timesteps(steps or CONTROLNET_STEPS)
        latents = torch.randn(1, 4, px // 8, px // 8, generator=generator) * scheduler.init_noise_sigma
        cond = {"resolution": torch.tensor([[px, px]] * 2, dtype=torch.float32),
                "aspect_ratio": torch.tensor([[1.0]] * 2)}
        for t in scheduler.timesteps:
            x = scheduler.scale_model_input(torch.cat([latents] * 2), t)
            pred = controlled_forward(transformer, adapter, x, text, t[None].expand(2), hint.expand(2, -1, -1, -1),
                                      cond, text_mask=text_mask)
            uncond, cond_pred = pred[:, :4].chunk(2)   # learned sigma: the first 4 channels are eps
            latents = scheduler.step(uncond + CONTROLNET_CFG * (cond_pred - uncond), t, latents).prev_sample
        timer.add("sampling", since)

        since = (time.perf_counter(), time.process_time())
        image = vae.decode(latents / vae.config.scaling_factor).sample
        timer.add("decode", since)
    pixels = ((image[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(pixels).save(out / "diffusers_controlnet1024.png")
    return timer


def child(args):
    models, out, inputs = Path(args.models), Path(args.out), Path(args.inputs)
    run = run_ours if args.child == "ours" else run_diffusers
    timer = run(args.job, models, out, inputs, args.t5_dtype, args.steps, args.comfyui_args)
    print("RESULT " + json.dumps({"seconds": timer.seconds, "cpu": timer.cpu, "peak_rss_mib": peak_rss_mib()}),
          flush=True)


# ------------------------------------------------------------------------------------------- driver
def measure(contender: str, job: str, work: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--child", contender, "--job", job, "--models", str(work / "models"),
           "--out", str(work / "out"), "--inputs", str(work / "input"), "--t5-dtype", args.t5_dtype]
    if args.steps:
        cmd += ["--steps", str(args.steps)]
    if args.comfyui_args:
        cmd += ["--comfyui-args=" + args.comfyui_args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"{contender} {job} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", default="lcm512,lcm1024,sigma512,controlnet1024")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--t5-layers", type=int, default=4)
    ap.add_argument("--t5-dtype", default="default", help="weight_dtype of our PixArt T5 Loader")
    ap.add_argument("--steps", type=int, default=None,
                    help="quick check only: steps of the KSampler jobs (sigma512, controlnet1024) on both sides")
    ap.add_argument("--comfyui-args", default="",
                    help="ComfyUI flags for our side, as --comfyui-args=--use-pytorch-cross-attention")
    ap.add_argument("--work", default=None, help="folder for the weight files (kept between invocations)")
    ap.add_argument("--child", choices=("ours", "diffusers"))
    ap.add_argument("--job")
    ap.add_argument("--models")
    ap.add_argument("--out")
    ap.add_argument("--inputs")
    args = ap.parse_args()
    if args.child:
        return child(args)

    from pixart_delta.tools.comfy_runtime import InProcessComfy, require_comfyui
    jobs = [j for j in args.jobs.split(",") if j]
    unknown = [j for j in jobs if j not in JOBS]
    if unknown:
        sys.exit(f"unknown jobs {unknown}; expected some of {', '.join(JOBS)}")
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_end_to_end_"))
    for sub in ("models", "out", "input"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    InProcessComfy.get(require_comfyui(why="the benchmark runs our side inside ComfyUI"), models_dir=work / "models",
                       output_dir=work / "out")  # the VAE writer builds ComfyUI's AutoencoderKL
    write_files(work / "models", work / "input", args.t5_layers, jobs)
    import torch
    print(f"weights in {work / 'models'}; T5 XXL width, {args.t5_layers} of 24 layers, our T5 weight_dtype "
          f"{args.t5_dtype}; ComfyUI flags: --cpu {args.comfyui_args}; {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} cores; median of {args.runs} fresh processes per contender"
          + (f"; KSampler jobs at {args.steps} steps (quick check)" if args.steps else ""), flush=True)

    rows = []
    for job in jobs:
        results = {"ours": [], "diffusers": []}
        for r in range(args.runs):
            for contender in (("ours", "diffusers") if r % 2 == 0 else ("diffusers", "ours")):
                res = measure(contender, job, work, args)
                results[contender].append(res)
                s, c = res["seconds"], res["cpu"]
                print(f"  {job} run {r + 1} {contender:9s} " +
                      " ".join(f"{k} {s[k]:.1f}s/{c[k]:.1f}s" for k in STAGES) +
                      f"  peak RSS {res['peak_rss_mib']:.0f} MiB  (wall/CPU)", flush=True)
        med = {}
        for contender, rs in results.items():
            m = {}
            for clock in ("seconds", "cpu"):
                m[clock] = {k: statistics.median(x[clock][k] for x in rs) for k in STAGES}
                m[clock]["job"] = statistics.median(sum(x[clock][k] for k in WORK_STAGES) for x in rs)
            m["rss"] = statistics.median(x["peak_rss_mib"] for x in rs)
            med[contender] = m
        rows.append((job, med))

    print("\n| job | stage | ours s | diffusers s | ours / diffusers | ours CPU s | diffusers CPU s | CPU ratio |\n"
          "|---|---|---|---|---|---|---|---|")
    for job, med in rows:
        o, d = med["ours"], med["diffusers"]
        for key, label in (("load", "model loading"), ("text", "text encoding"), ("hint", "hint (HED + VAE encode)"),
                           ("sampling", "sampling"), ("decode", "decoding"),
                           ("job", "**whole job** (all but loading)")):
            if key == "hint" and not d["seconds"]["hint"]:
                continue
            w = [o["seconds"][key], d["seconds"][key]]
            c = [o["cpu"][key], d["cpu"][key]]
            print(f"| {job} | {label} | {w[0]:.1f} | {w[1]:.1f} | {w[0] / w[1]:.2f} | "
                  f"{c[0]:.1f} | {c[1]:.1f} | {c[0] / c[1]:.2f} |")
        print(f"| {job} | **peak RSS** (MiB) | {o['rss']:.0f} | {d['rss']:.0f} | {o['rss'] / d['rss']:.2f} | | | |")


if __name__ == "__main__":
    main()
