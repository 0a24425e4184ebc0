"""The PixArt-δ ControlNet-Transformer branch: 13 copies of the first base blocks with zero-initialised
projections (docs/facts/pixart.md §5). Parameter names are those of the original files without
their `controlnet.` prefix handled by the loader: `controlnet.{i}.copied_block.*`,
`controlnet.0.before_proj.*`, `controlnet.{i}.after_proj.*`.

Design: the branch runs INSIDE the base model's forward (PixArt.forward picks it up from
`transformer_options[CONTROL_KEY]`, models/pixart.py), so it takes the hint embedding, h0 (the output of base
block 0), t0, the projected text and the mask from the MODEL being sampled; nothing of the base is recomputed and the
ControlNet file's own `base_model.*` weights are never needed by the branch. With the ControlNet's own base
as the MODEL this is the reference computation exactly.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .linear import linear
from .pixart import PixArtBlock, sdpa_attention


class ControlBlock(nn.Module):
    def __init__(self, hidden, heads, first: bool, ops=nn, dtype=None, device=None, attention=sdpa_attention):
        super().__init__()
        self.copied_block = PixArtBlock(hidden, heads, ops=ops, dtype=dtype, device=device, attention=attention)
        if first:
            self.before_proj = ops.Linear(hidden, hidden, dtype=dtype, device=device)
        self.after_proj = ops.Linear(hidden, hidden, dtype=dtype, device=device)


class PixArtControlNetBranch(nn.Module):
    """The `controlnet.*` part of a PixArt-δ file; `copies` residuals go after base blocks 0..copies-1.
    attention: as PixArt's (models/pixart.py; ComfyUI's selected function inside ComfyUI)."""

    def __init__(self, hidden_size=1152, num_heads=16, copies=13, dtype=None, device=None, operations=None,
                 attention=sdpa_attention):
        super().__init__()
        ops = operations or nn
        self.hidden_size, self.num_heads, self.copies = hidden_size, num_heads, copies
        self.dtype = dtype
        self.controlnet = nn.ModuleList(ControlBlock(hidden_size, num_heads, i == 0, ops, dtype, device, attention)
                                        for i in range(copies))


class PixArtControlRun:
    """One ControlNet applied at one model call: the branch, its hint latent (already in the model's scaled
    latent space, [1 or B, 4, H, W] at the latent's size) and the strength multiplying its residuals."""

    def __init__(self, branch: PixArtControlNetBranch, hint: torch.Tensor, strength: float = 1.0):
        self.branch, self.hint, self.strength = branch, hint, strength
        self.used = False   # set by the model's forward; the ComfyUI side refuses a run nobody consumed

    def start(self, model, latent_hw) -> "_RunState":
        if tuple(self.hint.shape[-2:]) != tuple(latent_hw):
            raise ValueError(f"PixArt ControlNet: the hint latent is {tuple(self.hint.shape[-2:])} but the latent "
                             f"being sampled is {tuple(latent_hw)}")
        self.used = True
        return _RunState(self, model)


class _RunState:
    """Per-forward state of one branch; PixArt.forward calls after_block(i, h_i, ...) for every base block."""

    def __init__(self, run: PixArtControlRun, model):
        self.run, self.model = run, model
        self.c = None

    def after_block(self, i, h, y, t0, mask, transformer_options={}):
        """h = output of base block i (before any residual); returns s_i, added to it, or None past the copies."""
        blocks = self.run.branch.controlnet
        if i >= len(blocks):
            return None
        cb = blocks[i]
        if i == 0:
            hint = self.run.hint.to(device=h.device, dtype=h.dtype)
            c0 = self.model.embed_image(hint)   # the base's own patch embedding + position embedding
            self.c = h + linear(cb.before_proj, c0)      # a hint of batch 1 broadcasts over the batch
        self.c = cb.copied_block(self.c, y, t0, mask, transformer_options)
        s = linear(cb.after_proj, self.c).to(h.dtype)   # bf16 layers: scaled and summed in the fp32 stream
        return s if self.run.strength == 1.0 else s * self.run.strength
