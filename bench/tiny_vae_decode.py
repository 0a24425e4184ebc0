"""Tiny VAE decode vs the core full VAE decode, 512 px, CPU fp32, random weights of the real architectures.

Full: core VAELoader + VAEDecode on an SD VAE (ldm layout of vae-ft-mse-840000, 49.5 M decoder parameters).
Tiny: our PixArt SDXS Tiny VAE Decode node on an SDXS AutoencoderTiny file (1.2 M decoder parameters), and the same
file through PixArt Tiny VAE Loader + core VAEDecode. Interleaved, median of N runs, under torch.inference_mode() like
ComfyUI. Target: tiny at least 15x faster (the MACs differ 18x).

    python bench/tiny_vae_decode.py [--runs 5] [--px 512]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pixart_delta.tools.comfy_runtime import InProcessComfy, require_comfyui  # noqa: E402
from pixart_delta.tiny.sd_vae import write_sd_vae  # noqa: E402
from pixart_delta.tiny.tiny_vae import write_autoencoder_tiny  # noqa: E402
from _timing import interleaved_times  # noqa: E402



def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--px", type=int, default=512)
    args = ap.parse_args()
    comfy_path = require_comfyui(why="the benchmark runs inside ComfyUI")
    tmp = Path(tempfile.mkdtemp(prefix="bench_tiny_vae_"))
    try:
        models = tmp / "models"
        InProcessComfy.get(comfy_path, models_dir=models, output_dir=tmp / "out")
        import nodes
        write_sd_vae(models / "vae" / "vae-ft-mse-840000-ema-pruned.safetensors")
        write_autoencoder_tiny(models / "vae_approx" / "sdxs-512-0.9_tiny_vae.safetensors")
        import comfy.model_management as mm
        from pixart_delta.nodes.tiny_vae import PixArtSDXSTinyVAEDecode, PixArtTinyVAELoader

        full_vae = nodes.VAELoader().load_vae("vae-ft-mse-840000-ema-pruned.safetensors")[0]
        tiny_vae = PixArtTinyVAELoader.execute("sdxs-512-0.9_tiny_vae.safetensors", "auto").result[0]
        latent = {"samples": torch.randn(1, 4, args.px // 8, args.px // 8, generator=torch.Generator().manual_seed(0))}
        runs = {"full VAE (core VAEDecode)": lambda: nodes.VAEDecode().decode(full_vae, latent)[0],
                "tiny (PixArt SDXS Tiny VAE Decode)": lambda: PixArtSDXSTinyVAEDecode.execute(
                    latent, "sdxs-512-0.9_tiny_vae.safetensors", "auto").result[0],
                "tiny (PixArt Tiny VAE Loader + core VAEDecode)": lambda: nodes.VAEDecode().decode(tiny_vae, latent)[0]}
        def right_size(name, image):
            assert image.shape == (1, args.px, args.px, 3), (name, image.shape)
        with torch.inference_mode():
            times = interleaved_times(runs, args.runs, check=right_size)
        med = {k: statistics.median(v) for k, v in times.items()}
        full = med["full VAE (core VAEDecode)"]
        print(f"\nVAE decode {args.px}x{args.px}, batch 1, CPU fp32, {torch.get_num_threads()} threads, "
              f"median of {args.runs} (device {mm.get_torch_device()}):")
        for name, m in med.items():
            print(f"  {name:42s} {m:8.3f} s   {full / m:6.1f}x vs full")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
