"""A small DCNv2 segmentation-style head that shows every feature of the op at once:
mask and no mask, weight groups, offset groups, stride 2, dilation 2 and asymmetric pads."""
from __future__ import annotations

import torch
from torch import nn

from dcn_deploy import DeformConv2d

DESCRIPTION = "small DCN demo: v1 and v2 layers, groups, offset groups, stride, dilation, asymmetric pads"
INPUT_SHAPE = (2, 3, 64, 80)
OUTPUT_NAMES = ("logits",)


class DemoDCN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.dcn1 = DeformConv2d(16, 32, 3, padding=1)
        self.dcn2 = DeformConv2d(32, 32, 3, stride=2, padding=(0, 1, 1, 1), groups=2, offset_groups=2, bias=False)
        self.dcn3 = DeformConv2d(32, 32, 3, padding=2, dilation=2, offset_groups=4, modulated=False)
        self.head = nn.Conv2d(32, 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(self.dcn1(x))
        x = torch.relu(self.dcn2(x))
        x = torch.relu(self.dcn3(x))
        return self.head(x)


def build(seed: int = 0, random_offsets: bool = True) -> nn.Module:
    from dcn_deploy.onnx.recipes import randomize_for_parity

    torch.manual_seed(seed)
    model = DemoDCN()
    randomize_for_parity(model, seed, random_offsets)
    return model.eval()


def example_inputs(batch: int = INPUT_SHAPE[0], height: int = INPUT_SHAPE[2], width: int = INPUT_SHAPE[3], seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 3, height, width, generator=generator),)
