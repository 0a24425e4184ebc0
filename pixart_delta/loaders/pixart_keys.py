"""PixArt key names: the original training code's (PixArt-alpha/PixArt-alpha, PixArt-alpha/PixArt-sigma) and
diffusers' PixArtTransformer2DModel, in one table used both ways, as diffusers'
scripts/convert_pixart_alpha_to_diffusers.py converts them. Also the PixArt-δ ControlNet branch: original
`controlnet.{i}.*` <-> the diffusers adapter layout `controlnet_blocks.{i}.*` (PixArtControlNetAdapterModel).
No ComfyUI."""
from __future__ import annotations

import re

import torch

# (original module, diffusers module) inside a transformer block; q/k/v and k/v are fused in the original.
BLOCK_MODULES = (
    ("attn.proj", "attn1.to_out.0"),
    ("cross_attn.q_linear", "attn2.to_q"),
    ("cross_attn.proj", "attn2.to_out.0"),
    ("mlp.fc1", "ff.net.0.proj"),
    ("mlp.fc2", "ff.net.2"),
)
FUSED_BLOCK_MODULES = (
    ("attn.qkv", ("attn1.to_q", "attn1.to_k", "attn1.to_v")),
    ("cross_attn.kv_linear", ("attn2.to_k", "attn2.to_v")),
)
# (original module, diffusers module) outside the blocks.
TOP_MODULES = (
    ("x_embedder.proj", "pos_embed.proj"),
    ("y_embedder.y_proj.fc1", "caption_projection.linear_1"),
    ("y_embedder.y_proj.fc2", "caption_projection.linear_2"),
    ("t_embedder.mlp.0", "adaln_single.emb.timestep_embedder.linear_1"),
    ("t_embedder.mlp.2", "adaln_single.emb.timestep_embedder.linear_2"),
    ("csize_embedder.mlp.0", "adaln_single.emb.resolution_embedder.linear_1"),
    ("csize_embedder.mlp.2", "adaln_single.emb.resolution_embedder.linear_2"),
    ("ar_embedder.mlp.0", "adaln_single.emb.aspect_ratio_embedder.linear_1"),
    ("ar_embedder.mlp.2", "adaln_single.emb.aspect_ratio_embedder.linear_2"),
    ("t_block.1", "adaln_single.linear"),
    ("final_layer.linear", "proj_out"),
)
# Plain tensors (no .weight / .bias) that only change name.
TOP_TENSORS = (("final_layer.scale_shift_table", "scale_shift_table"),)
BLOCK_TENSORS = (("scale_shift_table", "scale_shift_table"),)
# Original-only buffers that diffusers computes itself (sin-cos position table, the learned null caption).
ORIGINAL_ONLY = ("pos_embed", "y_embedder.y_embedding")
SUFFIXES = ("weight", "bias")


def count_blocks(sd: dict, prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    ids = {int(m.group(1)) for k in sd for m in [pat.match(k)] if m}
    return max(ids) + 1 if ids else 0


# ---- diffusers -> original --------------------------------------------------------------------------------

def diffusers_block_to_original(sd: dict, src: str, dst: str, out: dict) -> None:
    """One transformer block in diffusers names (prefix `src`) -> original names (prefix `dst`), into `out`."""
    for original, parts in FUSED_BLOCK_MODULES:
        for suffix in SUFFIXES:
            tensors = [sd.get(f"{src}{p}.{suffix}") for p in parts]
            if all(t is not None for t in tensors):
                out[f"{dst}{original}.{suffix}"] = torch.cat(tensors, 0)
    for original, diffusers in BLOCK_MODULES:
        for suffix in SUFFIXES:
            if f"{src}{diffusers}.{suffix}" in sd:
                out[f"{dst}{original}.{suffix}"] = sd[f"{src}{diffusers}.{suffix}"]
    for original, diffusers in BLOCK_TENSORS:
        if f"{src}{diffusers}" in sd:
            out[f"{dst}{original}"] = sd[f"{src}{diffusers}"]


def diffusers_to_original(sd: dict) -> dict:
    out = {}
    for i in range(count_blocks(sd, "transformer_blocks.")):
        diffusers_block_to_original(sd, f"transformer_blocks.{i}.", f"blocks.{i}.", out)
    for original, diffusers in TOP_MODULES:
        for suffix in SUFFIXES:
            if f"{diffusers}.{suffix}" in sd:
                out[f"{original}.{suffix}"] = sd[f"{diffusers}.{suffix}"]
    for original, diffusers in TOP_TENSORS:
        if diffusers in sd:
            out[original] = sd[diffusers]
    return out


def diffusers_adapter_to_original(sd: dict) -> dict:
    """`controlnet_blocks.{i}.*` (diffusers PixArtControlNetAdapterModel) -> `controlnet.{i}.*`."""
    out: dict = {}
    for i in range(count_blocks(sd, "controlnet_blocks.")):
        src = f"controlnet_blocks.{i}."
        diffusers_block_to_original(sd, src + "transformer_block.", f"controlnet.{i}.copied_block.", out)
        for proj in ("before_proj", "after_proj"):
            for suffix in SUFFIXES:
                if f"{src}{proj}.{suffix}" in sd:
                    out[f"controlnet.{i}.{proj}.{suffix}"] = sd[f"{src}{proj}.{suffix}"]
    return out


# ---- original -> diffusers --------------------------------------------------------------------------------

def block_to_diffusers(rest: str, v: torch.Tensor) -> dict:
    """One key inside a block (`rest`, original name) -> {diffusers name: tensor}; fused tensors are split."""
    for original, diffusers in BLOCK_TENSORS:
        if rest == original:
            return {diffusers: v}
    module, _, suffix = rest.rpartition(".")
    for original, parts in FUSED_BLOCK_MODULES:
        if module == original:
            return {f"{p}.{suffix}": t for p, t in zip(parts, v.chunk(len(parts), 0))}
    for original, diffusers in BLOCK_MODULES:
        if module == original:
            return {f"{diffusers}.{suffix}": v}
    raise KeyError(f"no diffusers name for the block key {rest!r}")


def original_to_diffusers(sd: dict, prefix_in: str = "", prefix_out: str = "") -> dict:
    """Original names (under `prefix_in`) -> diffusers names (under `prefix_out`); original-only buffers dropped."""
    top_modules, top_tensors = dict(TOP_MODULES), dict(TOP_TENSORS)
    out = {}
    for k, v in sd.items():
        if not k.startswith(prefix_in):
            continue
        k = k[len(prefix_in):]
        if k in ORIGINAL_ONLY:
            continue
        if k in top_tensors:
            out[prefix_out + top_tensors[k]] = v
        elif k.startswith("blocks."):
            _, i, rest = k.split(".", 2)
            out.update({f"{prefix_out}transformer_blocks.{i}.{n}": t for n, t in block_to_diffusers(rest, v).items()})
        else:
            module, _, suffix = k.rpartition(".")
            if module not in top_modules:
                raise KeyError(f"no diffusers name for the PixArt key {k!r}")
            out[f"{prefix_out}{top_modules[module]}.{suffix}"] = v
    return out


def original_controlnet_to_diffusers_adapter(sd: dict) -> dict:
    """`controlnet.{i}.*` (original) -> `controlnet_blocks.{i}.*` (diffusers adapter); base weights dropped."""
    out = {}
    for k, v in sd.items():
        if not k.startswith("controlnet."):
            continue
        _, i, rest = k.split(".", 2)
        if rest.startswith("copied_block."):
            out.update({f"controlnet_blocks.{i}.transformer_block.{n}": t
                        for n, t in block_to_diffusers(rest[len("copied_block."):], v).items()})
        else:  # before_proj / after_proj keep their names
            out[f"controlnet_blocks.{i}.{rest}"] = v
    return out
