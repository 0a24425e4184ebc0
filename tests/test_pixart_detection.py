"""Every row of the variant table (docs/facts/pixart.md §1), in each layout it ships in, is recognised
and gets the table's latent format, PE interpolation, prediction type and token count."""
import pytest
import torch

from pixart_delta.tiny import pixart as fx
from pixart_delta.loaders.pixart_keys import count_blocks, original_to_diffusers
from pixart_delta.tiny.pixart_controlnet import controlnet_shapes, random_controlnet_file
from pixart_delta.loaders.pixart import inspect_checkpoint

# The table, written out by hand from pixart.md: variant -> (latent scale, tokens, pe_interp, prediction, micro, px)
TABLE = {
    "alpha_256": (0.18215, 120, 1.0, "eps", False, 256),
    "alpha_512": (0.18215, 120, 1.0, "eps", False, 512),
    "alpha_1024_ms": (0.18215, 120, 2.0, "eps", True, 1024),
    "sigma_256": (0.13025, 300, 0.5, "eps", False, 256),
    "sigma_512": (0.13025, 300, 1.0, "eps", False, 512),
    "sigma_1024": (0.13025, 300, 2.0, "eps", False, 1024),
    "sigma_2k": (0.13025, 300, 4.0, "eps", False, 2048),
    "lcm_1024": (0.18215, 120, 2.0, "eps", True, 1024),
    "dmd_512": (0.18215, 120, 1.0, "eps", False, 512),
    "yoso_512": (0.18215, 120, 1.0, "v", False, 512),
    "yoso_1024": (0.18215, 120, 2.0, "v", True, 1024),
    "controlnet_512": (0.18215, 120, 1.0, "eps", False, 512),
    "controlnet_1024": (0.18215, 120, 2.0, "eps", True, 1024),
}
LATENT_SCALE = {"SD15": 0.18215, "SDXL": 0.13025}

# (variant, layout, path inside the models folder as users keep it, diffusers interpolation_scale in config)
CASES = [
    ("alpha_256", "original", "PixArt-XL-2-256x256.pth", None),
    ("alpha_512", "original", "PixArt-XL-2-512x512.pth", None),
    ("alpha_512", "diffusers", "PixArt-XL-2-512x512/transformer/diffusion_pytorch_model.safetensors", None),
    ("alpha_1024_ms", "original", "PixArt-XL-2-1024-MS.pth", None),
    ("alpha_1024_ms", "diffusers", "PixArt-XL-2-1024-MS/transformer/diffusion_pytorch_model.safetensors", None),
    ("sigma_256", "original", "PixArt-Sigma-XL-2-256x256.pth", None),
    # diffusers' scripts/convert_pixart_sigma_to_diffusers.py writes interpolation_scale 0.5 for 256 px
    ("sigma_256", "diffusers", "PixArt-Sigma-XL-2-256x256/transformer/diffusion_pytorch_model.safetensors", 0.5),
    ("sigma_512", "original", "PixArt-Sigma-XL-2-512-MS.pth", None),
    ("sigma_512", "diffusers", "PixArt-Sigma-XL-2-512-MS/transformer/diffusion_pytorch_model.safetensors", None),
    ("sigma_1024", "original", "PixArt-Sigma-XL-2-1024-MS.pth", None),
    ("sigma_1024", "diffusers", "PixArt-Sigma-XL-2-1024-MS/transformer/diffusion_pytorch_model.safetensors", None),
    ("sigma_2k", "original", "PixArt-Sigma-XL-2-2K-MS.pth", None),
    ("sigma_2k", "diffusers", "PixArt-Sigma-XL-2-2K-MS/transformer/diffusion_pytorch_model.safetensors", 4),
    ("lcm_1024", "diffusers", "PixArt-LCM-XL-2-1024-MS/transformer/diffusion_pytorch_model.safetensors", None),
    ("dmd_512", "diffusers", "PixArt-Alpha-DMD-XL-2-512x512/transformer/diffusion_pytorch_model.bin", None),
    ("yoso_512", "diffusers", "yoso_pixart512/diffusion_pytorch_model.safetensors", None),
    ("yoso_512", "diffusers", "yoso_pixart512/new/diffusion_pytorch_model.safetensors", None),
    ("yoso_1024", "diffusers", "yoso_pixart1024/diffusion_pytorch_model.safetensors", None),
    ("controlnet_512", "controlnet", "PixArt-XL-2-512-ControlNet.pth", None),
    ("controlnet_1024", "controlnet", "PixArt-XL-2-1024-ControlNet.pth", None),
]


def write_case(root, variant, layout, rel, interp, size=fx.TINY):
    scale, tokens, _, _, micro, px = TABLE[variant]
    kw = dict(**size, micro=micro, native_px=px, tokens=tokens)
    path = root / rel
    if layout == "original":
        fx.write_original(path, fx.random_original(**kw))
    elif layout == "controlnet":
        fx.write_original(path, random_controlnet_file(micro=micro, native_px=px, copies=2, **size))
    else:
        cfg = fx.diffusers_config(**kw, interpolation_scale=interp)
        fx.write_diffusers(path.parent, fx.random_original(**kw), cfg, filename=path.name)
    return path


@pytest.mark.parametrize("variant,layout,rel,interp", CASES, ids=[f"{c[0]}-{c[1]}-{c[2].split('/')[-1][:12]}" for c in CASES])
def test_variant_detected_with_table_properties(tmp_path, variant, layout, rel, interp):
    path = write_case(tmp_path, variant, layout, rel, interp)
    ckpt = inspect_checkpoint(path)
    scale, tokens, pe, prediction, micro, px = TABLE[variant]
    assert ckpt.variant.name == variant
    assert ckpt.layout == layout
    assert LATENT_SCALE[ckpt.variant.latent_format] == scale
    assert ckpt.unet_config["pe_interpolation"] == pe
    assert ckpt.unet_config["base_size"] == px // 16
    assert ckpt.variant.prediction == prediction
    assert ckpt.unet_config["micro_condition"] == micro
    assert ckpt.unet_config["model_max_length"] == tokens
    assert ckpt.warnings == []


def test_every_table_row_is_covered():
    assert {c[0] for c in CASES} == set(TABLE)


def test_controlnet_file_exact_key_counts_and_split():
    """The real files: 668 keys (1024, micro-conditioned) and 660 (512)."""
    for micro, px, n in ((True, 1024, 668), (False, 512, 660)):
        shapes = {**{f"base_model.{k}": s for k, s in fx.original_shapes(micro=micro, native_px=px).items()},
                  **controlnet_shapes()}
        assert len(shapes) == n
        sd = {k: torch.zeros(1) for k in shapes}
        from pixart_delta.loaders.pixart import split_layout
        layout, base, control = split_layout(sd, None)
        assert layout == "controlnet" and len(base) + len(control) == n


def test_alpha_256_diffusers_config_scale_wins(tmp_path):
    """diffusers' conversion gives α-256 interpolation_scale 0.5 in config.json; the loader follows the config."""
    path = write_case(tmp_path, "alpha_256", "diffusers",
                      "PixArt-XL-2-256x256/transformer/diffusion_pytorch_model.safetensors", 0.5)
    ckpt = inspect_checkpoint(path)
    assert ckpt.variant.name == "alpha_256" and ckpt.unet_config["pe_interpolation"] == 0.5


def test_override_and_ambiguous_single_file(tmp_path):
    """A renamed diffusers 512 file without config: α-512 assumed with a warning; the override decides."""
    kw = dict(**fx.TINY, micro=False, native_px=512)
    path = fx.save(tmp_path / "my_pixart_512.safetensors", original_to_diffusers(fx.random_original(**kw)))
    ckpt = inspect_checkpoint(path)
    assert ckpt.variant.name == "alpha_512" and ckpt.warnings
    forced = inspect_checkpoint(path, variant="sigma_512")
    assert forced.variant.latent_format == "SDXL" and forced.unet_config["model_max_length"] == 300


def test_name_hints_in_renamed_files(tmp_path):
    kw = dict(**fx.TINY, micro=False, native_px=1024)
    path = fx.save(tmp_path / "pixart_sigma_1024.safetensors", original_to_diffusers(fx.random_original(**kw)))
    assert inspect_checkpoint(path).variant.name == "sigma_1024"
    kw = dict(**fx.TINY, micro=False, native_px=512)
    path = fx.save(tmp_path / "yoso_pixart512.safetensors", original_to_diffusers(fx.random_original(**kw)))
    assert inspect_checkpoint(path).variant.prediction == "v"


@pytest.mark.parametrize("absent", [False, True], ids=["null", "absent"])
def test_sigma_256_config_without_interpolation_scale(tmp_path, absent):
    """Without interpolation_scale diffusers uses max(sample_size // 64, 1) = 1, not the trained 0.5: the loader
    builds what diffusers builds from that config, still calls it Σ-256, says so, and the override restores 0.5."""
    kw = dict(**fx.TINY, micro=False, native_px=256, tokens=300)
    cfg = fx.diffusers_config(**kw, interpolation_scale=None)
    if absent:
        del cfg["interpolation_scale"]
    folder = tmp_path / "PixArt-Sigma-XL-2-256x256" / "transformer"
    path = fx.write_diffusers(folder, fx.random_original(**kw), cfg)
    ckpt = inspect_checkpoint(path)
    assert (ckpt.variant.name, ckpt.variant.title, ckpt.variant.latent_format) == ("sigma_256", "PixArt-Σ 256", "SDXL")
    assert (ckpt.unet_config["pe_interpolation"], ckpt.unet_config["base_size"]) == (1.0, 16)
    assert ckpt.unet_config["model_max_length"] == 300
    assert len(ckpt.warnings) == 1 and "0.5" in ckpt.warnings[0] and "sigma_256" in ckpt.warnings[0]
    forced = inspect_checkpoint(path, variant="sigma_256")
    assert (forced.unet_config["pe_interpolation"], forced.unet_config["base_size"], forced.warnings) == (0.5, 16, [])


def test_sigma_256_from_names_and_override(tmp_path):
    """A diffusers-layout Σ-256 file without config.json: "sigma" and "256" in its name decide; without them the
    weights cannot tell α-256 from Σ-256, so α-256 is assumed with a warning and the override offers sigma_256."""
    kw = dict(**fx.TINY, micro=False, native_px=256)
    sd = original_to_diffusers(fx.random_original(**kw))
    folder = tmp_path / "ComfyUI" / "models" / "diffusion_models"  # the test's own folder name says "sigma"
    for name in ("pixart_sigma_256.safetensors", "PixArt-Sigma-XL-2-256x256.safetensors"):
        ckpt = inspect_checkpoint(fx.save(folder / name, sd))
        assert ckpt.variant.name == "sigma_256" and ckpt.warnings == []
        assert (ckpt.unet_config["pe_interpolation"], ckpt.unet_config["base_size"]) == (0.5, 16)
    path = fx.save(folder / "my_pixart_256.safetensors", sd)
    ckpt = inspect_checkpoint(path)
    assert ckpt.variant.name == "alpha_256" and "sigma_256" in ckpt.warnings[0]
    forced = inspect_checkpoint(path, variant="sigma_256")
    assert forced.variant.latent_format == "SDXL" and forced.unet_config["model_max_length"] == 300
    assert (forced.unet_config["pe_interpolation"], forced.unet_config["base_size"]) == (0.5, 16)


# Depth is counted from the keys: the community Σ fine-tunes "PixArt-900M" (ptx0/pixart-900m-1024-ft and
# terminusresearch/pixart-900m-1024-ft-*, diffusers layout) have 42 blocks.
DEEP = dict(fx.TINY, depth=42)


@pytest.mark.parametrize("variant,layout,rel", [
    ("sigma_1024", "diffusers", "pixart-900m-1024-ft/transformer/diffusion_pytorch_model.safetensors"),
    ("sigma_1024", "original", "PixArt-Sigma-XL-2-1024-MS.pth"),
    ("alpha_512", "diffusers", "PixArt-XL-2-512x512/transformer/diffusion_pytorch_model.safetensors"),
    ("controlnet_1024", "controlnet", "PixArt-XL-2-1024-ControlNet.pth"),
], ids=lambda v: v.split("/")[0][:24])
def test_depth_42_is_counted_in_every_layout(tmp_path, variant, layout, rel):
    ckpt = inspect_checkpoint(write_case(tmp_path, variant, layout, rel, None, size=DEEP))
    assert (ckpt.variant.name, ckpt.layout, ckpt.unet_config["depth"]) == (variant, layout, 42)
    assert ckpt.warnings == []
    assert count_blocks(ckpt.state_dict, "blocks.") == 42 and "blocks.41.mlp.fc2.weight" in ckpt.state_dict
