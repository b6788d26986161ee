"""ResNet-50 backbone with DCNv2 in the 3x3 conv of every bottleneck of stages 3-5.

This is mmdetection's ``dconv_c3-c5`` layout (``stage_with_dcn=(False, True, True, True)``,
PyTorch-style stride on the 3x3 conv). Parameter names follow torchvision's ResNet and
mmcv's ``ModulatedDeformConv2dPack`` (``layer3.0.conv2.weight``,
``layer3.0.conv2.conv_offset.weight``), so mmdetection backbone checkpoints map by prefix.
Outputs the C3, C4 and C5 feature maps (strides 8, 16, 32).
"""
from __future__ import annotations

import torch
from torch import nn

from dcn_deploy import DeformConv2d

DESCRIPTION = "ResNet-50 backbone, DCNv2 in stages 3-5 (mmdetection dconv_c3-c5); outputs C3, C4, C5"
INPUT_SHAPE = (1, 3, 224, 224)
OUTPUT_NAMES = ("c3", "c4", "c5")


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int, dcn: bool) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        if dcn:
            self.conv2 = DeformConv2d(width, width, 3, stride=stride, padding=1, bias=False)
        else:
            self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNetDCN(nn.Module):
    def __init__(self, depths=(3, 4, 6, 3), stage_with_dcn=(False, True, True, True)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels = 64
        for index, (depth, dcn) in enumerate(zip(depths, stage_with_dcn)):
            width = 64 * 2**index
            blocks = []
            for block in range(depth):
                stride = 2 if block == 0 and index > 0 else 1
                blocks.append(Bottleneck(in_channels, width, stride, dcn))
                in_channels = width * Bottleneck.expansion
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return c3, c4, c5


def build(seed: int = 0, random_offsets: bool = True) -> nn.Module:
    """The backbone with seeded weights; ``random_offsets`` gives the offset convs non-zero
    weights (offsets of about a pixel, masks away from 0.5) as a trained model has."""
    from dcn_deploy.onnx.recipes import randomize_for_parity

    torch.manual_seed(seed)
    model = ResNetDCN()
    randomize_for_parity(model, seed, random_offsets)
    return model.eval()


def example_inputs(batch: int = INPUT_SHAPE[0], height: int = INPUT_SHAPE[2], width: int = INPUT_SHAPE[3], seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 3, height, width, generator=generator),)
