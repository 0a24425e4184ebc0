"""A YOSO SD1.5 LoRA stand-in in the released layout (see loaders/sd15_lora.py): kohya names over the diffusers
SD1.5 UNet modules YOSO's LoraConfig targets, rank 64, fp32, `alpha` 8, written with torch.save (the published file
is a pickle; the manifest stores it as loras/yoso_sd15_lora.pt). Module names and shapes come from diffusers'
UNet2DConditionModel at SD1.5's configuration on the meta device. To stay small, all but two modules hold zeros
stored once and broadcast (stride 0); those two get random values so the LoRA changes the UNet."""
from __future__ import annotations

from pathlib import Path

import torch

from ..loaders.sd15_lora import YOSO_ALPHA, YOSO_FILE, YOSO_RANK, YOSO_TARGETS, kohya_name

LORA_FILE = f"loras/{YOSO_FILE}"
SD15_DIFFUSERS_UNET = {"sample_size": 64, "cross_attention_dim": 768}   # UNet2DConditionModel defaults = SD1.5
RANDOM_MODULES = ("down_blocks.0.resnets.0.conv1", "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k")


def targeted_modules(targets=YOSO_TARGETS) -> dict[str, torch.nn.Module]:
    """diffusers module path -> module (meta device) that PEFT's target_modules matching picks: the name equals a
    target or ends with '.' + target."""
    import diffusers
    with torch.device("meta"):
        unet = diffusers.UNet2DConditionModel(**SD15_DIFFUSERS_UNET)
    return {name: m for name, m in unet.named_modules()
            if any(name == t or name.endswith("." + t) for t in targets)}


def lora_shapes(rank: int = YOSO_RANK) -> dict[str, tuple]:
    """kohya key -> shape for YOSO's LoRA: lora_down as PEFT's lora_A (Linear(in, r) / Conv2d(in, r, k)), lora_up as
    lora_B (Linear(r, out) / Conv2d(r, out, 1)), alpha a scalar."""
    shapes = {}
    for path, m in targeted_modules().items():
        name = kohya_name(path)
        if isinstance(m, torch.nn.Linear):
            shapes[f"{name}.lora_down.weight"] = (rank, m.in_features)
            shapes[f"{name}.lora_up.weight"] = (m.out_features, rank)
        elif isinstance(m, torch.nn.Conv2d):
            shapes[f"{name}.lora_down.weight"] = (rank, m.in_channels, *m.kernel_size)
            shapes[f"{name}.lora_up.weight"] = (m.out_channels, rank, 1, 1)
        else:
            raise TypeError(f"{path}: {type(m).__name__} is no LoRA target")
        shapes[f"{name}.alpha"] = ()
    return shapes


def write_yoso_sd15_lora(path: Path, seed: int = 5) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    zero = torch.zeros(())
    randomized = {kohya_name(p) for p in RANDOM_MODULES}
    sd = {}
    for key, shape in lora_shapes().items():
        if key.endswith(".alpha"):
            sd[key] = torch.tensor(YOSO_ALPHA)
        elif key.split(".")[0] in randomized:
            sd[key] = 0.05 * torch.randn(shape, generator=g)
        else:
            sd[key] = zero.expand(shape)
    torch.save(sd, str(path))
    return path


FILES = {LORA_FILE: write_yoso_sd15_lora}
