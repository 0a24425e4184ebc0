"""CustomNet without ComfyUI: the input preparation (preprocessors/customnet.py) against TencentARC/CustomNet's
formulas restated here (main/app.py prepare_data, main/main_inpaint.py, ldm/util.py load_and_preprocess,
ldm/modules/encoders/modules.py FrozenCLIPImageEmbedder.preprocess) and hand-computed values; the checkpoint
layout code (loaders/customnet.py) on a state dict written here in the released key layout, independently of
pixart_delta/tiny/customnet.py. The model itself is tested inside ComfyUI in test_customnet_comfy.py."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pixart_delta.loaders.customnet import (SCHEDULE_KEYS, read_checkpoint, report_unused, schedule_matches,
                                            split_checkpoint, text_branch_blocks, text_config, vae_ddconfig,
                                            vision_config)
from pixart_delta.loaders.files import CheckpointError
from pixart_delta.preprocessors.customnet import (CustomNetInputError, background_canvas, camera_vector, clip_pixels,
                                                  foreground_from_mask, location_canvas, object_image, ordered_box)
from reference import customnet_object

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)    # modules.py FrozenCLIPImageEmbedder buffers
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def as_image(u8: np.ndarray) -> torch.Tensor:
    """A ComfyUI IMAGE [H, W, 3] in 0..1 from 8-bit RGB."""
    return torch.from_numpy(u8).float() / 255.0


def to_minus1_1(u8: np.ndarray) -> torch.Tensor:
    """app.py: img2tensor(...) / 255 * 2 - 1, NCHW."""
    return torch.from_numpy(u8).float().permute(2, 0, 1)[None] / 255.0 * 2 - 1


def picture(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ---------------- camera vector ----------------

@pytest.mark.parametrize("polar,azimuth,expected", [
    (0.0, 0.0, [0.0, 0.0, 1.0, 0.0]),
    (0.0, -30.0, [0.0, -0.5, 0.8660254037844386, 0.0]),                                 # the app's first example
    (30.0, 60.0, [0.5235987755982988, 0.8660254037844386, 0.5, 0.0]),
    (-25.0, -35.0, [-0.4363323129985824, -0.573576436351046, 0.8191520442889918, 0.0]),  # second example
    (10.0, 20.0, [0.17453292519943295, 0.3420201433256687, 0.9396926207859084, 0.0]),     # sixth example
])
def test_camera_vector_is_radians_polar_sin_cos_azimuth_zero(polar, azimuth, expected):
    """app.py: T = [radians(polar), sin(radians(azimuth)), cos(radians(azimuth)), 0] (values worked out by hand;
    core's Stable Zero123 conditioning uses [radians(-elevation), sin, cos, pi/2] instead)."""
    t = camera_vector(polar, azimuth)
    assert t.dtype == torch.float32 and t.shape == (4,)
    assert torch.allclose(t, torch.tensor(expected, dtype=torch.float32), atol=1e-7, rtol=0)


# ---------------- the object picture ----------------

def alpha_with_object(h: int, w: int, top: int, left: int, oh: int, ow: int) -> np.ndarray:
    """An alpha channel: an opaque rectangle with a transparent hole and a soft edge at 127 / 128 (just outside /
    just inside the reference's alpha > 127)."""
    a = np.zeros((h, w), np.uint8)
    a[top:top + oh, left:left + ow] = 255
    a[top + oh // 3:top + oh // 2, left + ow // 3:left + ow // 2] = 0
    a[top:top + oh, left] = 128
    a[top:top + oh, left + ow - 1] = 127
    return a


@pytest.mark.parametrize("size,box", [
    ((420, 300), (30, 20, 350, 240)),     # larger than 200: shrunk (LANCZOS), the long side to 200
    ((180, 150), (41, 17, 91, 37)),       # smaller: kept at its size (thumbnail never enlarges), odd margins
    ((256, 256), (0, 0, 256, 256)),       # the whole picture
], ids=["shrunk", "kept", "whole"])
@pytest.mark.parametrize("mask_from", ["load_image", "segmentation"])
def test_object_matches_load_and_preprocess(size, box, mask_from):
    """White outside the mask, cropped to cv2.boundingRect, PIL thumbnail (200, 200) LANCZOS, centred on white
    256x256: ldm/util.py load_and_preprocess restated with PIL / OpenCV (tests/reference.py), given the alpha that
    the reference's matting would give. Load Image's MASK is 1 - alpha; a segmentation node's is alpha."""
    h, w = size
    img = picture(h, w, seed=h)
    alpha = alpha_with_object(h, w, *box)
    a = torch.from_numpy(alpha).float() / 255.0
    mask, is_object = (1.0 - a, False) if mask_from == "load_image" else (a, True)
    ours = object_image(as_image(img), foreground_from_mask(mask, is_object, (h, w)))
    ref = customnet_object(img, alpha)
    assert ours.shape == (256, 256, 3)
    assert torch.equal(ours, as_image(ref))


def test_foreground_threshold_is_alpha_above_127():
    """The reference keeps alpha > 127 of its matting output: 127 is background, 128 object, with either mask
    convention and at the image's size when the mask is already there."""
    alpha = np.array([[0, 126, 127, 128, 129, 255]], np.uint8)
    a = torch.from_numpy(alpha).float() / 255.0
    want = alpha > 127
    assert (foreground_from_mask(1.0 - a, False, (1, 6)) == want).all()
    assert (foreground_from_mask(a, True, (1, 6)) == want).all()


def test_a_smaller_mask_is_stretched_to_the_picture():
    """Load Image gives a 64x64 zero MASK for a picture without alpha: the whole picture is the object."""
    fg = foreground_from_mask(torch.zeros(1, 64, 64), False, (120, 90))
    assert fg.shape == (120, 90) and fg.all()


@pytest.mark.parametrize("resample,reference", [
    ("bicubic", "app"),          # app.py prepare_data: PIL Image.resize((256, 256)), PIL's default filter
    ("bilinear", "inpaint"),     # main_inpaint.py: cv2.resize(img, (256, 256)), OpenCV's default filter
])
def test_object_without_mask_is_resized_as_the_scripts_do(resample, reference):
    from PIL import Image
    import cv2
    img = picture(190, 310, seed=4)
    if reference == "app":
        ref = np.array(Image.fromarray(img).resize((256, 256)))
    else:
        ref = cv2.resize(img, (256, 256))
    ours = object_image(as_image(img), None, resample)
    assert torch.equal(ours, as_image(ref))
    exact = picture(256, 256, seed=5)
    assert torch.equal(object_image(as_image(exact), None, resample), as_image(exact))


def test_an_empty_mask_is_refused():
    with pytest.raises(CustomNetInputError, match="mask is empty"):
        object_image(as_image(picture(40, 40)), np.zeros((40, 40), bool))


# ---------------- location canvas and background ----------------

def app_location(img_cond: torch.Tensor, x0, y0, x1, y1) -> torch.Tensor:
    """app.py prepare_data (main_inpaint.py the same with its --bbox): min/max of the sliders, a ones (white)
    canvas, the object resized bilinearly into the box."""
    x_0, x_1, y_0, y_1 = min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1)
    padding = torch.ones_like(img_cond)
    padding[:, :, y_0:y_1, x_0:x_1] = torch.nn.functional.interpolate(img_cond, (y_1 - y_0, x_1 - x_0),
                                                                      mode="bilinear")
    return padding


@pytest.mark.parametrize("sliders", [(50, 50, 256, 256), (256, 256, 50, 50), (20, 20, 240, 240), (0, 0, 256, 256),
                                     (13, 200, 101, 7)])
def test_location_canvas_is_the_apps(sliders):
    obj = to_minus1_1(customnet_object(picture(200, 160, 6), alpha_with_object(200, 160, 10, 10, 170, 120)))
    ours = location_canvas(obj, ordered_box(*sliders))
    ref = app_location(obj, *sliders)
    assert torch.equal(ours, ref)
    x0, x1 = sorted(sliders[0::2])
    y0, y1 = sorted(sliders[1::2])
    outside = torch.ones(256, 256, dtype=torch.bool)
    outside[y0:y1, x0:x1] = False
    assert (ours[:, :, outside] == 1).all()
    if (x0, y0, x1, y1) == (0, 0, 256, 256):
        assert torch.equal(ours, obj)


def test_location_canvas_takes_a_batch():
    objs = torch.rand(3, 3, 256, 256) * 2 - 1
    ours = location_canvas(objs, (30, 40, 130, 240))
    for i in range(3):
        assert torch.equal(ours[i:i + 1], app_location(objs[i:i + 1], 30, 40, 130, 240))


def test_an_empty_box_is_refused():
    with pytest.raises(CustomNetInputError, match="empty"):
        ordered_box(40, 10, 40, 200)


def test_background_is_main_inpaints():
    """main_inpaint.py: cv2.resize(bg, (256, 256)) (bilinear), / 255 * 2 - 1, the box set to 1 (white)."""
    import cv2
    bg = picture(200, 300, 7)
    x0, y0, x1, y1 = 50, 50, 200, 200
    ref = to_minus1_1(cv2.resize(bg, (256, 256)))[0]
    ref[:, y0:y1, x0:x1] = 1
    ours = background_canvas(as_image(bg), (x0, y0, x1, y1))
    assert ours.shape == (3, 256, 256)
    assert torch.allclose(ours, ref, atol=1e-6, rtol=0)


# ---------------- CLIP image preprocessing ----------------

def test_clip_pixels_are_the_references_restated():
    """FrozenCLIPImageEmbedder.preprocess: bicubic resize to 224 with align_corners=True and no antialias
    (kornia.geometry.resize), (x + 1) / 2, CLIP mean / std."""
    x = to_minus1_1(customnet_object(picture(300, 260, 8), alpha_with_object(300, 260, 20, 30, 250, 200)))
    ref = F.interpolate(x, (224, 224), mode="bicubic", align_corners=True)
    ref = ((ref + 1) / 2 - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    ours = clip_pixels(x)
    assert ours.shape == (1, 3, 224, 224)
    assert torch.allclose(ours, ref, atol=1e-6, rtol=0)


def test_clip_pixels_match_kornia():
    """The reference's own call, where kornia is installed (ComfyUI brings it; the pack does not need it)."""
    kornia = pytest.importorskip("kornia", reason="kornia (the reference's resize) is not installed")
    x = torch.rand(2, 3, 256, 256) * 2 - 1
    ref = kornia.geometry.resize(x, (224, 224), interpolation="bicubic", align_corners=True)
    ref = kornia.enhance.normalize((ref + 1.0) / 2.0, torch.tensor(CLIP_MEAN), torch.tensor(CLIP_STD))
    assert torch.allclose(clip_pixels(x), ref, atol=1e-5, rtol=0)


def test_clip_pixels_by_hand():
    """A white picture is (1 - mean) / std in every pixel; with align_corners the four corner pixels keep their
    values (an antialiased or centre-cropped resize, as core's clip_preprocess, would not)."""
    white = torch.ones(1, 3, 256, 256)
    expected = [1.9303363, 2.0748838, 2.1458970]       # (1 - mean) / std per channel, worked out by hand
    ours = clip_pixels(white)
    for c in range(3):
        assert torch.allclose(ours[0, c], torch.full((224, 224), expected[c]), atol=1e-5, rtol=0)
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    ours = clip_pixels(x)
    mean, std = torch.tensor(CLIP_MEAN), torch.tensor(CLIP_STD)
    for i, j in ((0, 0), (0, -1), (-1, 0), (-1, -1)):
        # (the far corners' source coordinate 223 * 255 / 223 carries float32 rounding)
        assert torch.allclose(ours[0, :, i, j], ((x[0, :, i, j] + 1) / 2 - mean) / std, atol=3e-4, rtol=0)


# ---------------- checkpoint layout (a state dict written here, not by pixart_delta.tiny) ----------------

CH, CTX, VAE_CH, VISION_W, VISION_LAYERS, TEXT_LAYERS = 32, 128, 32, 128, 3, 2
# configs/config_customnet.yaml (SD1.5: attention_resolutions [4, 2, 1], channel_mult [1, 2, 4, 4], 2 res blocks):
# a SpatialTransformer at index 1 of these blocks (ldm openaimodel.py), with its channel multiplier.
TRANSFORMER_BLOCKS = {**{f"input_blocks.{i}.1": m for i, m in ((1, 1), (2, 1), (4, 2), (5, 2), (7, 4), (8, 4))},
                      "middle_block.1": 4,
                      **{f"output_blocks.{i}.1": (4, 4, 4, 2, 2, 2, 1, 1, 1)[i - 3] for i in range(3, 12)}}
# The same blocks as ComfyUI's transformer_options name them: (block kind, block number, transformer index).
COMFY_BLOCK_NAMES = {**{f"input_blocks.{i}.1": ("input", i, 0) for i in (1, 2, 4, 5, 7, 8)},
                     "middle_block.1": ("middle", 0, 0),
                     **{f"output_blocks.{i}.1": ("output", i, 0) for i in range(3, 12)}}
OPENAI_CLIP_TEXT_REMNANTS = ("positional_embedding", "text_projection", "logit_scale", "token_embedding.weight",
                             "ln_final.weight", "ln_final.bias")


def ldm_linear_schedule() -> dict[str, torch.Tensor]:
    """ldm make_beta_schedule("linear", 1000, 0.00085, 0.012) and DDPM.register_schedule's buffers (v_posterior
    0), in numpy float64 as ldm computes them, stored as float32 like the released state dict."""
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=np.float64) ** 2
    ac = np.cumprod(1.0 - betas)
    prev = np.append(1.0, ac[:-1])
    var = betas * (1.0 - prev) / (1.0 - ac)
    values = [betas, ac, prev, np.sqrt(ac), np.sqrt(1 - ac), np.log(1 - ac), np.sqrt(1 / ac), np.sqrt(1 / ac - 1),
              var, np.log(np.maximum(var, 1e-20)), betas * np.sqrt(prev) / (1 - ac), (1 - prev) * np.sqrt(1 - betas) / (1 - ac)]
    names = ["betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
             "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
             "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2"]
    return {n: torch.from_numpy(v).float() for n, v in zip(names, values)}


def plain_unet(in_channels: int) -> dict[str, torch.Tensor]:
    """The UNet keys the layout code reads (ldm names): the input convolution and every transformer block's
    attention projections, with CustomNet's bias-free to_k_text / to_v_text beside attn2's to_k / to_v."""
    sd = {"input_blocks.0.0.weight": torch.zeros(CH, in_channels, 3, 3), "input_blocks.0.0.bias": torch.zeros(CH),
          "out.2.weight": torch.zeros(4, CH, 3, 3), "out.2.bias": torch.zeros(4)}
    for block, mult in TRANSFORMER_BLOCKS.items():
        inner, t = CH * mult, f"{block}.transformer_blocks.0."
        for attn, ctx in (("attn1", inner), ("attn2", CTX)):
            sd[t + f"{attn}.to_q.weight"] = torch.zeros(inner, inner)
            sd[t + f"{attn}.to_k.weight"] = torch.zeros(inner, ctx)
            sd[t + f"{attn}.to_v.weight"] = torch.zeros(inner, ctx)
            sd[t + f"{attn}.to_out.0.weight"] = torch.zeros(inner, inner)
        sd[t + "attn2.to_k_text.weight"] = torch.zeros(inner, CTX)
        sd[t + "attn2.to_v_text.weight"] = torch.zeros(inner, CTX)
    return sd


def plain_vae() -> dict[str, torch.Tensor]:
    """ldm AutoencoderKL encoder names (ch_mult 1, 2, 4, 4; 2 res blocks; 4 latent channels, double_z)."""
    sd = {"encoder.conv_in.weight": torch.zeros(VAE_CH, 3, 3, 3), "quant_conv.weight": torch.zeros(8, 8, 1, 1),
          "encoder.conv_out.weight": torch.zeros(8, VAE_CH * 4, 3, 3), "decoder.conv_in.weight": torch.zeros(VAE_CH * 4, 4, 3, 3)}
    prev = VAE_CH
    for i, m in enumerate((1, 2, 4, 4)):
        for j in range(2):
            sd[f"encoder.down.{i}.block.{j}.conv1.weight"] = torch.zeros(VAE_CH * m, prev, 3, 3)
            sd[f"encoder.down.{i}.block.{j}.conv2.weight"] = torch.zeros(VAE_CH * m, VAE_CH * m, 3, 3)
            prev = VAE_CH * m
    return sd


def plain_openai_clip() -> dict[str, torch.Tensor]:
    """OpenAI CLIP (clip.model.CLIP) ViT-?/14 at 224 px after FrozenCLIPImageEmbedder deletes `transformer`."""
    w = VISION_W
    sd = {"visual.conv1.weight": torch.zeros(w, 3, 14, 14), "visual.class_embedding": torch.zeros(w),
          "visual.positional_embedding": torch.zeros(16 * 16 + 1, w), "visual.proj": torch.zeros(w, CTX),
          "visual.ln_pre.weight": torch.ones(w), "visual.ln_post.weight": torch.ones(w)}
    for i in range(VISION_LAYERS):
        b = f"visual.transformer.resblocks.{i}."
        sd.update({b + "attn.in_proj_weight": torch.zeros(3 * w, w), b + "attn.out_proj.weight": torch.zeros(w, w),
                   b + "mlp.c_fc.weight": torch.zeros(4 * w, w), b + "mlp.c_proj.weight": torch.zeros(w, 4 * w)})
    sd.update({"positional_embedding": torch.zeros(77, CTX), "text_projection": torch.zeros(CTX, CTX),
               "logit_scale": torch.tensor(4.6052), "token_embedding.weight": torch.zeros(49408, CTX),
               "ln_final.weight": torch.ones(CTX), "ln_final.bias": torch.zeros(CTX)})
    return sd


def transformers_text_model():
    """SD1.5's CLIP-L as transformers builds it, at a narrow width; its state dict with the text_model. prefix
    and embeddings.position_ids as transformers 4.22 saved them."""
    import transformers
    cfg = transformers.CLIPTextConfig(hidden_size=CTX, intermediate_size=4 * CTX, num_hidden_layers=TEXT_LAYERS,
                                      num_attention_heads=CTX // 64, max_position_embeddings=77, vocab_size=49408,
                                      projection_dim=CTX)
    with torch.device("meta"):                       # the names and shapes only (a random init takes seconds)
        names = {k: (v.shape, v.dtype) for k, v in transformers.CLIPTextModel(cfg).state_dict().items()}
    sd = {(k if k.startswith("text_model.") else "text_model." + k): torch.zeros(shape, dtype=dtype)
          for k, (shape, dtype) in names.items()}
    sd.setdefault("text_model.embeddings.position_ids", torch.arange(77)[None])
    return cfg, sd


@pytest.fixture(scope="module")
def released_layout():
    """{name: tensor} as customnet_v1.pt holds it (model.state_dict() of the whole LatentDiffusion), narrow."""
    cfg, text = transformers_text_model()
    sd = dict(ldm_linear_schedule())
    sd.update({"model.diffusion_model." + k: v for k, v in plain_unet(8).items()})
    sd.update({"first_stage_model." + k: v for k, v in plain_vae().items()})
    sd.update({"cond_stage_model.model." + k: v for k, v in plain_openai_clip().items()})
    sd.update({"text_encoder.transformer." + k: v for k, v in text.items()})
    sd["cc_projection.weight"] = torch.zeros(CTX, CTX + 4)
    sd["cc_projection.bias"] = torch.zeros(CTX)
    return cfg, sd


def test_parts_and_configurations_from_the_released_layout(released_layout, tmp_path):
    text_cfg, sd = released_layout
    path = tmp_path / "customnet_v1.pt"
    torch.save(sd, str(path))
    parts = read_checkpoint(path)
    assert (parts.in_channels, parts.inpaint) == (8, False)
    assert parts.unet.keys() == {k[len("model.diffusion_model."):] for k in sd if k.startswith("model.diffusion_model.")}
    assert set(parts.vision) == {k[len("cond_stage_model.model.visual."):] for k in sd
                                 if k.startswith("cond_stage_model.model.visual.")}
    assert set(parts.schedule) == set(SCHEDULE_KEYS) and len(SCHEDULE_KEYS) == 12
    assert set(parts.cc_projection) == {"weight", "bias"}
    # the OpenAI CLIP text remnants are the keys no part takes
    assert sorted(parts.unused) == sorted("cond_stage_model.model." + k for k in OPENAI_CLIP_TEXT_REMNANTS)
    # the 16 dual cross-attention blocks, as ComfyUI names them
    blocks = text_branch_blocks(parts.unet)
    assert blocks == {COMFY_BLOCK_NAMES[b]: f"{b}.transformer_blocks.0.attn2" for b in TRANSFORMER_BLOCKS}
    assert len(blocks) == 16
    assert vae_ddconfig(parts.vae) == {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3,
                                       "out_ch": 3, "ch": VAE_CH, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2,
                                       "attn_resolutions": [], "dropout": 0.0}
    v = vision_config(parts.vision)
    assert (v["hidden_size"], v["num_hidden_layers"], v["intermediate_size"], v["num_attention_heads"],
            v["image_size"], v["patch_size"], v["projection_dim"], v["hidden_act"]) == \
        (VISION_W, VISION_LAYERS, 4 * VISION_W, VISION_W // 64, 224, 14, CTX, "quick_gelu")
    t = text_config(parts.text)
    assert t == {"hidden_size": text_cfg.hidden_size, "num_hidden_layers": text_cfg.num_hidden_layers,
                 "intermediate_size": text_cfg.intermediate_size, "num_attention_heads": text_cfg.num_attention_heads,
                 "projection_dim": text_cfg.projection_dim, "vocab_size": text_cfg.vocab_size,
                 "max_position_embeddings": text_cfg.max_position_embeddings}
    assert schedule_matches(parts.schedule) is True


def test_lightning_checkpoint_and_inpaint_model(released_layout, tmp_path):
    """A Lightning checkpoint ({"state_dict": ..., "global_step": ...}) holds the same dict; the inpaint model's
    UNet takes 12 channels."""
    _, sd = released_layout
    sd = dict(sd)
    sd["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(CH, 12, 3, 3)
    path = tmp_path / "customnet_inpaint_v1.ckpt"
    torch.save({"state_dict": sd, "global_step": 12345}, str(path))
    parts = read_checkpoint(path)
    assert (parts.in_channels, parts.inpaint) == (12, True)
    assert "12 input channels" in parts.kind
    assert len(text_branch_blocks(parts.unet)) == 16


def test_stray_keys_are_reported_by_name(released_layout, tmp_path):
    """An EMA copy's bookkeeping (ldm LitEma: model_ema.decay, model_ema.num_updates) and a non-tensor entry are
    nobody's: listed with the file name, sorted, after the CLIP text remnants."""
    _, sd = released_layout
    sd = {**sd, "model_ema.decay": torch.tensor(0.9999), "model_ema.num_updates": torch.tensor(10, dtype=torch.int32),
          "epoch": 3}
    parts = split_checkpoint(sd, tmp_path / "customnet_v1.pt")
    want = sorted(["model_ema.decay", "model_ema.num_updates", "epoch",
                   *("cond_stage_model.model." + k for k in OPENAI_CLIP_TEXT_REMNANTS)])
    assert sorted(parts.unused) == want
    line = report_unused(parts.path, parts.unused)
    assert line == f"customnet_v1.pt: {len(want)} key(s) not used: {', '.join(want)}"
    assert report_unused(parts.path, []) == ""


def test_schedule_check(released_layout):
    _, sd = released_layout
    schedule = {k: sd[k] for k in SCHEDULE_KEYS}
    assert schedule_matches(schedule) is True
    cosine = torch.cos((torch.arange(1000) / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2
    assert schedule_matches({**schedule, "alphas_cumprod": cosine.float()}) is False
    assert schedule_matches({}) is None


@pytest.mark.parametrize("damage,message", [
    ("cc_projection_width", r"cc_projection.weight is \(768, 772\), expected \(128, 132\)"),
    ("one_block_without_to_v_text", r"1 of 16 transformer blocks have no to_k_text/to_v_text "
                                    r"\(first: output_blocks.11.1.transformer_blocks.0.attn2\)"),
    ("no_vae", r"no the VAE \(first_stage_model"),
    ("no_image_encoder", r"no the CLIP image encoder"),
    ("no_text_encoder", r"no the text encoder"),
])
def test_damaged_layouts_are_named(released_layout, tmp_path, damage, message):
    """Layout errors the loader node tests (test_customnet_comfy.py) do not cover: each names the file."""
    _, sd = released_layout
    sd = dict(sd)
    if damage == "cc_projection_width":
        sd["cc_projection.weight"] = torch.zeros(768, 772)
    elif damage == "one_block_without_to_v_text":
        del sd["model.diffusion_model.output_blocks.11.1.transformer_blocks.0.attn2.to_v_text.weight"]
    else:
        prefix = {"no_vae": "first_stage_model.", "no_image_encoder": "cond_stage_model.model.visual.",
                  "no_text_encoder": "text_encoder."}[damage]
        sd = {k: v for k, v in sd.items() if not k.startswith(prefix)}
    with pytest.raises(CheckpointError, match=message) as e:
        split_checkpoint(sd, tmp_path / f"customnet_{damage}.pt")
    assert f"customnet_{damage}.pt" in str(e.value)
