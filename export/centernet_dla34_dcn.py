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
Input heights and widths are multiples of 32 (``SIZE_MULTIPLE``; the dynamic export declares them so).

Option ``--decode`` (``build(decode=True)``, ``--top-k K``, default 100): CenterNet's ``ctdet_decode``
inside the graph (:class:`CtdetDecode`), so an engine outputs detections instead of the heads::

    dcn-deploy export --recipe centernet_dla34_dcn --weights ctdet_coco_dla_2x.pth --decode -o centernet_det.onnx

==========  ===================  =======  ==================================================================
output      shape                dtype    meaning
==========  ===================  =======  ==================================================================
``boxes``   N x K x 4            float32  x1, y1, x2, y2 in **input pixels** (the image fed to the network,
                                          after your resize/letterbox; CenterNet's affine back to the
                                          original image, ``ctdet_post_process``, is yours): the
                                          output-map box times the down ratio 4
``scores``  N x K                float32  sigmoid(hm) at the peak, descending
``classes`` N x K                int64    class index 0..79 (CenterNet's ``clses``, which it returns as
                                          float; int64 is what ONNX TopK's indices are)
==========  ===================  =======  ==================================================================
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
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
DOWN_RATIO = 4  # the heads' stride
SIZE_MULTIPLE = 32  # five stride-2 stages, added back level by level in DLAUp/IDAUp
TOP_K = 100  # CenterNet's default K
OPTIONS = {
    "decode": (False, "ctdet decoding in the graph: outputs boxes (input pixels), scores, classes instead of "
                      "hm, wh, reg"),
    "top_k": (TOP_K, "with --decode: detections per image (K)"),
}
DECODED_OUTPUT_NAMES = ("boxes", "scores", "classes")
# An untrained head's outputs are nearly constant (hm logits -2.19 +- 0.01): every decoded score would tie.
# Scaling each head's last conv gives trained-like ranges on standard-normal inputs (hm logits std about 2.5,
# wh about 10 output-map pixels, reg about 0.5 px), so the decoded peaks are distinct as a trained model's are.
UNTRAINED_HEAD_SCALES = {"hm": 200.0, "wh": 500.0, "reg": 100.0}


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


class CtdetDecode(nn.Module):
    """CenterNet's ``ctdet_decode`` (``src/lib/models/decode.py``) as a graph: 3x3 max-pool peak
    suppression (a score survives where it equals its 3x3 maximum, else it is 0; tested on the logits,
    see forward); the top K of all classes x H x W scores (sigmoid of ``hm``), class = index // (H*W),
    y = (index % (H*W)) // W, x = index % W; the centre moved by ``reg`` at that pixel and the box
    spanned by ``wh`` around it, in output-map coordinates, then times the down ratio: input pixels.
    No parameters: the state dict is unchanged.

    CenterNet takes the top K per class first and then the top K of those; the set is the same (the
    global top K lie in their class's top K) and so is the order, except among equal scores, where
    either order is a correct answer. One TopK also works for any H*W (CenterNet's per-class TopK needs
    H*W >= K); K must be at most classes x H x W (80 x 8 x 8 = 5120 at a 32 x 32 input)."""

    def __init__(self, top_k: int = TOP_K, down_ratio: int = DOWN_RATIO) -> None:
        super().__init__()
        self.top_k = top_k
        self.down_ratio = down_ratio

    def forward(self, hm: Tensor, wh: Tensor, reg: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # Peaks and ranking on the logits: the same as on sigmoid(hm) in exact arithmetic (sigmoid is
        # increasing), but float32 rounds the sigmoid of neighbouring logits above about 4 to one value, which
        # would keep both as peaks and tie their order.
        peaks = F.max_pool2d(hm, 3, stride=1, padding=1) == hm
        logits = torch.where(peaks, hm, torch.finfo(hm.dtype).min)  # suppressed: score sigmoid(min) = 0
        n, _, height, width = hm.shape
        area = height * width
        top, index = logits.flatten(1).topk(self.top_k, dim=1)
        scores = top.sigmoid()
        classes = index // area
        pixel = index - classes * area
        ys = (pixel // width).to(hm.dtype)
        xs = (pixel - (pixel // width) * width).to(hm.dtype)
        at_peak = pixel.unsqueeze(1).expand(n, 2, self.top_k)
        offset = reg.flatten(2).gather(2, at_peak)  # N x 2 x K: (dx, dy)
        size = wh.flatten(2).gather(2, at_peak)  # N x 2 x K: (w, h)
        cx, cy = xs + offset[:, 0], ys + offset[:, 1]
        half_w, half_h = size[:, 0] / 2, size[:, 1] / 2
        boxes = torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=2) * self.down_ratio
        return boxes, scores, classes


class DLASeg(nn.Module):
    def __init__(self, heads: dict[str, int] = HEADS, head_conv: int = HEAD_CONV, decode: CtdetDecode | None = None
                 ) -> None:
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
        self.decode = decode

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        levels = self.dla_up(self.base(x))
        y = [levels[i].clone() for i in range(LAST_LEVEL - FIRST_LEVEL)]
        self.ida_up(y, 0, len(y))
        outputs = tuple(getattr(self, head)(y[-1]) for head in self.heads)
        return outputs if self.decode is None else self.decode(*outputs)


def prepare_weights(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A CenterNet checkpoint's tensors (``state_dict`` already unwrapped by ``load_weights``) in this
    recipe's names: ``module.`` prefixes of DataParallel training dropped, ``conv_offset_mask`` ->
    ``conv_offset``, and the ImageNet classifier ``base.fc.*`` (in checkpoints trained from the
    pretrained DLA; DLASeg never uses it) left out."""
    state = {(key[len("module."):] if key.startswith("module.") else key): value for key, value in state.items()}
    state = {key: value for key, value in state.items() if not key.startswith("base.fc.")}
    return rename_offset_mask(state)


def output_names(decode: bool = False, top_k: int = TOP_K) -> tuple[str, ...]:
    return DECODED_OUTPUT_NAMES if decode else OUTPUT_NAMES


def build(seed: int = 0, random_offsets: bool = True, decode: bool = False, top_k: int = TOP_K) -> nn.Module:
    from dcn_deploy.onnx.recipes import randomize_for_parity

    if top_k < 1:
        raise ValueError(f"--top-k must be at least 1, got {top_k}")
    torch.manual_seed(seed)
    model = DLASeg(decode=CtdetDecode(top_k) if decode else None)
    randomize_for_parity(model, seed, random_offsets)
    with torch.no_grad():
        for head, scale in UNTRAINED_HEAD_SCALES.items():
            getattr(model, head)[-1].weight.mul_(scale)
    return model.eval()


def example_inputs(batch: int = INPUT_SHAPE[0], height: int = INPUT_SHAPE[2], width: int = INPUT_SHAPE[3],
                   seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 3, height, width, generator=generator),)
