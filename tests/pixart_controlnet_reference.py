"""The PixArt-δ ControlNet as diffusers' research project runs it, restated on diffusers' own classes: the reference
of tests/test_controlnet.py and of the ControlNet job of bench/end_to_end.py. Nothing here comes from the pack.

Source: huggingface/diffusers examples/research_projects/pixart/controlnet_pixart_alpha.py
(PixArtControlNetAdapterBlock, PixArtControlNetAdapterModel, PixArtControlNetTransformerModel.forward; not part
of the diffusers wheel): each of the 13 adapter blocks is a diffusers BasicTransformerBlock (ada_norm_single, as
PixArtTransformer2DModel's blocks) between zero-initialised projections; block 0 adds before_proj(hint tokens) to
the base model's hidden states first; adapter block i-1 runs before base block i (i = 1..13), its after_proj output
added to the base hidden states and its block output carried to the next adapter block.
"""
from __future__ import annotations

import torch
from diffusers.models.attention import BasicTransformerBlock
from torch import nn

HEAD_DIM = 72   # PixArt's heads are 72 wide at every size


def adapter_transformer_block(hidden: int) -> BasicTransformerBlock:
    """The BasicTransformerBlock of an adapter block, configured as the research project's defaults."""
    return BasicTransformerBlock(hidden, hidden // HEAD_DIM, HEAD_DIM, cross_attention_dim=hidden,
                                 activation_fn="gelu-approximate", num_embeds_ada_norm=1000, attention_bias=True,
                                 norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6)


class AdapterBlock(nn.Module):
    """`controlnet_blocks.{i}`: before_proj (block 0 only), transformer_block, after_proj."""

    def __init__(self, index: int, hidden: int = 1152):
        super().__init__()
        if index == 0:
            self.before_proj = nn.Linear(hidden, hidden)
        self.transformer_block = adapter_transformer_block(hidden)
        self.after_proj = nn.Linear(hidden, hidden)


class Adapter(nn.Module):
    """The adapter file's modules (`controlnet_blocks.*`, the layout of raulc0399/pixart-alpha-hed-controlnet)."""

    def __init__(self, copies: int = 13, hidden: int = 1152):
        super().__init__()
        self.controlnet_blocks = nn.ModuleList(AdapterBlock(i, hidden) for i in range(copies))


def controlled_forward(transformer, adapter: Adapter, latents, text, timestep, hint_latents, added_cond_kwargs,
                       text_mask=None) -> torch.Tensor:
    """The output of diffusers' PixArtTransformer2DModel `transformer` with `adapter` driven by `hint_latents`
    (VAE latents of the hint, one per sample), [B, out_channels, H, W]; `text_mask` [B, L] with 1 = keep."""
    t = transformer
    bias = None if text_mask is None else ((1 - text_mask.to(latents.dtype)) * -10000.0)[:, None]
    batch = latents.shape[0]
    p = t.config.patch_size
    gh, gw = latents.shape[-2] // p, latents.shape[-1] // p
    h = t.pos_embed(latents)
    t0, embedded_t = t.adaln_single(timestep, added_cond_kwargs, batch_size=batch, hidden_dtype=h.dtype)
    y = t.caption_projection(text).view(batch, -1, h.shape[-1])
    c = t.pos_embed(hint_latents)
    for i, block in enumerate(t.transformer_blocks):
        if 1 <= i <= len(adapter.controlnet_blocks):
            a = adapter.controlnet_blocks[i - 1]
            if i == 1:
                c = h + a.before_proj(c)
            c = a.transformer_block(c, encoder_hidden_states=y, encoder_attention_mask=bias, timestep=t0)
            h = h + a.after_proj(c)
        h = block(h, encoder_hidden_states=y, encoder_attention_mask=bias, timestep=t0)
    shift, scale = (t.scale_shift_table[None] + embedded_t[:, None]).chunk(2, dim=1)
    h = t.proj_out(t.norm_out(h) * (1 + scale) + shift)
    out = t.out_channels
    h = h.reshape(batch, gh, gw, p, p, out).permute(0, 5, 1, 3, 2, 4)
    return h.reshape(batch, out, gh * p, gw * p)
