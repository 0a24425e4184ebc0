"""CustomNet (TencentARC/CustomNet): object customisation with viewpoint, location and text or image background,
on ComfyUI's own UNet, CLIP, CLIP vision, VAE and samplers."""
from __future__ import annotations

import comfy.model_management as mm
import comfy.utils
import torch
from comfy_api.latest import io

from ..loaders.customnet import CUSTOMNET_FILE
from ..loaders.customnet_comfy import (apply_text_branch, list_customnet_files, load_customnet_cached,
                                       register_folder, resolve_customnet_file)
from ..preprocessors.customnet import (AZIMUTH_RANGE, CANVAS, POLAR_RANGE, background_canvas, camera_vector,
                                       clip_pixels, foreground_from_mask, location_canvas, object_image, ordered_box)

register_folder()

MASK_OBJECT = "1 = object (segmentation nodes)"
MASK_BACKGROUND = "1 = background (Load Image alpha)"
LATENT = CANVAS // 8


class PixArtCustomNetLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PixArtCustomNetLoader",
            display_name="PixArt CustomNet Loader",
            category="PixArt/CustomNet",
            description="Loads customnet_v1.pt (text background) or customnet_inpaint_v1.pt (image background) "
                        "from TencentARC/CustomNet: its SD1.5 UNet with the dual text/image cross-attention, its "
                        "CLIP-L text encoder, its CLIP ViT-L/14 image encoder and its VAE, as ComfyUI objects. Keys "
                        "the model does not use are listed on the node. Kept loaded between runs.",
            inputs=[
                io.Combo.Input("ckpt_name", options=list_customnet_files(), default=CUSTOMNET_FILE,
                               tooltip="A CustomNet checkpoint in models/customnet (or models/checkpoints, names "
                                       "containing 'customnet'). Pickles are read with torch.load(weights_only=True)."),
                io.Float.Input("text_scale", default=1.0, min=0.0, max=4.0, step=0.05,
                               tooltip="Weight of the text attention added to the image-token attention in every "
                                       "cross-attention layer; 1.0 as trained, 0 ignores the prompt."),
            ],
            outputs=[io.Model.Output(), io.Clip.Output(), io.ClipVision.Output(), io.Vae.Output()],
        )

    @classmethod
    def execute(cls, ckpt_name, text_scale=1.0) -> io.NodeOutput:
        bundle = load_customnet_cached(resolve_customnet_file(ckpt_name))
        model = apply_text_branch(bundle.model, text_scale)
        return io.NodeOutput(model, bundle.clip, bundle.clip_vision, bundle.vae, ui={"text": [bundle.report]})


def _text_tokens(clip, text: str, tokens: int = 77) -> torch.Tensor:
    """CLIP-L last hidden state [1, 77, D]; the reference truncates at 77 tokens (one ComfyUI chunk)."""
    cond = clip.encode_from_tokens(clip.tokenize(text))
    return cond[:, :tokens].float()


class PixArtCustomNetConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PixArtCustomNetConditioning",
            display_name="PixArt CustomNet Conditioning",
            category="PixArt/CustomNet",
            description="CustomNet's conditioning as TencentARC/CustomNet's app prepares it: the object (white "
                        "outside the mask, cropped, fitted into 200x200 on a white 256x256 picture), its CLIP image "
                        "embedding with the camera [polar, sin azimuth, cos azimuth, 0], the object placed in the box "
                        "on a white canvas (VAE latent, unscaled), the prompt; with a background image (inpaint "
                        "model) the background with the box whitened. Negative: zero image token, zero canvas, empty "
                        "prompt (the background kept). Sample 256x256 with DDIM 50 steps, cfg 3 as the reference.",
            inputs=[
                io.Clip.Input("clip", tooltip="The CLIP from PixArt CustomNet Loader (any SD1.5 CLIP-L works)."),
                io.ClipVision.Input("clip_vision", tooltip="The CLIP_VISION from PixArt CustomNet Loader."),
                io.Vae.Input("vae", tooltip="The VAE from PixArt CustomNet Loader."),
                io.Image.Input("image", tooltip="The object picture (a batch gives one result per picture). Without a "
                                                "mask it is used as it is, resized to 256x256: the object on white."),
                io.Int.Input("x0", default=0, min=0, max=CANVAS, tooltip="Box left on the 256x256 canvas."),
                io.Int.Input("y0", default=0, min=0, max=CANVAS, tooltip="Box top on the 256x256 canvas."),
                io.Int.Input("x1", default=CANVAS, min=0, max=CANVAS, tooltip="Box right on the 256x256 canvas."),
                io.Int.Input("y1", default=CANVAS, min=0, max=CANVAS, tooltip="Box bottom on the 256x256 canvas."),
                io.Float.Input("polar", default=0.0, min=POLAR_RANGE[0], max=POLAR_RANGE[1], step=0.5,
                               tooltip="Polar angle (degrees) of the new viewpoint; the app allows -30..30."),
                io.Float.Input("azimuth", default=0.0, min=AZIMUTH_RANGE[0], max=AZIMUTH_RANGE[1], step=0.5,
                               tooltip="Azimuth (degrees) of the new viewpoint; the app allows -60..60."),
                io.String.Input("text", multiline=True, default="on the seaside",
                                tooltip="The background / scene prompt (CLIP-L, first 77 tokens)."),
                io.Mask.Input("mask", optional=True,
                              tooltip="The object's mask (any segmentation / background-removal node, or Load "
                                      "Image's alpha). Pixels above one half count as marked."),
                io.Combo.Input("mask_convention", options=[MASK_BACKGROUND, MASK_OBJECT], default=MASK_BACKGROUND,
                               optional=True,
                               tooltip="What 1 means in the mask: Load Image gives 1 on the transparent background; "
                                       "segmentation nodes usually give 1 on the object."),
                io.Image.Input("background", optional=True,
                               tooltip="Background picture, for customnet_inpaint_v1.pt only (resized to 256x256)."),
            ],
            outputs=[io.Conditioning.Output(display_name="positive"),
                     io.Conditioning.Output(display_name="negative"),
                     io.Latent.Output(display_name="latent"),
                     io.Image.Output(display_name="object"),
                     io.Image.Output(display_name="canvas")],
        )

    @classmethod
    def execute(cls, clip, clip_vision, vae, image, x0, y0, x1, y1, polar, azimuth, text, mask=None,
                mask_convention=MASK_BACKGROUND, background=None) -> io.NodeOutput:
        box = ordered_box(x0, y0, x1, y1)
        n = image.shape[0]
        pbar = comfy.utils.ProgressBar(4)
        resample = "bicubic" if background is None else "bilinear"
        objects = []
        for i in range(n):
            fg = None
            if mask is not None:
                m = mask[min(i, mask.shape[0] - 1)] if mask.dim() == 3 else mask
                fg = foreground_from_mask(m, mask_convention == MASK_OBJECT, tuple(image.shape[1:3]))
            elif image.shape[-1] == 4:
                fg = foreground_from_mask(image[i, ..., 3], True, tuple(image.shape[1:3]))
            objects.append(object_image(image[i], fg, resample))
        obj = torch.stack(objects)                                   # [N, 256, 256, 3] 0..1
        # -1..1 NCHW, as the reference's img_cond (contiguous: a channels-last view resizes with other rounding)
        x = (obj.permute(0, 3, 1, 2) * 2.0 - 1.0).contiguous()
        pbar.update(1)

        mm.load_model_gpu(clip_vision.patcher)
        device = clip_vision.load_device
        pixels = clip_pixels(x).to(device)
        embed = clip_vision.model(pixel_values=pixels, intermediate_output=-2)[2].float().cpu()   # [N, D]
        camera = camera_vector(polar, azimuth).expand(n, 4)
        image_token = torch.cat([embed, camera], dim=-1)[:, None]    # [N, 1, D + 4], projected by the model
        pbar.update(1)

        canvas = location_canvas(x, box)
        canvas_latent = vae.encode(((canvas + 1.0) / 2.0).permute(0, 2, 3, 1))   # mode, unscaled
        zero_latent = torch.zeros_like(canvas_latent)
        if background is not None:
            bg = torch.stack([background_canvas(background[min(i, background.shape[0] - 1)], box) for i in range(n)])
            bg_latent = vae.encode(((bg + 1.0) / 2.0).permute(0, 2, 3, 1))
            positive_concat = torch.cat([canvas_latent, bg_latent], dim=1)
            negative_concat = torch.cat([zero_latent, bg_latent], dim=1)
        else:
            positive_concat, negative_concat = canvas_latent, zero_latent
        pbar.update(1)

        text_tokens = _text_tokens(clip, text)
        empty_tokens = _text_tokens(clip, "")
        zero_token = torch.zeros(n, 1, text_tokens.shape[-1])
        positive = [[text_tokens, {"concat_latent_image": positive_concat, "customnet_image": image_token}]]
        negative = [[empty_tokens, {"concat_latent_image": negative_concat, "customnet_image": zero_token}]]
        latent = {"samples": torch.zeros(n, 4, LATENT, LATENT)}
        pbar.update(1)
        preview = ((canvas + 1.0) / 2.0).clamp(0, 1).permute(0, 2, 3, 1)
        return io.NodeOutput(positive, negative, latent, obj, preview)


NODES = [PixArtCustomNetLoader, PixArtCustomNetConditioning]
