"""CustomNet checkpoints (TencentARC/CustomNet `customnet_v1.pt`, `customnet_inpaint_v1.pt`): reading the whole
LatentDiffusion state_dict, splitting it into its parts and deriving each part's configuration from the tensor
shapes (so the same code reads the released files and reduced-width test files). No ComfyUI import here.

Key layout (`model.state_dict()` of customnet.customnet.CustomNet, loaded strictly by main/app.py):
  model.diffusion_model.*          SD1.5 UNet (ldm names), 8 input channels (inpaint: 12), with the extra
                                   bias-free attn2.to_k_text / attn2.to_v_text in every transformer block
  first_stage_model.*              ldm AutoencoderKL (KL-f8)
  cond_stage_model.model.visual.*  OpenAI CLIP ViT-L/14 image tower (the rest of that CLIP - token_embedding,
                                   positional_embedding, ln_final, text_projection, logit_scale - is unused)
  text_encoder.transformer.*       transformers CLIPTextModel (SD1.5's frozen CLIP-L), incl. embeddings.position_ids
  cc_projection.{weight,bias}      Linear(768 + 4 -> 768) (ldm/models/diffusion/ddpm.py)
  betas, alphas_cumprod, ...       the 12 DDPM schedule buffers (ldm/models/diffusion/ddpm.py register_schedule)
"""
from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .files import CheckpointError, load_state_dict

log = logging.getLogger(__name__)

CUSTOMNET_FILE = "customnet_v1.pt"
CUSTOMNET_INPAINT_FILE = "customnet_inpaint_v1.pt"

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
VISION_PREFIX = "cond_stage_model.model.visual."
CLIP_REST_PREFIX = "cond_stage_model.model."
TEXT_PREFIX = "text_encoder.transformer."
CC_PREFIX = "cc_projection."

# ldm/models/diffusion/ddpm.py DDPM.register_schedule: the persistent buffers (lvlb_weights is not persistent).
SCHEDULE_KEYS = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                 "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
                 "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
                 "posterior_mean_coef1", "posterior_mean_coef2")
# configs/config_customnet.yaml: linear_start, linear_end, timesteps (SD's "scaled linear" betas).
LINEAR_START, LINEAR_END, TIMESTEPS = 0.00085, 0.012, 1000
SCALE_FACTOR = 0.18215
UNET_HEADS = 8          # config: num_heads 8, num_head_channels -1 (head width = channels / 8 at every level)
CLIP_HEAD_WIDTH = 64    # OpenAI CLIP and CLIP-L text: 64-wide heads (ViT-L/14 vision 1024/16, text 768/12)

_TEXT_BRANCH = re.compile(r"^(input_blocks\.(\d+)|middle_block|output_blocks\.(\d+))\.\d+\.transformer_blocks\."
                          r"(\d+)\.attn2\.to_(k|v)_text\.weight$")


@dataclass
class CustomNetParts:
    """The checkpoint split by owner; tensors keep their names inside their part (prefix removed)."""
    path: Path
    unet: dict
    vae: dict
    vision: dict
    text: dict
    cc_projection: dict
    schedule: dict
    unused: list[str] = field(default_factory=list)

    @property
    def in_channels(self) -> int:
        return int(self.unet["input_blocks.0.0.weight"].shape[1])

    @property
    def inpaint(self) -> bool:
        return self.in_channels == 12

    @property
    def kind(self) -> str:
        return "CustomNet inpaint (12 input channels: noise + object canvas + background)" if self.inpaint \
            else "CustomNet (8 input channels: noise + object canvas)"


def text_branch_blocks(unet: dict) -> dict[tuple[str, int, int], str]:
    """(block name, block number, transformer index) as ComfyUI's UNet names its transformer blocks in
    transformer_options -> the module path of that block's attn2, for every block with to_k_text and to_v_text."""
    found: dict[tuple[str, int, int], dict[str, str]] = {}
    for k in unet:
        m = _TEXT_BRANCH.match(k)
        if not m:
            continue
        if m.group(2) is not None:
            block = ("input", int(m.group(2)))
        elif m.group(3) is not None:
            block = ("output", int(m.group(3)))
        else:
            block = ("middle", 0)
        key = (block[0], block[1], int(m.group(4)))
        found.setdefault(key, {})[m.group(5)] = k.rsplit(".", 2)[0]
    return {key: paths["k"] for key, paths in found.items() if set(paths) == {"k", "v"}}


def attn2_modules(unet: dict) -> list[str]:
    """Every transformer block's attn2 module path in the UNet state dict."""
    return sorted({k[:-len(".to_k.weight")] for k in unet if k.endswith(".attn2.to_k.weight")})


def split_checkpoint(sd: dict, path: str | os.PathLike) -> CustomNetParts:
    """The parts of a CustomNet state dict; CheckpointError naming the file when a part is missing."""
    path = Path(path)
    parts = {name: {} for name in ("unet", "vae", "vision", "text", "cc_projection", "schedule")}
    unused = []
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            unused.append(k)
        elif k.startswith(UNET_PREFIX):
            parts["unet"][k[len(UNET_PREFIX):]] = v
        elif k.startswith(VAE_PREFIX):
            parts["vae"][k[len(VAE_PREFIX):]] = v
        elif k.startswith(VISION_PREFIX):
            parts["vision"][k[len(VISION_PREFIX):]] = v
        elif k.startswith(TEXT_PREFIX):
            parts["text"][k[len(TEXT_PREFIX):]] = v
        elif k.startswith(CC_PREFIX):
            parts["cc_projection"][k[len(CC_PREFIX):]] = v
        elif k in SCHEDULE_KEYS:
            parts["schedule"][k] = v
        else:
            unused.append(k)
    result = CustomNetParts(path=path, unused=unused, **parts)
    check_parts(result, sd)
    return result


def _describe(path: Path, sd: dict, what: str) -> str:
    from .identify import identify
    ident = identify(sd)
    like = ident.looks_like()
    return f"{path}: {what}; found {ident.found()}{'; ' + like if like else ''}. Expected a CustomNet checkpoint " \
           f"({CUSTOMNET_FILE} or {CUSTOMNET_INPAINT_FILE}, TencentARC/CustomNet on Hugging Face)"


def check_parts(p: CustomNetParts, sd: dict):
    missing = [name for name, part, key in (
        ("the UNet (model.diffusion_model.*)", p.unet, "input_blocks.0.0.weight"),
        ("the VAE (first_stage_model.*)", p.vae, "encoder.conv_in.weight"),
        ("the CLIP image encoder (cond_stage_model.model.visual.*)", p.vision, "conv1.weight"),
        ("the text encoder (text_encoder.transformer.text_model.*)", p.text,
         "text_model.embeddings.token_embedding.weight"),
        ("cc_projection.weight", p.cc_projection, "weight"),
        ("cc_projection.bias", p.cc_projection, "bias")) if key not in part]
    if missing:
        raise CheckpointError(_describe(p.path, sd, "no " + ", no ".join(missing)))
    if p.in_channels not in (8, 12):
        raise CheckpointError(_describe(p.path, sd, f"the UNet takes {p.in_channels} input channels, "
                                        f"CustomNet takes 8 (12 for the inpaint model)"))
    attn2 = attn2_modules(p.unet)
    with_text = set(text_branch_blocks(p.unet).values())
    without = [m for m in attn2 if m not in with_text]
    if not with_text:
        raise CheckpointError(_describe(p.path, sd, "no attn2.to_k_text / to_v_text weights (the text "
                                        "branch); a Stable Zero123 or Zero-1-to-3 file goes into ComfyUI's Image Only "
                                        "Checkpoint Loader instead"))
    if without:
        raise CheckpointError(_describe(p.path, sd, f"{len(without)} of {len(attn2)} transformer blocks have "
                                        f"no to_k_text/to_v_text (first: {without[0]})"))
    ctx = p.unet[attn2[0] + ".to_k.weight"].shape[1]
    cc = p.cc_projection["weight"].shape
    if tuple(cc) != (ctx, ctx + 4):
        raise CheckpointError(_describe(p.path, sd, f"cc_projection.weight is {tuple(cc)}, expected "
                                        f"({ctx}, {ctx + 4}) for a {ctx}-wide cross-attention"))


def read_checkpoint(path: str | os.PathLike) -> CustomNetParts:
    """Reads a CustomNet .pt/.ckpt (torch.load weights_only=True) or .safetensors and splits it."""
    path = Path(path)
    sd = load_state_dict(path)
    if "state_dict" in sd and isinstance(sd["state_dict"], dict):   # a Lightning checkpoint around the same dict
        sd = sd["state_dict"]
    return split_checkpoint(sd, path)


# ---- configurations from the shapes ----

def vae_ddconfig(vae: dict) -> dict:
    """ldm AutoencoderKL's ddconfig for these weights (KL-f8 at the released size: ch 128, mult 1,2,4,4)."""
    ch = vae["encoder.conv_in.weight"].shape[0]
    levels = 1 + max(int(k.split(".")[2]) for k in vae if k.startswith("encoder.down."))
    mult = [vae[f"encoder.down.{i}.block.0.conv1.weight"].shape[0] // ch for i in range(levels)]
    res_blocks = 1 + max(int(k.split(".")[4]) for k in vae if k.startswith("encoder.down.0.block."))
    z2 = vae["encoder.conv_out.weight"].shape[0]
    return {"double_z": True, "z_channels": z2 // 2, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": ch,
            "ch_mult": mult, "num_res_blocks": res_blocks, "attn_resolutions": [], "dropout": 0.0}


def vision_config(vision: dict) -> dict:
    """transformers-style CLIPVisionConfig for an OpenAI CLIP image tower (keys without the `visual.` prefix)."""
    width, _, patch, _ = vision["conv1.weight"].shape
    layers = 1 + max(int(k.split(".")[2]) for k in vision if k.startswith("transformer.resblocks."))
    positions = vision["positional_embedding"].shape[0]
    image_size = int(round(math.sqrt(positions - 1))) * patch
    return {"attention_dropout": 0.0, "dropout": 0.0, "hidden_act": "quick_gelu", "hidden_size": int(width),
            "image_size": image_size, "initializer_factor": 1.0, "initializer_range": 0.02,
            "intermediate_size": int(vision["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
            "layer_norm_eps": 1e-05, "model_type": "clip_vision_model", "num_attention_heads": max(1, width // CLIP_HEAD_WIDTH),
            "num_channels": 3, "num_hidden_layers": layers, "patch_size": int(patch),
            "projection_dim": int(vision["proj"].shape[1]), "torch_dtype": "float32"}


def text_config(text: dict) -> dict:
    """The fields of transformers' CLIPTextConfig these weights fix (SD1.5's CLIP-L at the released size)."""
    hidden = text["text_model.embeddings.token_embedding.weight"].shape[1]
    layers = 1 + max(int(k.split(".")[3]) for k in text if k.startswith("text_model.encoder.layers."))
    return {"hidden_size": int(hidden), "num_hidden_layers": layers,
            "intermediate_size": int(text["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0]),
            "num_attention_heads": max(1, hidden // CLIP_HEAD_WIDTH), "projection_dim": int(hidden),
            "vocab_size": int(text["text_model.embeddings.token_embedding.weight"].shape[0]),
            "max_position_embeddings": int(text["text_model.embeddings.position_embedding.weight"].shape[0])}


def reference_alphas_cumprod() -> torch.Tensor:
    """The training schedule: betas linear in sqrt space from 0.00085 to 0.012 over 1000 steps."""
    betas = torch.linspace(LINEAR_START ** 0.5, LINEAR_END ** 0.5, TIMESTEPS, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def schedule_matches(schedule: dict) -> bool | None:
    """Whether the file's alphas_cumprod is the schedule the model runs with (None when the file has none)."""
    a = schedule.get("alphas_cumprod")
    if a is None:
        return None
    ref = reference_alphas_cumprod()
    return a.shape == ref.shape and torch.allclose(a.double(), ref, rtol=1e-4, atol=1e-6)


def report_unused(path: Path, unused: list[str]) -> str:
    """One line naming every key no part of the loaded model takes (empty when there are none)."""
    if not unused:
        return ""
    text = f"{Path(path).name}: {len(unused)} key(s) not used: {', '.join(sorted(unused))}"
    log.info(text)
    return text
