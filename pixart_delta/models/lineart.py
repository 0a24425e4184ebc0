"""The line-drawing generator of ControlNet 1.1's lineart annotator (lllyasviel/Annotators `sk_model.pth`, coarse
`sk_model2.pth`; lllyasviel/ControlNet-v1-1-nightly annotator/lineart, the same in huggingface/controlnet_aux and
Fannovel16/comfyui_controlnet_aux): `Generator(3, 1, n_residual_blocks=3)`, RGB in 0..1 -> line strength 0..1.

  model0: reflection pad 3, conv 7x7 3->64, instance norm, ReLU
  model1: conv 3x3 stride 2 64->128, IN, ReLU; conv 3x3 stride 2 128->256, IN, ReLU
  model2: 3 residual blocks x + (pad 1, conv 3x3, IN, ReLU, pad 1, conv 3x3, IN)
  model3: transposed conv 3x3 stride 2 (output padding 1) 256->128, IN, ReLU; 128->64, IN, ReLU
  model4: reflection pad 3, conv 7x7 64->1, sigmoid
Instance norms are affine-free (no tensors); the module indices below give the file's 24 key names.
"""
from __future__ import annotations

import torch
from torch import nn

RESIDUAL_BLOCKS = 3


class ResidualBlock(nn.Module):
    def __init__(self, width: int, ops=nn):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), ops.Conv2d(width, width, 3), nn.InstanceNorm2d(width), nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1), ops.Conv2d(width, width, 3), nn.InstanceNorm2d(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class LineartGenerator(nn.Module):
    """forward(x [B,3,H,W] RGB in 0..1) -> [B,1,4*ceil(H/4),4*ceil(W/4)] line strength in 0..1."""

    def __init__(self, ops=nn):
        super().__init__()
        self.model0 = nn.Sequential(nn.ReflectionPad2d(3), ops.Conv2d(3, 64, 7), nn.InstanceNorm2d(64),
                                    nn.ReLU(inplace=True))
        self.model1 = nn.Sequential(
            ops.Conv2d(64, 128, 3, stride=2, padding=1), nn.InstanceNorm2d(128), nn.ReLU(inplace=True),
            ops.Conv2d(128, 256, 3, stride=2, padding=1), nn.InstanceNorm2d(256), nn.ReLU(inplace=True))
        self.model2 = nn.Sequential(*[ResidualBlock(256, ops) for _ in range(RESIDUAL_BLOCKS)])
        self.model3 = nn.Sequential(
            ops.ConvTranspose2d(256, 128, 3, stride=2, padding=1, output_padding=1), nn.InstanceNorm2d(128),
            nn.ReLU(inplace=True),
            ops.ConvTranspose2d(128, 64, 3, stride=2, padding=1, output_padding=1), nn.InstanceNorm2d(64),
            nn.ReLU(inplace=True))
        self.model4 = nn.Sequential(nn.ReflectionPad2d(3), ops.Conv2d(64, 1, 7), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model4(self.model3(self.model2(self.model1(self.model0(x)))))


def expected_keys() -> dict[str, tuple]:
    """Key -> shape of the published files (both have this layout)."""
    shapes = {"model0.1.weight": (64, 3, 7, 7), "model0.1.bias": (64,),
              "model1.0.weight": (128, 64, 3, 3), "model1.0.bias": (128,),
              "model1.3.weight": (256, 128, 3, 3), "model1.3.bias": (256,)}
    for i in range(RESIDUAL_BLOCKS):
        for j in (1, 5):
            shapes[f"model2.{i}.conv_block.{j}.weight"] = (256, 256, 3, 3)
            shapes[f"model2.{i}.conv_block.{j}.bias"] = (256,)
    shapes.update({"model3.0.weight": (256, 128, 3, 3), "model3.0.bias": (128,),   # transposed: [in, out, k, k]
                   "model3.3.weight": (128, 64, 3, 3), "model3.3.bias": (64,),
                   "model4.1.weight": (1, 64, 7, 7), "model4.1.bias": (1,)})
    return shapes
