"""The PixArt-α/Σ diffusion transformer (DiT-XL/2 with cross-attention and adaLN-single).

Parameter names are those of the original PixArt checkpoints (and of ComfyUI's own PixArtMS), so
original files load as they are and ComfyUI's LoRA key mapping applies unchanged.
Own network instead of comfy.ldm.pixart: that one has no text mask, no per-block residual input,
derives the position-embedding scale from the run size and crashes at 256 px; it also lets the
parity tests run without ComfyUI. `operations` is comfy.ops.* inside ComfyUI (torch.nn outside).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .linear import linear, weight_dtype_input


def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding in [cos, sin] order (PixArt / DiT)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64, device=pos.device) / (dim / 2.0))
    out = pos.reshape(-1).double()[:, None] * omega[None]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_2d(dim: int, grid_h: int, grid_w: int, base_size: float, interpolation: float,
              device=None) -> torch.Tensor:
    """Fixed 2-D position embedding [grid_h*grid_w, dim]: first half encodes the column, second the row."""
    rows = torch.arange(grid_h, dtype=torch.float64, device=device) / (grid_h / base_size) / interpolation
    cols = torch.arange(grid_w, dtype=torch.float64, device=device) / (grid_w / base_size) / interpolation
    r, c = torch.meshgrid(rows, cols, indexing="ij")
    return torch.cat([sincos_1d(dim // 2, c), sincos_1d(dim // 2, r)], dim=1).float()


def sdpa_attention(q, k, v, heads: int, mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
    """The network's attention outside ComfyUI, in the calling convention of ComfyUI's attention functions
    (comfy/ldm/modules/attention.py optimized_attention): q [B,N,C], k/v [B,L,C], `heads`, an additive `mask`
    broadcastable to [B,heads,N,L]; other keywords (transformer_options, attn_precision) are ignored."""
    b, n, c = q.shape
    q, k, v = (t.reshape(b, -1, heads, c // heads).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).reshape(b, n, c)


def key_padding_bias(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """keep [B,L] (True = real token) -> additive mask [B,1,1,L]: 0 / -10000 as diffusers' PixArt pipeline builds
    it (diffusers models/transformers/pixart_transformer_2d.py), finite so chunked kernels never see a row of -inf."""
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, -10000.0)[:, None, None, :]


class Mlp(nn.Module):
    def __init__(self, dim, hidden, out=None, ops=nn, dtype=None, device=None):
        super().__init__()
        self.fc1 = ops.Linear(dim, hidden, dtype=dtype, device=device)
        self.fc2 = ops.Linear(hidden, out or dim, dtype=dtype, device=device)

    def forward(self, x):
        return linear(self.fc2, linear(self.fc1, x, gelu_tanh=True))


class SelfAttention(nn.Module):
    def __init__(self, dim, heads, ops=nn, dtype=None, device=None, attention=sdpa_attention):
        super().__init__()
        self.heads, self.attend = heads, attention
        self.qkv = ops.Linear(dim, dim * 3, dtype=dtype, device=device)
        self.proj = ops.Linear(dim, dim, dtype=dtype, device=device)

    def forward(self, x, transformer_options={}):
        q, k, v = linear(self.qkv, x).chunk(3, dim=-1)
        return linear(self.proj, self.attend(q, k, v, self.heads, attn_precision=torch.float32,
                                             transformer_options=transformer_options))


class CrossAttention(nn.Module):
    def __init__(self, dim, heads, ops=nn, dtype=None, device=None, attention=sdpa_attention):
        super().__init__()
        self.heads, self.attend = heads, attention
        self.q_linear = ops.Linear(dim, dim, dtype=dtype, device=device)
        self.kv_linear = ops.Linear(dim, dim * 2, dtype=dtype, device=device)
        self.proj = ops.Linear(dim, dim, dtype=dtype, device=device)

    def forward(self, x, context, mask=None, transformer_options={}):
        """mask: additive [B,1,1,L] (key_padding_bias) or None."""
        k, v = linear(self.kv_linear, context).chunk(2, dim=-1)
        mask = None if mask is None else mask.to(k.dtype)   # a branch may compute in another dtype than its MODEL
        return linear(self.proj, self.attend(linear(self.q_linear, x), k, v, self.heads, mask=mask,
                                             attn_precision=torch.float32, transformer_options=transformer_options))


class PixArtBlock(nn.Module):
    def __init__(self, dim, heads, mlp_ratio=4.0, ops=nn, dtype=None, device=None, attention=sdpa_attention):
        super().__init__()
        self.attn = SelfAttention(dim, heads, ops, dtype, device, attention)
        self.cross_attn = CrossAttention(dim, heads, ops, dtype, device, attention)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), ops=ops, dtype=dtype, device=device)
        self.scale_shift_table = nn.Parameter(torch.empty(6, dim, dtype=dtype, device=device))

    def forward(self, x, context, t0, mask=None, transformer_options={}):
        """x [B,N,C]; context [B,L,C] (projected text); t0 [B,6C]; mask: additive [B,1,1,L] or None."""
        b, _, c = x.shape
        mod = self.scale_shift_table[None].to(x) + t0.reshape(b, 6, c)
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.chunk(6, dim=1)
        h = torch.addcmul(shift1, F.layer_norm(x, (c,), eps=1e-6), 1 + scale1)
        x = torch.addcmul(x, gate1, self.attn(h, transformer_options))
        x = x + self.cross_attn(x, context, mask, transformer_options)
        h = torch.addcmul(shift2, F.layer_norm(x, (c,), eps=1e-6), 1 + scale2)
        return torch.addcmul(x, gate2, self.mlp(h))


class TimestepEmbedder(nn.Module):
    def __init__(self, dim, freq_dim=256, ops=nn, dtype=None, device=None):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(ops.Linear(freq_dim, dim, dtype=dtype, device=device), nn.SiLU(),
                                 ops.Linear(dim, dim, dtype=dtype, device=device))

    def forward(self, t, dtype):
        """The sinusoid in fp32 (as diffusers keeps it), the MLP in `dtype` or in its layers' bf16."""
        return linear(self.mlp[2], self.mlp[1](linear(self.mlp[0], timestep_embedding(t, self.freq_dim).to(dtype))))


class SizeEmbedder(TimestepEmbedder):
    """Embeds each column of s [B,D] like a timestep and concatenates: [B, D*dim]."""
    def forward(self, s, dtype):
        b, d = s.shape
        return super().forward(s.reshape(-1), dtype).reshape(b, d * self.mlp[2].out_features)


class PatchEmbed(nn.Module):
    def __init__(self, in_ch, dim, patch, ops=nn, dtype=None, device=None):
        super().__init__()
        self.proj = ops.Conv2d(in_ch, dim, kernel_size=patch, stride=patch, dtype=dtype, device=device)

    def forward(self, x):
        # contiguous: elementwise ops keep an input's strides, so transposed tokens would make every block's
        # layer norm copy and its linears fall back to unfused matmuls
        return self.proj(weight_dtype_input(self.proj, x)).flatten(2).transpose(1, 2).contiguous()


class CaptionEmbedder(nn.Module):
    """Projects T5 states; the files' `y_embedding` (null caption for training-time dropout) is unused."""
    def __init__(self, in_ch, dim, ops=nn, dtype=None, device=None):
        super().__init__()
        self.y_proj = Mlp(in_ch, dim, dim, ops=ops, dtype=dtype, device=device)

    def forward(self, y):
        return self.y_proj(y)


class FinalLayer(nn.Module):
    def __init__(self, dim, patch, out_ch, ops=nn, dtype=None, device=None):
        super().__init__()
        self.linear = ops.Linear(dim, patch * patch * out_ch, dtype=dtype, device=device)
        self.scale_shift_table = nn.Parameter(torch.empty(2, dim, dtype=dtype, device=device))

    def forward(self, x, t):
        shift, scale = (self.scale_shift_table[None].to(x) + t[:, None]).chunk(2, dim=1)
        return linear(self.linear, torch.addcmul(shift, F.layer_norm(x, (x.shape[-1],), eps=1e-6), 1 + scale))


def _per_sample(v: torch.Tensor, batch: int) -> torch.Tensor:
    return v if v.shape[0] == batch else v.repeat(batch // v.shape[0], *([1] * (v.ndim - 1)))


# transformer_options entry: the PixArt-δ ControlNet runs (models/pixart_controlnet.py) of one model call
CONTROL_KEY = "pixart_controlnet"


class PixArtBranchControl:
    """Base of the ControlNets that drive this network: they hand it their branch through
    transformer_options[CONTROL_KEY] instead of returning residuals. A PixArt MODEL refuses any other ControlNet
    in its control chain."""


def foreign_control(what: str) -> ValueError:
    """The error for a ControlNet made for another model family, wherever it is noticed: in the MODEL's control
    chain (what = its class) or in the control dict the network receives (what = what it gives)."""
    return ValueError(f"{what} is attached to a PixArt MODEL and is not a PixArt ControlNet: it was made for another "
                      f"model family and cannot drive PixArt. Use PixArt-δ ControlNets loaded with 'PixArt "
                      f"ControlNet Loader' (PixArt-XL-2-512/1024-ControlNet.pth).")


def _checked_residuals(control) -> list:
    """control["input"]; a UNet ControlNet (middle/output residuals) is refused rather than half-applied."""
    if not control:
        return []
    for key in ("middle", "output"):
        if any(r is not None for r in control.get(key) or []):
            raise foreign_control(f"a ControlNet giving '{key}' residuals (which only UNets have)")
    return list(control.get("input") or [])


class PixArt(nn.Module):
    """PixArt-α / Σ transformer.

    base_size: native latent size / patch (e.g. 64 for 1024 px) and pe_interpolation: the trained
    position-embedding scale; both are fixed properties of the checkpoint, never derived from the run.
    attention: the attention function of every block, called as ComfyUI's optimized_attention is
    (sdpa_attention; the ComfyUI glue passes ComfyUI's selected one, loaders/pixart_comfy.py).
    residual_dtype: the dtype of the token stream between the layers (residual sums, layer norms, modulation,
    position embedding) when it differs from the compute dtype, i.e. the input's: fp32 for bf16 weights computing
    on CPU (loaders/dtypes_comfy.py), where the linears and attention then run in bf16 (models/linear.py) and the
    rounding errors of 28 residual additions stay out of the stream. None: the stream has the input's dtype.
    """

    def __init__(self, hidden_size=1152, depth=28, num_heads=16, patch_size=2, in_channels=4,
                 out_channels=8, caption_channels=4096, model_max_length=120, micro_condition=False,
                 base_size=64, pe_interpolation=2.0, mlp_ratio=4.0, image_model=None,
                 dtype=None, device=None, operations=None, attention=sdpa_attention, residual_dtype=None, **kwargs):
        super().__init__()
        ops = operations or nn
        self.attention = attention
        self.dtype = dtype
        self.residual_dtype = residual_dtype
        self.hidden_size, self.depth, self.num_heads = hidden_size, depth, num_heads
        self.patch_size, self.in_channels, self.out_channels = patch_size, in_channels, out_channels
        self.base_size, self.pe_interpolation = base_size, pe_interpolation
        self.micro_conditioning = micro_condition
        self.x_embedder = PatchEmbed(in_channels, hidden_size, patch_size, ops, dtype, device)
        self.t_embedder = TimestepEmbedder(hidden_size, ops=ops, dtype=dtype, device=device)
        self.t_block = nn.Sequential(nn.SiLU(), ops.Linear(hidden_size, 6 * hidden_size, dtype=dtype, device=device))
        self.y_embedder = CaptionEmbedder(caption_channels, hidden_size, ops, dtype, device)
        if micro_condition:
            self.csize_embedder = SizeEmbedder(hidden_size // 3, ops=ops, dtype=dtype, device=device)
            self.ar_embedder = SizeEmbedder(hidden_size // 3, ops=ops, dtype=dtype, device=device)
        self.blocks = nn.ModuleList(PixArtBlock(hidden_size, num_heads, mlp_ratio, ops, dtype, device, attention)
                                    for _ in range(depth))
        self.final_layer = FinalLayer(hidden_size, patch_size, out_channels, ops, dtype, device)

    # -- pieces the ControlNet branch reuses -------------------------------------------------
    def pos_embed(self, h: int, w: int, device=None) -> torch.Tensor:
        p = self.patch_size
        return sincos_2d(self.hidden_size, h // p, w // p, self.base_size, self.pe_interpolation, device)[None]

    def embed_image(self, x: torch.Tensor) -> torch.Tensor:
        """Patch embedding + fixed position embedding: [B,C,H,W] -> [B,N,hidden] in the residual dtype."""
        stream = self.residual_dtype or x.dtype
        return self.x_embedder(x).to(stream) + self.pos_embed(x.shape[-2], x.shape[-1], x.device).to(stream)

    def embed_timestep(self, timesteps, dtype, c_size=None, c_ar=None):
        """Returns (t, t0): t for the final layer, t0 = the 6-way block modulation."""
        t = self.t_embedder(timesteps, dtype)
        if self.micro_conditioning:
            t = t + torch.cat([self.csize_embedder(c_size, dtype), self.ar_embedder(c_ar, dtype)], dim=1)
        return t, linear(self.t_block[1], self.t_block[0](t))

    # -- forward --------------------------------------------------------------------------
    def forward(self, x, timesteps, context, attention_mask=None, c_size=None, c_ar=None,
                control=None, transformer_options={}, **kwargs):
        """x [B,4,H,W] latent; timesteps [B] (0..999); context [B,L,4096] T5 states;
        attention_mask [B,L] (1 = real token) or None; c_size [B,2] (h, w px) and c_ar [B,1] for
        micro-conditioned models; control: {"input": [r_0, ...]} residuals, r_i [B,N,hidden] added to
        the tokens after block i (ComfyUI's ControlNet convention). Returns the ε/v part [B,4,H,W]."""
        b, _, h, w = x.shape
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"PixArt needs a latent size divisible by {p}, got {h}x{w}")
        # the compute dtype: the input's, or with a separate residual dtype the weights' (their bf16)
        dtype = x.dtype if self.residual_dtype is None else (self.dtype or x.dtype)
        if self.micro_conditioning:
            if c_size is None:
                c_size = torch.tensor([[h * 8, w * 8]], device=x.device).expand(b, 2)
            if c_ar is None:
                c_ar = torch.tensor([[h / w]], device=x.device).expand(b, 1)
            c_size = _per_sample(c_size.to(x.device).float().reshape(-1, 2), b)
            c_ar = _per_sample(c_ar.to(x.device).float().reshape(-1, 1), b)
        if context.ndim == 4:  # [B,1,L,C] as the original code passes it
            context = context.squeeze(1)
        mask = None
        if attention_mask is not None:
            mask = attention_mask.reshape(attention_mask.shape[0], -1).to(x.device) > 0
            mask = _per_sample(mask, b)
            mask = None if bool(mask.all()) else key_padding_bias(mask, dtype)

        tokens = self.embed_image(x)
        t, t0 = self.embed_timestep(timesteps.to(x.device), dtype, c_size, c_ar)
        y = self.y_embedder(context.to(dtype))
        residuals = _checked_residuals(control)
        # PixArt-δ ControlNet branches (models/pixart_controlnet.py) see h_i before any residual is added
        branches = [run.start(self, (h, w)) for run in transformer_options.get(CONTROL_KEY, ())]
        opts = {**transformer_options, "total_blocks": len(self.blocks)}
        for i, block in enumerate(self.blocks):
            opts["block_index"] = i
            tokens = block(tokens, y, t0, mask, opts)
            extra = [br.after_block(i, tokens, y, t0, mask, opts) for br in branches]
            if i < len(residuals) and residuals[i] is not None:
                if residuals[i].shape[1:] != tokens.shape[1:]:
                    raise foreign_control(f"a ControlNet giving a residual of shape {tuple(residuals[i].shape)} "
                                          f"for tokens of shape {tuple(tokens.shape)}")
                tokens = tokens + residuals[i].to(tokens)
            for r in extra:
                if r is not None:
                    tokens = tokens + r
        out = self.final_layer(tokens, t)
        out = out.reshape(b, h // p, w // p, p, p, self.out_channels)
        out = torch.einsum("nhwpqc->nchpwq", out).reshape(b, self.out_channels, h, w)
        return out[:, :self.in_channels]
