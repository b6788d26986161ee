"""CenterNet (Objects as Points) ctdet with the DLA-34 backbone and DCN up-sampling: DLA-34, DLAUp,
IDAUp and the hm/wh/reg heads of xingyizhou/CenterNet's ``pose_dla_dcn.py`` (``get_pose_net(34,
{'hm': 80, 'wh': 2, 'reg': 2}, head_conv=256, down_ratio=4)``), written anew with module and
parameter names identical to it, so its checkpoints load by name.

Every ``DeformConv.conv`` (CharlesShang's ``DCN``) is the canonical ``DeformConv2d``; CenterNet's
``conv_offset_mask`` is its ``conv_offset`` (the same channel layout: ``chunk(3)`` + ``cat`` and a
sigmoid mask, see ``dcn_deploy/convert/charlesshang.py``). :func:`prepare_weights` takes a
released file as it is (``ctdet_coco_dla_2x.pth``: the ``state_dict`` wrapper, ``module.``
prefixes, ``conv_offset_mask`` keys, the unused ImageNet classifier ``base.fc``)::

    dcn-deploy export --recipe centernet_dla34_dcn --weights ctdet_coco_dla_2x.pth -o centernet.onnx

Outputs at stride 4: ``hm`` (80 class heatmap logits), ``wh`` (box sizes), ``reg`` (centre offsets).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from dcn_deploy import DeformConv2d
from dcn_deploy.convert.charlesshang import rename_offset_mask

DESCRIPTION = "CenterNet ctdet DLA-34 + DCN up-sampling (xingyizhou/CenterNet names); outputs hm, wh, reg"
INPUT_SHAPE = (1, 3, 512, 512)
OUTPUT_NAMES = ("hm", "wh", "reg")
HEADS = {"hm": 80, "wh": 2, "reg": 2}
HEAD_CONV = 256
CHANNELS = (16, 32, 64, 128, 256, 512)
LEVELS = (1, 1, 1, 2, 2, 1)
FIRST_LEVEL, LAST_LEVEL = 2, 5  # down_ratio 4
HEATMAP_BIAS = -2.19  # CenterNet's initial hm bias: sigmoid(-2.19) = 0.1


class BasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        residual = x if residual is None else residual
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + residual)


class Root(nn.Module):
    """Aggregates the children of a tree node by a 1x1 conv over their concatenation."""

    def __init__(self, in_channels: int, out_channels: int, residual: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.residual = residual

    def forward(self, *children: Tensor) -> Tensor:
        out = self.bn(self.conv(torch.cat(children, 1)))
        if self.residual:
            out = out + children[0]
        return self.relu(out)


class Tree(nn.Module):
    """A hierarchical-aggregation tree of ``levels`` levels of BasicBlocks."""

    def __init__(self, levels: int, in_channels: int, out_channels: int, stride: int = 1, level_root: bool = False,
                 root_dim: int = 0, root_residual: bool = False) -> None:
        super().__init__()
        root_dim = root_dim or 2 * out_channels
        if level_root:
            root_dim += in_channels
        if levels == 1:
            self.tree1 = BasicBlock(in_channels, out_channels, stride)
            self.tree2 = BasicBlock(out_channels, out_channels, 1)
            self.root = Root(root_dim, out_channels, root_residual)
        else:
            self.tree1 = Tree(levels - 1, in_channels, out_channels, stride, root_residual=root_residual)
            self.tree2 = Tree(levels - 1, out_channels, out_channels, root_dim=root_dim + out_channels,
                              root_residual=root_residual)
        self.level_root = level_root
        self.levels = levels
        self.downsample = nn.MaxPool2d(stride, stride=stride) if stride > 1 else None
        self.project = None
        if in_channels != out_channels:
            self.project = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                         nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor, residual: Tensor | None = None, children: list[Tensor] | None = None) -> Tensor:
        children = [] if children is None else children
        bottom = self.downsample(x) if self.downsample is not None else x
        residual = self.project(bottom) if self.project is not None else bottom
        if self.level_root:
            children.append(bottom)
        x1 = self.tree1(x, residual)
        if self.levels == 1:
            return self.root(self.tree2(x1), x1, *children)
        children.append(x1)
        return self.tree2(x1, children=children)


class DLA(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.channels = CHANNELS
        self.base_layer = nn.Sequential(nn.Conv2d(3, CHANNELS[0], 7, padding=3, bias=False),
                                        nn.BatchNorm2d(CHANNELS[0]), nn.ReLU(inplace=True))
        self.level0 = self._conv_level(CHANNELS[0], CHANNELS[0], LEVELS[0])
        self.level1 = self._conv_level(CHANNELS[0], CHANNELS[1], LEVELS[1], stride=2)
        self.level2 = Tree(LEVELS[2], CHANNELS[1], CHANNELS[2], 2, level_root=False)
        self.level3 = Tree(LEVELS[3], CHANNELS[2], CHANNELS[3], 2, level_root=True)
        self.level4 = Tree(LEVELS[4], CHANNELS[3], CHANNELS[4], 2, level_root=True)
        self.level5 = Tree(LEVELS[5], CHANNELS[4], CHANNELS[5], 2, level_root=True)

    @staticmethod
    def _conv_level(inplanes: int, planes: int, convs: int, stride: int = 1) -> nn.Sequential:
        modules: list[nn.Module] = []
        for i in range(convs):
            modules += [nn.Conv2d(inplanes, planes, 3, stride=stride if i == 0 else 1, padding=1, bias=False),
                        nn.BatchNorm2d(planes), nn.ReLU(inplace=True)]
            inplanes = planes
        return nn.Sequential(*modules)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.base_layer(x)
        levels = []
        for i in range(6):
            x = getattr(self, f"level{i}")(x)
            levels.append(x)
        return levels


class DeformConv(nn.Module):
    """CenterNet's DCN block: a 3x3 DCNv2 (``conv``), then BatchNorm and ReLU (``actf``)."""

    def __init__(self, chi: int, cho: int) -> None:
        super().__init__()
        self.actf = nn.Sequential(nn.BatchNorm2d(cho), nn.ReLU(inplace=True))
        self.conv = DeformConv2d(chi, cho, 3, padding=1, offset_groups=1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.actf(self.conv(x))


def bilinear_up_weights(up: nn.ConvTranspose2d) -> None:
    """CenterNet's ``fill_up_weights``: every depthwise up-sampling kernel bilinear."""
    weight = up.weight.data
    f = math.ceil(weight.size(2) / 2)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    rows = torch.tensor([1 - abs(i / f - c) for i in range(weight.size(2))])
    cols = torch.tensor([1 - abs(j / f - c) for j in range(weight.size(3))])
    weight.copy_((rows[:, None] * cols[None, :]).expand_as(weight))


class IDAUp(nn.Module):
    """Iterative deep aggregation: project each level to ``o`` channels (DCN), up-sample it to the
    previous level's size (depthwise transposed conv) and merge (DCN)."""

    def __init__(self, o: int, channels: list[int], up_f: list[int]) -> None:
        super().__init__()
        for i in range(1, len(channels)):
            f = int(up_f[i])
            setattr(self, f"proj_{i}", DeformConv(channels[i], o))
            up = nn.ConvTranspose2d(o, o, f * 2, stride=f, padding=f // 2, output_padding=0, groups=o, bias=False)
            bilinear_up_weights(up)
            setattr(self, f"up_{i}", up)
            setattr(self, f"node_{i}", DeformConv(o, o))

    def forward(self, layers: list[Tensor], startp: int, endp: int) -> None:
        for i in range(startp + 1, endp):
            upsampled = getattr(self, f"up_{i - startp}")(getattr(self, f"proj_{i - startp}")(layers[i]))
            layers[i] = getattr(self, f"node_{i - startp}")(upsampled + layers[i - 1])


class DLAUp(nn.Module):
    def __init__(self, startp: int, channels: list[int], scales: list[int]) -> None:
        super().__init__()
        self.startp = startp
        in_channels = list(channels)
        scales = list(scales)
        for i in range(len(channels) - 1):
            j = -i - 2
            setattr(self, f"ida_{i}", IDAUp(channels[j], in_channels[j:], [s // scales[j] for s in scales[j:]]))
            scales[j + 1:] = [scales[j]] * len(scales[j + 1:])
            in_channels[j + 1:] = [channels[j]] * len(in_channels[j + 1:])

    def forward(self, layers: list[Tensor]) -> list[Tensor]:
        out = [layers[-1]]
        for i in range(len(layers) - self.startp - 1):
            getattr(self, f"ida_{i}")(layers, len(layers) - i - 2, len(layers))
            out.insert(0, layers[-1])
        return out


class DLASeg(nn.Module):
    def __init__(self, heads: dict[str, int] = HEADS, head_conv: int = HEAD_CONV) -> None:
        super().__init__()
        self.base = DLA()
        channels = list(CHANNELS[FIRST_LEVEL:])
        self.dla_up = DLAUp(FIRST_LEVEL, channels, [2 ** i for i in range(len(channels))])
        self.ida_up = IDAUp(CHANNELS[FIRST_LEVEL], list(CHANNELS[FIRST_LEVEL:LAST_LEVEL]),
                            [2 ** i for i in range(LAST_LEVEL - FIRST_LEVEL)])
        self.heads = dict(heads)
        for head, classes in self.heads.items():
            fc = nn.Sequential(nn.Conv2d(CHANNELS[FIRST_LEVEL], head_conv, 3, padding=1, bias=True),
                               nn.ReLU(inplace=True), nn.Conv2d(head_conv, classes, 1, bias=True))
            with torch.no_grad():
                fc[-1].bias.fill_(HEATMAP_BIAS if head == "hm" else 0.0)
            setattr(self, head, fc)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        levels = self.dla_up(self.base(x))
        y = [levels[i].clone() for i in range(LAST_LEVEL - FIRST_LEVEL)]
        self.ida_up(y, 0, len(y))
        return tuple(getattr(self, head)(y[-1]) for head in self.heads)


def prepare_weights(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A CenterNet checkpoint's tensors (``state_dict`` already unwrapped by ``load_weights``) in this
    recipe's names: ``module.`` prefixes of DataParallel training dropped, ``conv_offset_mask`` ->
    ``conv_offset``, and the ImageNet classifier ``base.fc.*`` (in checkpoints trained from the
    pretrained DLA; DLASeg never uses it) left out."""
    state = {(key[len("module."):] if key.startswith("module.") else key): value for key, value in state.items()}
    state = {key: value for key, value in state.items() if not key.startswith("base.fc.")}
    return rename_offset_mask(state)


def build(seed: int = 0, random_offsets: bool = True) -> nn.Module:
    from dcn_deploy.onnx.recipes import randomize_for_parity

    torch.manual_seed(seed)
    model = DLASeg()
    randomize_for_parity(model, seed, random_offsets)
    return model.eval()


def example_inputs(batch: int = INPUT_SHAPE[0], height: int = INPUT_SHAPE[2], width: int = INPUT_SHAPE[3],
                   seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 3, height, width, generator=generator),)
