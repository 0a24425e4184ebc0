"""DPT depth models (Intel/dpt-large, Intel/dpt-hybrid-midas) from transformers model folders, into transformers'
DPTForDepthEstimation (the hybrid's ResNet part is transformers' own BiT backbone: no timm). No ComfyUI."""
from __future__ import annotations

from pathlib import Path

from ..preprocessors.hf_image_processor import ProcessorConfigError, dpt_processing
from .files import CheckpointError
from .transformers_folder import PREPROCESSOR, build_model, read_preprocessor_config

MODEL_TYPES = ("dpt",)
WHAT = "a DPT depth model (DPTForDepthEstimation, e.g. Intel/dpt-large)"
REPOS = ("Intel/dpt-large", "Intel/dpt-hybrid-midas")


def load_dpt(folder: str | Path):
    """(DPTForDepthEstimation in float32 eval mode, its image processing)."""
    from transformers import DPTConfig, DPTForDepthEstimation
    folder = Path(folder)
    model = build_model(folder, DPTConfig, DPTForDepthEstimation, MODEL_TYPES, WHAT)
    if getattr(model.config, "backbone_config", None) is not None and not model.config.is_hybrid:
        raise CheckpointError(f"{folder}: a DPT with a {model.config.backbone_config.model_type} backbone; expected "
                              f"the ViT DPT (dpt-large) or the BiT hybrid (dpt-hybrid-midas) ControlNet++ names")
    try:
        processing = dpt_processing(read_preprocessor_config(folder), folder / PREPROCESSOR)
    except ProcessorConfigError as e:
        raise CheckpointError(str(e)) from None
    return model, processing


