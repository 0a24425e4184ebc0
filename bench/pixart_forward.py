"""PixArt forward at full size (hidden 1152, depth 28, random weights), 256 px, batch 2, CPU: our ComfyUI MODEL's
apply_model (our network alone when no ComfyUI checkout is found) loaded with weight_dtype --dtype vs diffusers'
PixArtTransformer2DModel in fp32 on the same weights, interleaved runs, median of N. Besides the ratio of the
medians it prints the median of the per-round ratios, which cancels load drifts between rounds, and the relative
error ||eps_ours - eps_diffusers|| / ||eps_diffusers|| of the noise prediction (with --dtype bf16 also that of
diffusers' own model cast to bf16, for scale).

    python bench/pixart_forward.py [--runs 5] [--px 256] [--dtype fp32|bf16] [--attention all] [--threads N]
Target: ratio ours / diffusers <= 1.0 in fp32; <= 0.5 in bf16 on a CPU with bf16 instructions (avx512_bf16).
--threads sets torch's thread count (1 gives steadier numbers on a shared machine).
--attention all adds one contender per attention function ComfyUI registers here (comfy/ldm/modules/attention.py
REGISTERED_ATTENTION_FUNCTIONS: pytorch, split, sub_quad on CPU), each forced through an
optimized_attention_override as an attention node would install it; "ours (ComfyUI MODEL)" is ComfyUI's selection.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pixart_delta.tools.comfy_runtime import InProcessComfy, find_comfyui  # noqa: E402
from pixart_delta.tiny import pixart as fx  # noqa: E402
from pixart_delta.loaders.pixart_keys import original_to_diffusers  # noqa: E402
from _timing import interleaved_times, rel_norm  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--px", type=int, default=256)
    ap.add_argument("--attention", choices=["selected", "all"], default="selected",
                    help="all: also time the MODEL with each attention function ComfyUI registers")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="weight_dtype of our MODEL")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from diffusers import PixArtTransformer2DModel
    kw = dict(**fx.FULL, micro=False, native_px=512, tokens=120)
    sd = fx.random_original(seed=0, **kw)
    tmp = Path(tempfile.mkdtemp())
    path = fx.write_original(tmp / "PixArt-XL-2-512x512.pth", sd)

    ref = PixArtTransformer2DModel.from_config(fx.diffusers_config(**kw, interpolation_scale=1)).eval()
    ref.load_state_dict(original_to_diffusers(sd))

    # two contenders only, so each round's pair runs back to back and sees the same machine load
    comfy_path = find_comfyui()
    if comfy_path is not None:
        InProcessComfy.get(comfy_path, models_dir=tmp / "models", output_dir=tmp / "out")
        from pixart_delta.loaders.pixart_comfy import load_pixart_model
        import comfy.model_management as mm
        patcher = load_pixart_model(path, weight_dtype=args.dtype)
        mm.load_models_gpu([patcher])
        model = patcher.model
    else:
        print("no ComfyUI checkout: timing our network instead of the ComfyUI MODEL")
        from pixart_delta.loaders.pixart import inspect_checkpoint
        from pixart_delta.models.pixart import PixArt
        from pixart_delta.models.linear import cpu_computes_bf16
        ckpt = inspect_checkpoint(path)
        bf16 = args.dtype == "bf16" and cpu_computes_bf16()
        net = PixArt(**ckpt.unet_config, dtype=torch.bfloat16 if bf16 else None,
                     residual_dtype=torch.float32 if bf16 else None).eval()
        net.load_state_dict(ckpt.state_dict)
        del ckpt
    del sd

    g = torch.Generator().manual_seed(0)
    lat = args.px // 8
    x = torch.randn(2, 4, lat, lat, generator=g)
    ctx = torch.randn(2, 120, 4096, generator=g)
    t = torch.tensor([999.0, 999.0])
    # diffusers gets the network input the MODEL makes of x (ComfyUI's calculate_input), so both predict the same eps
    xin = model.model_sampling.calculate_input(model.model_sampling.sigma(t), x) if comfy_path is not None else x

    def diffusers_eps(net=ref, dtype=torch.float32):
        return net(xin.to(dtype), encoder_hidden_states=ctx.to(dtype), timestep=t,
                   added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample[:, :4].float()

    contenders = {"diffusers": diffusers_eps}
    if comfy_path is not None:
        sigma = model.model_sampling.sigma(t)
        contenders["ours (ComfyUI MODEL)"] = lambda: model.apply_model(x, sigma, c_crossattn=ctx)

        def ours_eps():   # apply_model returns x - sigma * eps
            return (x - model.apply_model(x, sigma, c_crossattn=ctx)) / sigma[:, None, None, None]
        if args.attention == "all":
            import comfy.ldm.modules.attention as attn
            for name, fn in attn.REGISTERED_ATTENTION_FUNCTIONS.items():
                opts = {"optimized_attention_override": lambda _selected, *a, _fn=fn, **kw: _fn(*a, **kw)}
                contenders[f"ours, attention {name}"] = \
                    lambda opts=opts: model.apply_model(x, sigma, c_crossattn=ctx, transformer_options=opts)
    else:
        contenders["ours (network)"] = lambda: net(x, t, ctx)

        def ours_eps():
            return net(x, t, ctx).float()

    with torch.inference_mode():
        want = diffusers_eps()
        errors = {"ours": rel_norm(ours_eps(), want)}
        times = interleaved_times(contenders, args.runs, rotate=True)
        if args.dtype == "bf16":   # after the timings: cast in place, no second copy
            errors["diffusers cast to bf16"] = rel_norm(diffusers_eps(ref.to(torch.bfloat16), torch.bfloat16), want)
    base = times["diffusers"]
    print(f"PixArt forward, hidden 1152 depth 28, {args.px} px, batch 2, ours {args.dtype} vs diffusers fp32, "
          f"{torch.get_num_threads()} threads, median of {args.runs}")
    print("  relative error of the noise prediction vs diffusers fp32: "
          + ", ".join(f"{k} {v:.2e}" for k, v in errors.items()))
    for name, ts in times.items():
        med = statistics.median(ts)
        paired = statistics.median(a / b for a, b in zip(ts, base))
        print(f"  {name:26s} {med:7.3f} s   ratio of medians {med / statistics.median(base):.3f}   "
              f"median per-round ratio {paired:.3f}")


if __name__ == "__main__":
    main()
