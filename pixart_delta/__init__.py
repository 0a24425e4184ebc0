"""PixArt-α/Σ/δ for ComfyUI: loaders, few-step samplers, ControlNet-Transformer, HED, tiny VAE."""
