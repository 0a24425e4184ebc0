"""PixArt-δ ControlNet cost: one controlled vs one uncontrolled sampling step, full size, CPU fp32.

Full-size random PixArt-δ 1024 ControlNet file (hidden 1152, depth 28, 13 copies, 668 keys) loaded through the
pack's loaders into ComfyUI: its base as the MODEL, the branch as the CONTROL_NET (PixArt ControlNet Apply with
a hint image). A step = ComfyUI's whole path for one Euler step (SamplerCustom, cfg 1) on a batch of 2 latents
at --px, interleaved controlled / uncontrolled, median of --runs, under torch.inference_mode() like ComfyUI.
Target: ratio <= 1.5 (13 extra blocks of 28 plus 14 projections).

--dtype bf16: the same controlled step with the MODEL and the ControlNet loaded with weight_dtype bf16 against the
controlled step in fp32 (diffusers has no PixArt-δ ControlNet; our fp32 step matches the reference formula to 1e-4,
tests/test_controlnet_parity.py), both as we run it (oneDNN linears, models/linear.py) and with the F.linear (MKL)
kernels diffusers' fp32 models use, interleaved; and the relative error of the step's noise prediction
(eps = (x - denoised) / sigma) against fp32. Target: bf16 / fp32-with-diffusers'-kernels <= 0.5 on a CPU with bf16
instructions (avx512_bf16). --threads sets torch's thread count (1 gives steadier numbers on a shared machine).

    python bench/controlnet.py [--runs 5] [--px 256] [--batch 2] [--dtype fp32|bf16] [--threads N]
"""
from __future__ import annotations

import argparse
import gc
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pixart_delta.tools.comfy_runtime import InProcessComfy, require_comfyui  # noqa: E402
from pixart_delta.tiny import pixart as fx
from pixart_delta.tiny.pixart_controlnet import random_controlnet_file  # noqa: E402
from pixart_delta.tiny.sd_vae import write_sd_vae  # noqa: E402
from _timing import rel_norm  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--px", type=int, default=256)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32",
                    help="bf16: controlled step in bf16 vs in fp32 instead of controlled vs uncontrolled")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    comfy_path = require_comfyui(why="the benchmark runs inside ComfyUI")
    tmp = Path(tempfile.mkdtemp(prefix="bench_controlnet_"))
    InProcessComfy.get(comfy_path, models_dir=tmp / "models", output_dir=tmp / "out")

    import comfy.model_management as mm
    import comfy.samplers
    import comfy.sd
    import comfy.utils
    from comfy_extras.nodes_custom_sampler import SamplerCustom
    from pixart_delta.loaders.pixart_controlnet_comfy import load_pixart_controlnet
    from pixart_delta.loaders.pixart_comfy import load_pixart_model
    from pixart_delta.nodes.controlnet import PixArtControlNetApply

    path = tmp / "PixArt-XL-2-1024-ControlNet.safetensors"
    sd = random_controlnet_file(seed=0)
    assert len(sd) == 668
    fx.save(path, sd)
    del sd
    gc.collect()
    dtypes = ["fp32"] if args.dtype == "fp32" else ["fp32", "bf16"]
    models = {d: load_pixart_model(path, weight_dtype=d) for d in dtypes}
    controls = {d: load_pixart_controlnet(path, weight_dtype=d) for d in dtypes}
    path.unlink()
    write_sd_vae(tmp / "vae.safetensors")
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(tmp / "vae.safetensors")))
    mm.load_models_gpu([m for d in dtypes for m in (models[d], controls[d].control_model_wrapped)])

    g = torch.Generator().manual_seed(0)
    lat = args.px // 8
    pos = [[torch.randn(1, 120, 4096, generator=g), {}]]
    neg = [[torch.randn(1, 120, 4096, generator=g), {}]]
    hint = (torch.rand(1, args.px, args.px, 1, generator=g) > 0.9).float().expand(-1, -1, -1, 3)
    sampler = comfy.samplers.ksampler("euler")
    ms = models["fp32"].get_model_object("model_sampling")
    sigmas = torch.stack([ms.sigmas[500], torch.zeros(())])
    # a noised latent given as it is (add_noise off): one Euler step to sigma 0 returns the denoised latent
    noisy = torch.randn(args.batch, 4, lat, lat, generator=g) * sigmas[0]
    latent = {"samples": noisy}
    controlled = {d: PixArtControlNetApply.execute(pos, neg, controls[d], hint, vae, latent).result for d in dtypes}

    def step(model, p, n):
        return SamplerCustom().sample(model, False, 1, 1.0, p, n, sampler, sigmas, latent)[0]["samples"]

    if args.dtype == "fp32":
        contenders = {"uncontrolled": lambda: step(models["fp32"], pos, neg),
                      "controlled": lambda: step(models["fp32"], *controlled["fp32"])}
    else:
        import pixart_delta.models.linear as linears

        def step_with_mkl_linears():
            linears.ONEDNN = False
            try:
                return step(models["fp32"], *controlled["fp32"])
            finally:
                linears.ONEDNN = True

        contenders = {"controlled fp32, F.linear (diffusers' kernels)": step_with_mkl_linears,
                      "controlled fp32": lambda: step(models["fp32"], *controlled["fp32"]),
                      "controlled bf16": lambda: step(models["bf16"], *controlled["bf16"])}
        with torch.inference_mode():
            eps = {d: (noisy - step(models[d], *controlled[d])) / sigmas[0] for d in dtypes}
            eps_plain = (noisy - step(models["fp32"], pos, neg)) / sigmas[0]
        print(f"relative error of the controlled step's noise prediction, bf16 vs fp32: "
              f"{rel_norm(eps['bf16'], eps['fp32']):.2e} (the control changes it by "
              f"{rel_norm(eps_plain, eps['fp32']):.2f})", flush=True)
    times = {k: [] for k in contenders}
    with torch.inference_mode():
        for fn in contenders.values():   # warm-up
            fn()
        for r in range(args.runs):
            for name, fn in contenders.items():
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
            print(f"run {r + 1}/{args.runs}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\nfull-size random PixArt-δ 1024 ControlNet, {args.px} px, batch {args.batch}, {args.dtype}, CPU "
          f"({torch.get_num_threads()} threads), median of {args.runs}")
    print(", ".join(f"{k} step {v:.2f}s" for k, v in med.items()))
    names = list(times)
    for ref in names[:-1]:
        for new in names[names.index(ref) + 1:]:
            pair = [c / u for c, u in zip(times[new], times[ref])]
            print(f"{new} / {ref}: ratio of medians {med[new] / med[ref]:.3f}; per-run ratios (measured back to back) "
                  f"{', '.join(f'{r:.3f}' for r in pair)}, median {statistics.median(pair):.3f}")
    print(f"target: {'controlled / uncontrolled <= 1.5' if args.dtype == 'fp32' else 'bf16 / fp32 with diffusers kernels <= 0.5'}")


if __name__ == "__main__":
    main()
