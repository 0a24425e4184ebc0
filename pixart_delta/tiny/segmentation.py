"""A random-weight UperNet ADE20K folder in the real transformers layout (config.json + model.safetensors +
preprocessor_config.json, as openmmlab/upernet-convnext-small ships them), at reduced width (the real one is
0.3 GB): ConvNeXt backbone of four stages, pyramid pooling 1/2/3/6, FPN, auxiliary FCN head, 150 classes."""
from __future__ import annotations

import json
from pathlib import Path

import torch

# SegformerImageProcessor() as transformers' models/upernet/convert_convnext_upernet_to_pytorch.py saves it
SEGFORMER_PREPROCESSOR = {
    "do_normalize": True, "do_reduce_labels": False, "do_rescale": True, "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406], "image_processor_type": "SegformerImageProcessor",
    "image_std": [0.229, 0.224, 0.225], "resample": 2, "rescale_factor": 1 / 255,
    "size": {"height": 512, "width": 512},
}


def upernet_config(width: int = 8):
    """openmmlab/upernet-convnext-small's shape (ConvNeXt depths 3/3/27/3, widths 96..768, UperNet 512 wide),
    narrow and one block per stage."""
    from transformers import ConvNextConfig, UperNetConfig
    backbone = ConvNextConfig(depths=[1, 1, 1, 1], hidden_sizes=[width, 2 * width, 4 * width, 8 * width],
                              out_features=["stage1", "stage2", "stage3", "stage4"])
    return UperNetConfig(backbone_config=backbone, hidden_size=2 * width, pool_scales=[1, 2, 3, 6],
                         use_auxiliary_head=True, auxiliary_in_channels=4 * width, auxiliary_channels=width,
                         num_labels=150)


def random_upernet(width: int = 8, seed: int = 0):
    """UperNetForSemanticSegmentation with random weights whose argmax changes over the picture."""
    from transformers import UperNetForSemanticSegmentation

    from .depth import spread_init
    torch.manual_seed(seed)
    model = UperNetForSemanticSegmentation(upernet_config(width)).eval()
    spread_init(model, torch.Generator().manual_seed(seed))
    return model


def write_upernet_folder(path: Path, width: int = 8, seed: int = 0,
                         preprocessor: dict | None = SEGFORMER_PREPROCESSOR) -> Path:
    path = Path(path)
    random_upernet(width, seed).save_pretrained(path, safe_serialization=True)
    if preprocessor is not None:
        (path / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    return path


FILES = {
    "segmentation/upernet-convnext-small": lambda p: write_upernet_folder(p),
}
