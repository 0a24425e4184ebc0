"""Few-step sampling cost vs the standard schedule, full-size random PixArt (hidden 1152, depth 28) and SD1.5-family
UNets, CPU fp32.

Each few-step workflow's sampling stage (PixArt-LCM 4 steps, DMD 1 step, YOSO 1 step with the informative prior
built from a reference image) against 20 steps of DPM++ 2M at cfg 4.5 (core KSampler) on the same model, same
256 px latent and same text conditioning, interleaved, median of N runs, under torch.inference_mode() like
ComfyUI. Reports the time ratio and the ratio of model evaluations (samples through the network; cfg 4.5 puts
cond + uncond through each step). Target: time ratio within 10% of the evaluation ratio.

SD1.5 family (--family sd15): the bundled SD1.5 workflows' sampling stages on full-size random UNets against 20 steps
of UniPC (uni_pc_bh2, normal) at cfg 7.5 on the SD1.5 UNet, as the ControlNet++ workflows sample (40 evaluations):
YOSO SD1.5 LoRA 2 steps (LCM, cfg 1.5: 4 evaluations) and 1 step from the informative prior (2 evaluations, the prior
node's VAE encode reported apart), and SDXS-512-DreamShaper one step at cfg 1 (1 evaluation of the SDXS UNet, which
is smaller than SD1.5's: its time ratio is expected BELOW its evaluation ratio, by the UNets' cost ratio, also shown).

    python bench/few_step.py [--runs 3] [--px 256] [--family pixart|sd15|all]
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
    ap.add_argument("--family", choices=("pixart", "sd15", "all"), default="all")
    args = ap.parse_args()
    comfy_path = require_comfyui(why="the benchmark runs inside ComfyUI")
    tmp = Path(tempfile.mkdtemp(prefix="bench_few_step_"))
    InProcessComfy.get(comfy_path, models_dir=tmp / "models", output_dir=tmp / "out")
    try:
        if args.family in ("pixart", "all"):
            pixart_rows(args, tmp)
        if args.family in ("sd15", "all"):
            sd15_rows(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def timed_rounds(contenders: dict, counters: list, runs: int, warm_up) -> tuple[dict, dict]:
    """Interleaved runs: {name: [seconds]} and {name: samples through the counted networks in one run}."""
    times = {k: [] for k in contenders}
    evals = {}
    with torch.inference_mode():
        warm_up()
        for r in range(runs):
            for name, fn in contenders.items():
                for c in counters:
                    c.samples = 0
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
                evals[name] = sum(c.samples for c in counters)
            print(f"run {r + 1}/{runs}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True)
    return times, evals


def print_table(title: str, contenders, times: dict, evals: dict, ref: str) -> dict:
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n{title}")
    print(f"{'workflow':26s} {'median s':>9s} {'evals':>6s} {'time ratio':>11s} {'eval ratio':>11s} {'time/eval ratio':>16s}")
    for k in contenders:
        tr, er = med[k] / med[ref], evals[k] / evals[ref]
        print(f"{k:26s} {med[k]:9.2f} {evals[k]:6d} {tr:11.4f} {er:11.4f} {tr / er:16.3f}")
    return med


def pixart_rows(args, tmp: Path):
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

    def warm_up():
        contenders["dmd_1step"]()        # the model is already resident
        prior_time.clear()

    times, evals = timed_rounds(contenders, [counter], args.runs, warm_up)
    med = print_table(f"full-size random PixArt, {args.px} px, fp32, CPU ({torch.get_num_threads()} threads), "
                      f"median of {args.runs}", contenders, times, evals, "dpmpp_2m_20_cfg4.5")
    ref = "dpmpp_2m_20_cfg4.5"
    p = statistics.median(prior_time)
    print(f"yoso_1step_ipi includes the prior node (VAE encode of the {args.px} px reference): median {p:.2f}s; "
          f"sampling alone {med['yoso_1step_ipi'] - p:.2f}s -> time ratio {(med['yoso_1step_ipi'] - p) / med[ref]:.4f}")


def sd15_rows(args, tmp: Path):
    import comfy.model_management as mm
    import comfy.sd
    import comfy.utils
    import nodes
    from comfy_extras.nodes_custom_sampler import BasicScheduler, KSamplerSelect, SamplerCustom
    from comfy_extras.nodes_model_advanced import ModelSamplingDiscrete
    from pixart_delta.nodes import few_step as fs
    from pixart_delta.tiny import sd15, sdxs

    ckpt = sd15.write_sd15_checkpoint(tmp / "sd15.safetensors")
    sd15_model, _, vae = comfy.sd.load_checkpoint_guess_config(str(ckpt), output_vae=True, output_clip=False)[:3]
    # its own copy: on a shared one ComfyUI would patch / unpatch the LoRA weights at every switch of contender
    yoso_model = comfy.sd.load_checkpoint_guess_config(str(ckpt), output_vae=False, output_clip=False)[0]
    try:
        from pixart_delta.tiny import yoso_sd15
        lora_path = yoso_sd15.write_yoso_sd15_lora(tmp / "yoso_sd15_lora.pt")
        lora = comfy.utils.load_torch_file(str(lora_path), safe_load=True)
        yoso_model = comfy.sd.load_lora_for_models(yoso_model, None, lora, 1.0, 0.0)[0]
    except (ImportError, AttributeError) as e:
        print(f"(no YOSO LoRA writer: {e}; YOSO rows on the bare SD1.5 UNet, same cost)")
    yoso_model = ModelSamplingDiscrete().patch(yoso_model, "lcm", False)[0]
    sdxs_path = sdxs.write_dreamshaper_unet(tmp / "sdxs_dreamshaper_unet.safetensors")
    sdxs_model = comfy.sd.load_diffusion_model(str(sdxs_path))
    mm.load_models_gpu([sd15_model, yoso_model, sdxs_model])
    sd15_counter = EvalCounter(sd15_model.model.diffusion_model)
    yoso_counter = EvalCounter(yoso_model.model.diffusion_model)
    sdxs_counter = EvalCounter(sdxs_model.model.diffusion_model)

    g = torch.Generator().manual_seed(0)
    lat = args.px // 8
    pos = [[torch.randn(1, 77, 768, generator=g), {}]]
    neg = [[torch.randn(1, 77, 768, generator=g), {}]]
    empty = {"samples": torch.zeros(1, 4, lat, lat)}
    reference_image = torch.rand(1, args.px, args.px, 3, generator=g)
    lcm = KSamplerSelect().get_sampler("lcm")[0]
    one_step = BasicScheduler().get_sigmas(yoso_model, "sgm_uniform", 1, 1.0)[0]
    prior_time = []

    def yoso_ipi():
        t = time.perf_counter()
        prior = fs.PixArtYOSOPriorLatent.execute(1, 0, image=reference_image, vae=vae).result[0]
        prior_time.append(time.perf_counter() - t)
        SamplerCustom().sample(yoso_model, True, 1, 1.5, pos, neg, lcm, one_step, prior)

    contenders = {
        "sd15_unipc_20_cfg7.5": lambda: nodes.KSampler().sample(sd15_model, 1, 20, 7.5, "uni_pc_bh2", "normal",
                                                                pos, neg, empty),
        "yoso_sd15_2step_cfg1.5": lambda: nodes.KSampler().sample(yoso_model, 1, 2, 1.5, "lcm", "sgm_uniform",
                                                                  pos, neg, empty),
        "yoso_sd15_1step_ipi": yoso_ipi,
        "sdxs_dreamshaper_1step": lambda: nodes.KSampler().sample(sdxs_model, 1, 1, 1.0, "euler", "normal",
                                                                  pos, neg, empty),
    }

    def warm_up():
        for fn in contenders.values():
            fn()
        prior_time.clear()

    times, evals = timed_rounds(contenders, [sd15_counter, yoso_counter, sdxs_counter], args.runs, warm_up)
    ref = "sd15_unipc_20_cfg7.5"
    med = print_table(f"full-size random SD1.5-family UNets, {args.px} px, fp32, CPU ({torch.get_num_threads()} threads), "
                      f"median of {args.runs}", contenders, times, evals, ref)
    p = statistics.median(prior_time)
    print(f"yoso_sd15_1step_ipi includes the prior node (VAE encode of the {args.px} px reference): median {p:.2f}s; "
          f"sampling alone {med['yoso_sd15_1step_ipi'] - p:.2f}s -> time ratio "
          f"{(med['yoso_sd15_1step_ipi'] - p) / med[ref]:.4f}")
    unet_cost = (med["sdxs_dreamshaper_1step"] / evals["sdxs_dreamshaper_1step"]) / (med[ref] / evals[ref])
    print(f"SDXS-DreamShaper UNet vs SD1.5 UNet, time per evaluation incl. sampler overhead: {unet_cost:.3f}")


if __name__ == "__main__":
    main()
