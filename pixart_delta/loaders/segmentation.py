"""UperNet ADE20K segmentation models (openmmlab/upernet-convnext-small) from transformers model folders, into
transformers' UperNetForSemanticSegmentation (its ConvNeXt backbone is transformers' own). No ComfyUI."""
from __future__ import annotations

from pathlib import Path

from ..preprocessors.hf_image_processor import ProcessorConfigError, segformer_processing
from .files import CheckpointError
from .transformers_folder import PREPROCESSOR, build_model, read_preprocessor_config

MODEL_TYPES = ("upernet",)
WHAT = "a UperNet segmentation model (UperNetForSemanticSegmentation, e.g. openmmlab/upernet-convnext-small)"
REPOS = ("openmmlab/upernet-convnext-small",)
ADE20K_CLASSES = 150


def load_upernet(folder: str | Path):
    """(UperNetForSemanticSegmentation in float32 eval mode, its SegformerImageProcessor settings)."""
    from transformers import UperNetConfig, UperNetForSemanticSegmentation
    folder = Path(folder)
    model = build_model(folder, UperNetConfig, UperNetForSemanticSegmentation, MODEL_TYPES, WHAT)
    if model.config.num_labels != ADE20K_CLASSES:
        raise CheckpointError(f"{folder}: a UperNet with {model.config.num_labels} classes; expected the "
                              f"{ADE20K_CLASSES} ADE20K classes the palette colours")
    try:
        processing = segformer_processing(read_preprocessor_config(folder), folder / PREPROCESSOR)
    except ProcessorConfigError as e:
        raise CheckpointError(str(e)) from None
    return model, processing
