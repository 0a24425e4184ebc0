"""Few-step sampling cost vs the standard schedule, full-size random PixArt (hidden 1152, depth 28), CPU fp32.

Each few-step workflow's sampling stage (PixArt-LCM 4 steps, DMD 1 step, YOSO 1 step with the informative prior
built from a reference image) against 20 steps of DPM++ 2M at cfg 4.5 (core KSampler) on the same model, same
256 px latent and same text conditioning, interleaved, median of N runs, under torch.inference_mode() like
ComfyUI. Reports the time ratio and the ratio of model evaluations (samples through the network; cfg 4.5 puts
cond + uncond through each step). Target: time ratio within 10% of the evaluation ratio.

    python bench/few_step.py [--runs 3] [--px 256]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pixart_delta.tools.comfy_runtime import InProcessComfy, require_comfyui  # noqa: E402
from pixart_delta.tiny import pixart as fx  # noqa: E402
from pixart_delta.tiny.sd_vae import write_sd_vae  # noqa: E402


class EvalCounter:
    def __init__(self, module):
        self.samples = 0
        module.register_forward_pre_hook(self.hook)

    def hook(self, module, args):
        self.samples += args[0].shape[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--px", type=int, default=256)
    args = ap.parse_args()
    comfy_path = require_comfyui(why="the benchmark runs inside ComfyUI")
    tmp = Path(tempfile.mkdtemp(prefix="bench_few_step_"))
    InProcessComfy.get(comfy_path, models_dir=tmp / "models", output_dir=tmp / "out")

    import comfy.model_management as mm
    import comfy.sd
    import comfy.utils
    import nodes
    from comfy_extras.nodes_custom_sampler import SamplerCustom
    from pixart_delta.loaders.pixart_comfy import load_pixart_model
    from pixart_delta.nodes import few_step as fs

    path = fx.write_original(tmp / "PixArt-XL-2-512x512.safetensors",
                             fx.random_original(seed=0, **fx.FULL, micro=False, native_px=512, tokens=120))
    eps_model = load_pixart_model(path, weight_dtype="fp32")
    path.unlink()
    mm.load_models_gpu([eps_model])
    print(f"model weights resident: {eps_model.loaded_size() / 2**20:.0f} of {eps_model.model_size() / 2**20:.0f} MiB "
          f"(less means ComfyUI streams weights per forward: low memory)", flush=True)
    v_model = fs.PixArtPredictionType.execute(eps_model, "v_prediction").result[0]
    counter = EvalCounter(eps_model.model.diffusion_model)
    write_sd_vae(tmp / "vae.safetensors")
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(tmp / "vae.safetensors")))

    g = torch.Generator().manual_seed(0)
    lat = args.px // 8
    pos = [[torch.randn(1, 20, 4096, generator=g), {}]]
    neg = [[torch.randn(1, 1, 4096, generator=g), {}]]
    empty = {"samples": torch.zeros(1, 4, lat, lat)}
    reference_image = torch.rand(1, args.px, args.px, 3, generator=g)

    lcm_sigmas = fs.PixArtFewStepScheduler.execute(eps_model, "lcm", 4).result[0]
    dmd_sigmas = fs.PixArtFewStepScheduler.execute(eps_model, "dmd").result[0]
    yoso_sigmas = fs.PixArtFewStepScheduler.execute(v_model, "yoso").result[0]
    lcm = fs.PixArtFewStepSampler.execute("lcm").result[0]
    dmd = fs.PixArtFewStepSampler.execute("dmd").result[0]

    def reference():
        nodes.KSampler().sample(eps_model, 1, 20, 4.5, "dpmpp_2m", "sgm_uniform", pos, neg, empty)

    def custom(model, sampler, sigmas, latent):
        SamplerCustom().sample(model, True, 1, 1.0, pos, neg, sampler, sigmas, latent)

    prior_time = []

    def yoso_ipi():
        t = time.perf_counter()
        prior = fs.PixArtYOSOPriorLatent.execute(1, 0, image=reference_image, vae=vae).result[0]
        prior_time.append(time.perf_counter() - t)
        custom(v_model, lcm, yoso_sigmas, prior)

    contenders = {
        "dpmpp_2m_20_cfg4.5": reference,
        "lcm_4step": lambda: custom(eps_model, lcm, lcm_sigmas, empty),
        "dmd_1step": lambda: custom(eps_model, dmd, dmd_sigmas, empty),
        "yoso_1step_ipi": yoso_ipi,
    }
    times = {k: [] for k in contenders}
    evals = {}
    with torch.inference_mode():
        contenders["dmd_1step"]()        # warm-up (the model is already resident)
        prior_time.clear()
        for r in range(args.runs):
            for name, fn in contenders.items():
                counter.samples = 0
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
                evals[name] = counter.samples
            print(f"run {r + 1}/{args.runs}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True)

    shutil.rmtree(tmp, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    ref = "dpmpp_2m_20_cfg4.5"
    print(f"\nfull-size random PixArt, {args.px} px, fp32, CPU ({torch.get_num_threads()} threads), median of {args.runs}")
    print(f"{'workflow':22s} {'median s':>9s} {'evals':>6s} {'time ratio':>11s} {'eval ratio':>11s} {'time/eval ratio':>16s}")
    for k in contenders:
        tr, er = med[k] / med[ref], evals[k] / evals[ref]
        print(f"{k:22s} {med[k]:9.2f} {evals[k]:6d} {tr:11.4f} {er:11.4f} {tr / er:16.3f}")
    p = statistics.median(prior_time)
    print(f"yoso_1step_ipi includes the prior node (VAE encode of the {args.px} px reference): median {p:.2f}s; "
          f"sampling alone {med['yoso_1step_ipi'] - p:.2f}s -> time ratio {(med['yoso_1step_ipi'] - p) / med[ref]:.4f}")


if __name__ == "__main__":
    main()
