"""Fitting a ControlNet hint image to the latent being sampled, as the PixArt-δ reference app does
(app/app_controlnet.py: T.Resize(short side) then T.CenterCrop(bucket)). Pure torch."""
from __future__ import annotations

import torch
import torch.nn.functional as F


class HintError(ValueError):
    pass


def fit_hint(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """IMAGE [N,H,W,C] in [0,1] -> [N,height,width,3]: scaled (bilinear, antialiased like PIL) so that it covers
    height x width, then centre-cropped. Equals the reference's resize + centre crop whenever the reference does
    not pad; where its short-side resize leaves a side too short (image aspect between the bucket's and 1) it
    pads black, here the image is scaled a little more and cropped instead. Grey images become RGB; alpha is
    dropped."""
    if image.ndim != 4 or image.shape[-1] not in (1, 3, 4) or image.shape[1] < 1 or image.shape[2] < 1:
        raise HintError(f"the hint must be an IMAGE [batch, height, width, 1/3/4 channels], got {tuple(image.shape)}")
    x = image[..., :3] if image.shape[-1] >= 3 else image.expand(*image.shape[:3], 3)
    x = x.movedim(-1, 1).float()
    h, w = x.shape[-2:]
    scale = max(height / h, width / w)
    nh, nw = max(height, round(h * scale)), max(width, round(w * scale))
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    top, left = int(round((nh - height) / 2.0)), int(round((nw - width) / 2.0))
    x = x[:, :, top:top + height, left:left + width]
    return x.clamp(0, 1).movedim(1, -1)


def hint_batch(n_hints: int, n_latents: int) -> None:
    """One hint for the whole batch, or one per latent; anything else is refused."""
    if n_hints not in (1, n_latents):
        raise HintError(f"{n_hints} hint images for a batch of {n_latents} latents: give one hint image (used for "
                        f"every latent) or exactly one per latent")
