"""Bad input to the PixArt loader: clear errors naming the file, what was found and what was expected."""
import os
import pickle

import pytest
import torch

from pixart_delta.tiny import pixart as fx
from pixart_delta.loaders.files import CheckpointError, load_state_dict
from pixart_delta.loaders.pixart import inspect_checkpoint

# a few keys of a real SD1.5 checkpoint (ldm layout)
SD15_KEYS = {
    "model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3),
    "model.diffusion_model.input_blocks.0.0.bias": (320,),
    "model.diffusion_model.time_embed.0.weight": (1280, 320),
    "model.diffusion_model.out.2.weight": (4, 320, 3, 3),
    "first_stage_model.decoder.conv_in.weight": (512, 4, 3, 3),
}


def test_sd15_unet_is_named_as_such(tmp_path):
    path = fx.save(tmp_path / "v1-5-pruned-emaonly.safetensors", {k: torch.zeros(s) for k, s in SD15_KEYS.items()})
    with pytest.raises(CheckpointError) as e:
        inspect_checkpoint(path)
    msg = str(e.value)
    assert "v1-5-pruned-emaonly.safetensors" in msg and "Stable Diffusion UNet" in msg
    assert "blocks.0.attn.qkv.weight" in msg  # what was expected


def test_truncated_safetensors(tmp_path):
    path = fx.save(tmp_path / "PixArt-Sigma-XL-2-1024-MS.safetensors",
                   fx.random_original(**fx.TINY, micro=False, native_px=1024, tokens=300))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(CheckpointError) as e:
        inspect_checkpoint(path)
    assert path.name in str(e.value) and "truncated" in str(e.value)


def test_garbage_safetensors_header(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(CheckpointError, match="broken.safetensors"):
        load_state_dict(path)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_code_running_pickle_is_refused_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "PixArt-XL-2-512x512.pth"
    torch.save({"state_dict": {"blocks.0.attn.qkv.weight": torch.zeros(3)}, "evil": _RunsCode(marker)}, path)
    with pytest.raises(CheckpointError) as e:
        inspect_checkpoint(path)
    assert "refused" in str(e.value) and path.name in str(e.value)
    assert not marker.exists()
    # the same payload as a raw (non-zip) pickle
    raw = tmp_path / "raw.bin"
    raw.write_bytes(pickle.dumps(_RunsCode(marker)))
    with pytest.raises(CheckpointError, match="refused"):
        load_state_dict(raw)
    assert not marker.exists()


def test_missing_tensor_is_named(tmp_path):
    sd = fx.random_original(**fx.TINY, micro=False, native_px=512)
    del sd["final_layer.linear.weight"]
    path = fx.write_original(tmp_path / "PixArt-XL-2-512x512.pth", sd)
    with pytest.raises(CheckpointError, match="final_layer.linear.weight"):
        inspect_checkpoint(path)


def test_unknown_variant_override(tmp_path):
    path = fx.write_original(tmp_path / "a.pth", fx.random_original(**fx.TINY, micro=False, native_px=512))
    with pytest.raises(CheckpointError, match="unknown variant"):
        inspect_checkpoint(path, variant="sdxl")
