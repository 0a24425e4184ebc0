"""The published PixArt variants and what each needs at sampling time (docs/facts/pixart.md §1)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    name: str            # id used by the `variant` override
    title: str
    family: str          # "alpha" (SD1 latents, 120 tokens) or "sigma" (SDXL latents, 300 tokens)
    native_px: int
    pe_interpolation: float
    micro_condition: bool
    prediction: str      # "eps" or "v"
    sampling: str        # "standard", "lcm", "dmd", "yoso": what the few-step nodes default to
    files: str           # what users have, for errors and the README

    @property
    def latent_format(self) -> str:
        return "SD15" if self.family == "alpha" else "SDXL"

    @property
    def tokens(self) -> int:
        return 120 if self.family == "alpha" else 300

    @property
    def base_size(self) -> int:
        """Native latent size in patches (px / 8 / 2)."""
        return self.native_px // 16


VARIANTS: dict[str, Variant] = {v.name: v for v in [
    Variant("alpha_256", "PixArt-α 256", "alpha", 256, 1.0, False, "eps", "standard", "PixArt-XL-2-256x256.pth"),
    Variant("alpha_512", "PixArt-α 512", "alpha", 512, 1.0, False, "eps", "standard", "PixArt-XL-2-512x512.pth / diffusers"),
    Variant("alpha_1024_ms", "PixArt-α 1024-MS", "alpha", 1024, 2.0, True, "eps", "standard", "PixArt-XL-2-1024-MS.pth / diffusers"),
    Variant("sigma_256", "PixArt-Σ 256", "sigma", 256, 0.5, False, "eps", "standard", "PixArt-Sigma-XL-2-256x256.pth / diffusers"),
    Variant("sigma_512", "PixArt-Σ 512-MS", "sigma", 512, 1.0, False, "eps", "standard", "PixArt-Sigma-XL-2-512-MS.pth / diffusers"),
    Variant("sigma_1024", "PixArt-Σ 1024-MS", "sigma", 1024, 2.0, False, "eps", "standard", "PixArt-Sigma-XL-2-1024-MS.pth / diffusers"),
    Variant("sigma_2k", "PixArt-Σ 2K-MS", "sigma", 2048, 4.0, False, "eps", "standard", "PixArt-Sigma-XL-2-2K-MS.pth / diffusers"),
    Variant("lcm_1024", "PixArt-LCM 1024", "alpha", 1024, 2.0, True, "eps", "lcm", "PixArt-LCM-XL-2-1024-MS (diffusers)"),
    Variant("dmd_512", "PixArt-DMD 512", "alpha", 512, 1.0, False, "eps", "dmd", "PixArt-Alpha-DMD-XL-2-512x512 (diffusers .bin)"),
    Variant("yoso_512", "YOSO-PixArt 512", "alpha", 512, 1.0, False, "v", "yoso", "yoso_pixart512 (diffusers)"),
    Variant("yoso_1024", "YOSO-PixArt 1024", "alpha", 1024, 2.0, True, "v", "yoso", "yoso_pixart1024 (diffusers)"),
    Variant("controlnet_512", "PixArt-δ ControlNet 512 (base)", "alpha", 512, 1.0, False, "eps", "standard", "PixArt-XL-2-512-ControlNet.pth"),
    Variant("controlnet_1024", "PixArt-δ ControlNet 1024 (base)", "alpha", 1024, 2.0, True, "eps", "standard", "PixArt-XL-2-1024-ControlNet.pth"),
]}

# Words in a file or folder name that identify a variant where the weights cannot (checked in order).
# "900m": the 42-block community models (ptx0/pixart-900m-1024-ft, terminusresearch/pixart-900m-1024-ft-*) are
# PixArt-Σ fine-tunes (bghira/SimpleTuner simpletuner/helpers/models/pixart/model.py loads them as Σ).
NAME_HINTS: list[tuple[str, str]] = [
    ("controlnet", "controlnet"), ("yoso", "yoso"), ("dmd", "dmd"), ("lcm", "lcm"),
    ("sigma", "sigma"), ("2k", "sigma"), ("900m", "sigma"), ("alpha", "alpha"), ("pixart-xl-2", "alpha"),
]
