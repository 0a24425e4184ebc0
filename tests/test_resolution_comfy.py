"""PixArt Resolution and PixArt Resize Back inside ComfyUI: the empty latent at diffusers' bucket for tiny PixArt
MODELs of each native size, the native_size override, bad MODELs, and a graph PixArt Resolution -> KSampler ->
VAE Decode -> PixArt Resize Back -> Save Image that saves the asked size."""
import pytest
import torch
from diffusers.image_processor import PixArtImageProcessor
from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import (ASPECT_RATIO_256_BIN, ASPECT_RATIO_512_BIN,
                                                                    ASPECT_RATIO_1024_BIN)
from PIL import Image

from pixart_delta.tiny import pixart as fx
from pixart_delta.tiny import write_for_workflow

pytestmark = pytest.mark.comfyui

DIFFUSERS_BINS = {256: ASPECT_RATIO_256_BIN, 512: ASPECT_RATIO_512_BIN, 1024: ASPECT_RATIO_1024_BIN}


def alpha_256(path):
    fx.write_original(path, fx.random_original(seed=14, **fx.TINY, micro=False, native_px=256, tokens=120))


def sigma_256(path):
    fx.write_original(path, fx.random_original(seed=15, **fx.TINY, micro=False, native_px=256, tokens=300))


# file name (the published one, so `auto` detects the variant) -> (tiny writer, variant, native px)
MODELS = {"PixArt-Sigma-XL-2-1024-MS.pth": (fx.sigma_1024, "sigma_1024", 1024),
          "PixArt-XL-2-512x512.pth": (fx.alpha_512, "alpha_512", 512),
          "PixArt-XL-2-256x256.pth": (alpha_256, "alpha_256", 256),
          "PixArt-Sigma-XL-2-256x256.pth": (sigma_256, "sigma_256", 256)}


@pytest.fixture(scope="module")
def unet_dir(models_dir):
    d = models_dir / "diffusion_models" / "test_resolution"
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def load(unet_dir):
    from pixart_delta.loaders.pixart_comfy import load_pixart_model
    loaded = {}

    def get(name):
        if name not in loaded:
            writer = MODELS[name][0]
            if not (unet_dir / name).exists():
                writer(unet_dir / name)
            loaded[name] = load_pixart_model(unet_dir / name)
        return loaded[name]
    return get


def node(name):
    from pixart_delta.nodes import resolution
    return getattr(resolution, name)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("width,height,batch", [(1000, 300, 1), (333, 777, 2), (64, 64, 1), (3000, 3000, 1),
                                                (1344, 768, 3), (10000, 1, 1)])
def test_latent_is_at_diffusers_bucket(comfy, load, name, width, height, batch):
    import comfy.model_management
    from pixart_delta.loaders.pixart_comfy import pixart_variant
    model = load(name)
    _, variant, native_px = MODELS[name]
    assert pixart_variant(model).name == variant
    bucket_h, bucket_w = PixArtImageProcessor.classify_height_width_bin(height, width, ratios=DIFFUSERS_BINS[native_px])
    out = node("PixArtResolution").execute(model, width, height, batch, "auto").result
    latent, bucket_width, bucket_height, asked_width, asked_height = out
    assert (bucket_width, bucket_height, asked_width, asked_height) == (bucket_w, bucket_h, width, height)
    assert list(latent) == ["samples"]
    samples = latent["samples"]
    assert samples.shape == (batch, 4, bucket_h // 8, bucket_w // 8) and samples.dtype == torch.float32
    assert samples.device == comfy.model_management.intermediate_device() and not samples.any()


def test_native_size_picks_the_table_whatever_the_model(comfy, load):
    model = load("PixArt-Sigma-XL-2-1024-MS.pth")
    resolution = node("PixArtResolution")
    assert resolution.execute(model, 1000, 300, 1, "auto").result[1:3] == (1856, 512)
    assert resolution.execute(model, 1000, 300, 1, "512").result[1:3] == (928, 256)
    from diffusers.pipelines.pixart_alpha.pipeline_pixart_sigma import ASPECT_RATIO_2048_BIN
    h, w = PixArtImageProcessor.classify_height_width_bin(300, 1000, ratios=ASPECT_RATIO_2048_BIN)
    assert resolution.execute(model, 1000, 300, 1, "2048").result[0]["samples"].shape == (1, 4, h // 8, w // 8)


def test_core_pixart_model_needs_native_size(comfy):
    """ComfyUI's own PixArt MODEL records no trained size: auto says what to do, a number works."""
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models
    config = comfy.supported_models.PixArtSigma({"disable_unet_model_creation": True})
    core = comfy.model_patcher.ModelPatcher(comfy.model_base.PixArt(config), torch.device("cpu"), torch.device("cpu"))
    resolution = node("PixArtResolution")
    from pixart_delta.samplers.resolution import ResolutionError
    with pytest.raises(ResolutionError, match="does not say which size it was trained at .* set native_size"):
        resolution.execute(core, 1024, 1024, 1, "auto")
    assert resolution.execute(core, 1024, 1024, 1, "1024").result[1:3] == (1024, 1024)


def test_non_pixart_model_is_refused(comfy):
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models
    sd15 = comfy.supported_models.SD15({"disable_unet_model_creation": True})
    unet = comfy.model_patcher.ModelPatcher(comfy.model_base.BaseModel(sd15), torch.device("cpu"), torch.device("cpu"))
    from pixart_delta.samplers.resolution import ResolutionError
    for native_size in ("auto", "1024"):
        with pytest.raises(ResolutionError, match="the MODEL is a BaseModel, not a PixArt model"):
            node("PixArtResolution").execute(unet, 1024, 1024, 1, native_size)


def test_resize_back_node_is_diffusers_on_channels_last(comfy):
    image = torch.rand(2, 512, 1856, 3, generator=torch.Generator().manual_seed(0))
    (got,) = node("PixArtResizeBack").execute(image, 1000, 300).result
    expected = PixArtImageProcessor.resize_and_crop_tensor(image.movedim(-1, 1), 1000, 300).movedim(1, -1)
    assert got.shape == (2, 300, 1000, 3)
    assert (got - expected).abs().max().item() < 1e-6


def test_graph_saves_the_asked_size(comfy, comfy_dirs, unet_dir):
    """256 px PixArt-α (small buckets, quick on CPU): 300x100 asked -> 432x144 bucket sampled and decoded ->
    300x100 saved."""
    if not (unet_dir / "PixArt-XL-2-256x256.pth").exists():
        alpha_256(unet_dir / "PixArt-XL-2-256x256.pth")
    graph = {
        "1": {"class_type": "PixArtCheckpointLoader",
              "inputs": {"ckpt_name": "test_resolution/PixArt-XL-2-256x256.pth", "variant": "auto",
                         "weight_dtype": "default"}},
        "2": {"class_type": "PixArtT5Loader",
              "inputs": {"t5_name": "PixArt-T5/model-00001-of-00002.safetensors", "family": "alpha", "max_tokens": 0,
                         "weight_dtype": "default", "device": "default", "clean_caption": True}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse at dusk", "clip": ["2", 0]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["2", 0]}},
        "5": {"class_type": "PixArtResolution",
              "inputs": {"model": ["1", 0], "width": 300, "height": 100, "batch_size": 2, "native_size": "auto"}},
        "6": {"class_type": "KSampler",
              "inputs": {"model": ["1", 0], "positive": ["3", 0], "negative": ["4", 0], "latent_image": ["5", 0],
                         "seed": 7, "steps": 2, "cfg": 4.5, "sampler_name": "euler", "scheduler": "normal",
                         "denoise": 1.0}},
        "7": {"class_type": "VAELoader", "inputs": {"vae_name": "vae-ft-mse-840000-ema-pruned.safetensors"}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["7", 0]}},
        "9": {"class_type": "PixArtResizeBack", "inputs": {"image": ["8", 0], "width": ["5", 3], "height": ["5", 4]}},
        "10": {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": "resolution_asked"}},
        "11": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "resolution_bucket"}},
    }
    write_for_workflow(graph, comfy_dirs["models"])
    outputs = comfy.run(graph)
    sizes = {}
    for node_id in ("10", "11"):
        for img in outputs[node_id]["images"]:
            with Image.open(comfy_dirs["output"] / img.get("subfolder", "") / img["filename"]) as im:
                sizes.setdefault(node_id, set()).add(im.size)
        assert len(outputs[node_id]["images"]) == 2
    assert sizes == {"10": {(300, 100)}, "11": {(432, 144)}}
