"""Few-step timestep schedules for PixArt-LCM, PixArt-DMD and YOSO-PixArt (docs/facts/pixart.md §6).

Pure Python/torch: the nodes turn these timesteps into SIGMAS with the MODEL's own model_sampling.
"""
from __future__ import annotations

import re

import numpy as np
import torch

NUM_TRAIN_TIMESTEPS = 1000
LCM_ORIGIN_STEPS = 50
LCM_MAX_STEPS = 8
DEFAULT_TIMESTEP = {"dmd": 400, "yoso": 999}
MODES = ("lcm", "dmd", "yoso", "custom")
SPACINGS = ("diffusers", "pixart")


def alphas_cumprod(num_train: int = NUM_TRAIN_TIMESTEPS, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """alpha_bar(t) of PixArt's linear beta schedule (float64)."""
    betas = torch.linspace(beta_start, beta_end, num_train, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


def sigma_of(t: int, num_train: int = NUM_TRAIN_TIMESTEPS) -> float:
    """ComfyUI's (variance-exploding) sigma for a discrete timestep: sqrt((1 - alpha_bar) / alpha_bar)."""
    ab = alphas_cumprod(num_train)[int(t)]
    return float(((1 - ab) / ab).sqrt())


def lcm_origin_timesteps(origin_steps: int = LCM_ORIGIN_STEPS, num_train: int = NUM_TRAIN_TIMESTEPS) -> np.ndarray:
    """The distillation schedule LCM was trained on: 19, 39, ..., 999 for 50 origin steps."""
    k = num_train // origin_steps
    return np.arange(1, origin_steps + 1) * k - 1


def lcm_timesteps(steps: int, spacing: str = "diffusers", origin_steps: int = LCM_ORIGIN_STEPS,
                  num_train: int = NUM_TRAIN_TIMESTEPS) -> list[int]:
    """Timesteps LCM visits for `steps` steps.

    spacing "diffusers": diffusers' LCMScheduler (4 steps -> 999, 759, 499, 259);
    "pixart": PixArt-δ's own scheduler, every (origin // steps)-th origin step (4 -> 999, 759, 519, 279).
    """
    if not isinstance(steps, (int, np.integer)) or not 1 <= steps <= origin_steps:
        raise ValueError(f"LCM steps must be an integer from 1 to {origin_steps} (the origin schedule length); got {steps!r}")
    if spacing not in SPACINGS:
        raise ValueError(f"unknown LCM spacing {spacing!r}; expected one of {', '.join(SPACINGS)}")
    origin = lcm_origin_timesteps(origin_steps, num_train)
    if spacing == "pixart":
        skip = len(origin) // steps
        picked = origin[::-skip][:steps]
    else:
        idx = np.floor(np.linspace(0, len(origin), num=steps, endpoint=False)).astype(np.int64)
        picked = origin[::-1][idx]
    return [int(t) for t in picked]


def parse_timesteps(text: str, num_train: int = NUM_TRAIN_TIMESTEPS) -> list[int]:
    """'999, 759, 499, 259' -> [999, 759, 499, 259]; strictly decreasing integers in [0, num_train - 1]."""
    parts = [p for p in re.split(r"[\s,;]+", str(text).strip()) if p]
    if not parts:
        raise ValueError("custom timesteps: the list is empty; give decreasing integers such as '999, 759, 499, 259'")
    out = []
    for p in parts:
        try:
            value = float(p)
        except ValueError:
            raise ValueError(f"custom timesteps: {p!r} is not a number; expected integers such as '999, 759, 499, 259'") from None
        if value != int(value):
            raise ValueError(f"custom timesteps: {p} is not an integer timestep")
        out.append(int(value))
    bad = [t for t in out if not 0 <= t < num_train]
    if bad:
        raise ValueError(f"custom timesteps: {bad} outside the model's range 0..{num_train - 1}")
    if any(b >= a for a, b in zip(out, out[1:])):
        raise ValueError(f"custom timesteps must be strictly decreasing (noisiest first); got {out}")
    return out


def few_step_timesteps(mode: str, steps: int = 4, spacing: str = "diffusers", timestep: int | None = None,
                       custom: str = "") -> list[int]:
    """Timesteps for a few-step mode: lcm (1-8 steps), dmd (one step at `timestep`, default 400),
    yoso (one step at 999), custom (a list)."""
    if mode == "lcm":
        if not 1 <= steps <= LCM_MAX_STEPS:
            raise ValueError(f"LCM steps must be from 1 to {LCM_MAX_STEPS}; got {steps}")
        return lcm_timesteps(steps, spacing)
    if mode == "dmd":
        t = DEFAULT_TIMESTEP["dmd"] if timestep is None else int(timestep)
        if not 1 <= t < NUM_TRAIN_TIMESTEPS:
            raise ValueError(f"DMD timestep must be from 1 to {NUM_TRAIN_TIMESTEPS - 1}; got {t}")
        return [t]
    if mode == "yoso":
        return [DEFAULT_TIMESTEP["yoso"]]
    if mode == "custom":
        return parse_timesteps(custom)
    raise ValueError(f"unknown few-step mode {mode!r}; expected one of {', '.join(MODES)}")
