"""Random-weight DPT depth folders in the real transformers layout (config.json + model.safetensors +
preprocessor_config.json, as Intel/dpt-large and Intel/dpt-hybrid-midas ship them), at reduced width: the same
tensor names and kinds, narrower and shallower (the real ones are 1.4 GB and 0.5 GB)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

# DPTImageProcessor(size=384) as transformers' conversion scripts (models/dpt/convert_dpt_*.py) save it
DPT_PREPROCESSOR = {
    "do_normalize": True, "do_pad": False, "do_rescale": True, "do_resize": True, "ensure_multiple_of": 1,
    "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "DPTImageProcessor", "image_std": [0.5, 0.5, 0.5],
    "keep_aspect_ratio": False, "resample": 3, "rescale_factor": 1 / 255, "size": {"height": 384, "width": 384},
}


def dpt_config(hybrid: bool = False, width: int = 32):
    """Intel/dpt-large's (ViT-L/16: 1024 wide, 24 layers, taps 5/11/17/23) or Intel/dpt-hybrid-midas's
    (BiT ResNet stem + ViT-B: taps 2/5/8/11, two BiT stages as the first two neck inputs) shape, narrow."""
    from transformers import DPTConfig
    common = dict(hidden_size=width, num_hidden_layers=4, num_attention_heads=2, intermediate_size=2 * width,
                  image_size=384, patch_size=16, backbone_out_indices=[0, 1, 2, 3], readout_type="project",
                  reassemble_factors=[4, 2, 1, 0.5], fusion_hidden_size=width, head_in_index=-1)
    if not hybrid:
        return DPTConfig(neck_hidden_sizes=[width // 4, width // 2, width, width], **common)
    # the first two neck inputs are BiT stages 1 and 2 as they are (real: 256 and 512 channels, stage 3 1024)
    bit = dict(model_type="bit", layer_type="bottleneck", global_padding="same", embedding_dynamic_padding=True,
               depths=[1, 1, 1], hidden_sizes=[width // 2, width, 2 * width], embedding_size=width // 4,
               num_groups=4, out_features=["stage1", "stage2", "stage3"])
    return DPTConfig(is_hybrid=True, backbone_config=bit, backbone_featmap_shape=[1, 2 * width, 24, 24],
                     neck_ignore_stages=[0, 1], neck_hidden_sizes=[width // 2, width, width, width], **common)


def spread_init(module: torch.nn.Module, generator: torch.Generator) -> None:
    """He-normal convolutions and linears (std sqrt(2 / fan_in)), small biases: transformers' std-0.02 init makes
    the activations of a narrow random DPT or UperNet vanish, so every map would come out flat."""
    for m in module.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)):
            w = m.weight
            fan_in = w.shape[1] * (w[0, 0].numel() if w.ndim > 2 else 1)
            if isinstance(m, torch.nn.ConvTranspose2d):
                fan_in = w.shape[0] * w[0, 0].numel()
            with torch.no_grad():
                w.copy_(torch.randn(w.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(0.05 * torch.randn(m.bias.shape, generator=generator))


def random_dpt(hybrid: bool = False, width: int = 32, seed: int = 0):
    """DPTForDepthEstimation with random weights whose depth maps vary over the picture."""
    from transformers import DPTForDepthEstimation
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = DPTForDepthEstimation(dpt_config(hybrid, width)).eval()
    spread_init(model.neck, g)
    spread_init(model.head, g)
    return model


def write_dpt_folder(path: Path, hybrid: bool = False, width: int = 32, seed: int = 0,
                     preprocessor: dict | None = DPT_PREPROCESSOR) -> Path:
    path = Path(path)
    random_dpt(hybrid, width, seed).save_pretrained(path, safe_serialization=True)
    if preprocessor is not None:
        (path / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    return path


FILES = {
    "depth/dpt-large": lambda p: write_dpt_folder(p),
    "depth/dpt-hybrid-midas": lambda p: write_dpt_folder(p, hybrid=True, seed=1),
}
