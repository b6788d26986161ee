"""mmdetection's RetinaNet R-50-FPN with DCNv2 in stages c3-c5, end to end: backbone, neck, head, anchors,
box decoding and NMS in the graph, written anew with mmdetection's parameter names (2.x and 3.x name this
model's parameters alike), so its checkpoints load by name without mmdet or mmcv installed::

    dcn-deploy export --recipe retinanet_r50_fpn_dconv --weights retinanet_r50_fpn_dconv.pth -o retinanet.onnx

The model is the config ``retinanet_r50_fpn`` with ``backbone.dcn=dict(type='DCNv2', deform_groups=1,
fallback_on_stride=False), stage_with_dcn=(False, True, True, True)``: every ``conv2`` of ``layer2``-``layer4``
is mmcv's ``ModulatedDeformConv2dPack`` (``conv2.weight``, no bias, ``conv2.conv_offset.{weight,bias}``; the
canonical ``DeformConv2d`` has exactly that layout, see ``dcn_deploy/convert/mmcv.py``). The weight file is
read by ``dcn_deploy.convert.checkpoints.load_weights`` (mmdetection's ``{'meta', 'state_dict'}`` with numpy
values in ``meta``; nothing in it is run). mmdetection's model zoo has no RetinaNet with DCN (``configs/dcn`` and
``configs/dcnv2`` release R-CNNs only): this is the key set mmdetection saves when one trains that config
(``tests/data/retinanet_r50_fpn_dconv_keys.txt``). Recipe ``retinanet_r50_fpn_dconv_prenms`` is the same model
up to NMS (:class:`RetinaNetCandidates`), for runtimes without an NMS such as TensorRT-RTX.

Input ``x`` ``[N, 3, H, W]``, already normalised as mmdetection's data preprocessor does (BGR->RGB,
mean/std) and padded to a multiple of 32; dynamic batch, H and W. Outputs, per image, in input pixels:

==========  =================  ==============================================================
``dets``    ``[N, 100, 5]``    ``x1, y1, x2, y2, score``, by descending score; rows past the
                               last detection are all 0
``labels``  ``[N, 100]``       class index 0..79 (int64); -1 on the padding rows
==========  =================  ==============================================================

Post-processing, step by step against mmdetection 3.x (``BaseDenseHead._predict_by_feat_single``; 2.x since
2.18 is the same) and mmdeploy:

======================  ======================================  =========================================
step                    mmdetection (test_cfg)                  here
======================  ======================================  =========================================
anchors                 ``AnchorGenerator``: octave_base_scale  the same formula (float32 base anchors,
                        4, 3 scales/octave, ratios 0.5/1/2,     ``center_offset`` 0: centres on the grid
                        strides 8..128, no rounding             corners ``(j*s, i*s)``, no rounding)
scores                  sigmoid                                 sigmoid
pre-NMS, per level      ``filter_scores_and_topk``: the         the top ``min(1000, H*W*9*80)`` pairs,
                        (anchor, class) pairs > score_thr 0.05, then pairs <= 0.05 dropped: the same
                        top nms_pre=1000 of them                set (mmdeploy instead takes the top 1000
                                                                anchors by their best class)
decode                  ``DeltaXYWHBBoxCoder`` (means 0, stds   the same; clipped to the input H, W
                        1, dw/dh clamped to ±log(1000/16)),     (mmdetection clips to ``img_shape``, the
                        clipped to ``img_shape``                resized image before padding)
min_bbox_size 0         boxes with w <= 0 or h <= 0 dropped     the same (score set to 0)
NMS                     ``batched_nms``: class-wise via         ONNX ``NonMaxSuppression`` per class
                        coordinate offsets, IoU > 0.5           (scores ``[N, 80, K]``, a pair's score
                        suppresses                              in its class row), IoU > 0.5, at most
                                                                100 per class (enough: at most 100 are
                                                                kept in all)
max_per_img 100         the first 100 by score                  top 100 by score, padded to 100 rows
rescale                 boxes / scale_factor                    not done: boxes in input pixels
======================  ======================================  =========================================

mmdeploy's ONNX Runtime export of the same model returns a variable number of rows (its own padding is one
zero row, label 0, and -1 labels for other images' rows); its TensorRT export pads to ``keep_top_k`` rows.
Here there are always 100 rows: dets 0 and label -1 past the detections.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dcn_deploy.convert.mmcv import MMCVConverter
from dcn_deploy.onnx.recipes import load_recipe
from dcn_deploy.op.nms import non_max_suppression

DESCRIPTION = ("mmdetection RetinaNet R-50-FPN, DCNv2 c3-c5 (mmdet 2.x/3.x names), anchors, decoding and NMS "
               "in the graph; outputs dets, labels")
INPUT_SHAPE = (1, 3, 320, 320)
SIZE_MULTIPLE = 32  # FPN's strides up to 128 with mmdetection's padding to 32 (checked, declared in dynamic exports)
OUTPUT_NAMES = ("dets", "labels")

NUM_CLASSES = 80
FPN_CHANNELS = 256
STACKED_CONVS = 4
STRIDES = (8, 16, 32, 64, 128)
RATIOS = (0.5, 1.0, 2.0)
OCTAVE_BASE_SCALE, SCALES_PER_OCTAVE = 4, 3
NUM_ANCHORS = len(RATIOS) * SCALES_PER_OCTAVE
WH_RATIO_CLIP = 16 / 1000  # DeltaXYWHBBoxCoder: dw, dh clamped to +-|log(16/1000)|
NMS_PRE, SCORE_THR, IOU_THR, MAX_PER_IMG = 1000, 0.05, 0.5, 100
PRIOR_PROB = 0.01  # RetinaHead's retina_cls bias init: sigmoid(bias) = 0.01

ResNetDCN = load_recipe("resnet50_dcn").ResNetDCN  # conv1, bn1, layer{1..4}.{i}.conv{1,2,3}/bn{1,2,3}/downsample


class ConvModule(nn.Module):
    """mmcv's ConvModule without norm: ``.conv`` (with bias), then the activation if any."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 relu: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2)
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        return F.relu(x) if self.relu else x


class FPN(nn.Module):
    """mmdet's FPN(in_channels=[256, 512, 1024, 2048], out_channels=256, start_level=1,
    add_extra_convs='on_input', num_outs=5): P3-P5 from C3-C5, P6 from C5 (stride-2 conv), P7 from P6
    (no ReLU before the extra convs)."""

    def __init__(self, in_channels=(512, 1024, 2048), out_channels: int = FPN_CHANNELS) -> None:
        super().__init__()
        self.lateral_convs = nn.ModuleList(ConvModule(c, out_channels, 1) for c in in_channels)
        self.fpn_convs = nn.ModuleList(
            [ConvModule(out_channels, out_channels, 3) for _ in in_channels]
            + [ConvModule(in_channels[-1], out_channels, 3, stride=2), ConvModule(out_channels, out_channels, 3, 2)])

    def forward(self, inputs: tuple[Tensor, ...]) -> list[Tensor]:
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[2:],
                                                              mode="nearest")
        outs = [self.fpn_convs[i](laterals[i]) for i in range(len(laterals))]
        outs.append(self.fpn_convs[len(laterals)](inputs[-1]))
        outs.append(self.fpn_convs[len(laterals) + 1](outs[-1]))
        return outs


class RetinaHead(nn.Module):
    """mmdet's RetinaHead: 4 conv+ReLU towers per branch, shared by all levels."""

    def __init__(self) -> None:
        super().__init__()
        self.cls_convs = nn.ModuleList(ConvModule(FPN_CHANNELS, FPN_CHANNELS, 3, relu=True) for _ in range(STACKED_CONVS))
        self.reg_convs = nn.ModuleList(ConvModule(FPN_CHANNELS, FPN_CHANNELS, 3, relu=True) for _ in range(STACKED_CONVS))
        self.retina_cls = nn.Conv2d(FPN_CHANNELS, NUM_ANCHORS * NUM_CLASSES, 3, padding=1)
        self.retina_reg = nn.Conv2d(FPN_CHANNELS, NUM_ANCHORS * 4, 3, padding=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        cls_feat, reg_feat = x, x
        for cls_conv, reg_conv in zip(self.cls_convs, self.reg_convs):
            cls_feat, reg_feat = cls_conv(cls_feat), reg_conv(reg_feat)
        return self.retina_cls(cls_feat), self.retina_reg(reg_feat)


def base_anchors(stride: int) -> Tensor:
    """mmdet's ``AnchorGenerator.gen_single_level_base_anchors`` for one level, ``[9, 4]`` float32: base size
    = stride, centre (0, 0), ratio-major order (``scale_major=True``)."""
    scales = torch.tensor([2 ** (i / SCALES_PER_OCTAVE) for i in range(SCALES_PER_OCTAVE)]) * OCTAVE_BASE_SCALE
    h_ratios = torch.sqrt(torch.tensor(RATIOS))
    w_ratios = 1 / h_ratios
    ws = (stride * w_ratios[:, None] * scales[None, :]).view(-1)
    hs = (stride * h_ratios[:, None] * scales[None, :]).view(-1)
    return torch.stack([-0.5 * ws, -0.5 * hs, 0.5 * ws, 0.5 * hs], dim=-1)


def grid_anchors(base: Tensor, stride: int, height: int, width: int) -> Tensor:
    """``single_level_grid_priors``: ``[H*W*9, 4]``, index ``(y*W + x)*9 + a``."""
    shift_x = torch.arange(width, device=base.device).to(base.dtype) * stride
    shift_y = torch.arange(height, device=base.device).to(base.dtype) * stride
    yy, xx = torch.meshgrid(shift_y, shift_x, indexing="ij")
    shifts = torch.stack([xx.reshape(-1), yy.reshape(-1), xx.reshape(-1), yy.reshape(-1)], dim=-1)
    return (base[None, :, :] + shifts[:, None, :]).reshape(-1, 4)


def delta2bbox(anchors: Tensor, deltas: Tensor, height: int, width: int) -> Tensor:
    """``DeltaXYWHBBoxCoder.decode`` (means 0, stds 1, clip_border) for ``[..., 4]`` anchors and deltas."""
    max_ratio = abs(math.log(WH_RATIO_CLIP))
    pxy = (anchors[..., :2] + anchors[..., 2:]) * 0.5
    pwh = anchors[..., 2:] - anchors[..., :2]
    gxy = pxy + pwh * deltas[..., :2]
    gwh = pwh * deltas[..., 2:].clamp(min=-max_ratio, max=max_ratio).exp()
    x1y1, x2y2 = gxy - gwh * 0.5, gxy + gwh * 0.5
    x1, y1, x2, y2 = torch.cat([x1y1, x2y2], dim=-1).unbind(-1)
    return torch.stack([x1.clamp(min=0, max=width), y1.clamp(min=0, max=height),
                        x2.clamp(min=0, max=width), y2.clamp(min=0, max=height)], dim=-1)


class RetinaNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = ResNetDCN()
        self.neck = FPN()
        self.bbox_head = RetinaHead()
        for level, stride in enumerate(STRIDES):  # not in the state dict, as in mmdetection
            self.register_buffer(f"base_anchors_{level}", base_anchors(stride), persistent=False)

    def candidates(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """What NMS sees: boxes ``[N, K, 4]`` and class-wise scores ``[N, 80, K]`` (a pair's score in its class
        row, 0 elsewhere and for pairs that mmdetection drops), K = the pre-NMS pairs of all levels."""
        batch, _, height, width = x.shape
        boxes, scores, labels = [], [], []
        for level, feature in enumerate(self.neck(self.backbone(x))):
            cls_score, bbox_pred = self.bbox_head(feature)
            h, w = feature.shape[2:]
            flat = cls_score.permute(0, 2, 3, 1).reshape(batch, -1).sigmoid()  # index anchor*80 + class
            score, index = flat.topk(torch.sym_min(NMS_PRE, flat.shape[1]), dim=1)
            anchor = torch.div(index, NUM_CLASSES, rounding_mode="floor")
            deltas = bbox_pred.permute(0, 2, 3, 1).reshape(batch, -1, 4)
            deltas = torch.gather(deltas, 1, anchor[..., None].expand(-1, -1, 4))
            stride = STRIDES[level]
            anchors = grid_anchors(getattr(self, f"base_anchors_{level}"), stride, h, w)[anchor]
            boxes.append(delta2bbox(anchors, deltas, height, width))
            scores.append(score)
            labels.append(index - anchor * NUM_CLASSES)
        boxes, scores, labels = torch.cat(boxes, 1), torch.cat(scores, 1), torch.cat(labels, 1)
        keep = (scores > SCORE_THR) & (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
        scores = torch.where(keep, scores, torch.zeros_like(scores))
        classes = torch.arange(NUM_CLASSES, device=x.device)
        class_scores = torch.where(labels[:, None, :] == classes[None, :, None], scores[:, None, :],
                                   torch.zeros_like(scores[:, None, :]))
        return boxes, class_scores

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        boxes, class_scores = self.candidates(x)
        selected = non_max_suppression(boxes, class_scores, MAX_PER_IMG, IOU_THR, SCORE_THR)
        image, label, box = selected.unbind(1)
        score = class_scores[image, label, box]
        batch = x.shape[0]
        # Rank each image's detections (other images' rows at -1) after 100 padding rows at 0.
        mine = image[None, :] == torch.arange(batch, device=x.device)[:, None]
        ranked = torch.cat([torch.where(mine, score[None, :], torch.full_like(score[None, :], -1.0)),
                            score.new_zeros(batch, MAX_PER_IMG)], dim=1)
        top = ranked.topk(MAX_PER_IMG, dim=1).indices
        rows = torch.cat([torch.cat([boxes[image, box], score[:, None]], dim=1), score.new_zeros(MAX_PER_IMG, 5)])
        classes = torch.cat([label, label.new_full((MAX_PER_IMG,), -1)])
        return rows[top], classes[top]


class RetinaNetCandidates(RetinaNet):
    """The detector up to NMS (recipe ``retinanet_r50_fpn_dconv_prenms``): outputs ``boxes`` ``[N, K, 4]`` and
    ``scores`` ``[N, 80, K]``, what the NonMaxSuppression node takes, for runtimes without an NMS
    (TensorRT-RTX 1.7 has none); run NMS on them outside."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.candidates(x)


def prepare_weights(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """An mmdetection checkpoint's tensors (``state_dict`` unwrapped by ``load_weights``) in this recipe's
    names: the same, except the ``module.`` prefix of a checkpoint saved from a DataParallel wrapper and
    the ``<name>_offset.*`` keys of old mmcv DCN checkpoints (mmcv's own rename)."""
    state = {(key[len("module."):] if key.startswith("module.") else key): value for key, value in state.items()}
    return MMCVConverter().remap_state_dict(state, {})


@torch.no_grad()
def build(seed: int = 0, random_offsets: bool = True, model_class: type[RetinaNet] = RetinaNet) -> nn.Module:
    """The detector with seeded weights that give detections: BatchNorm statistics and DCN offsets as
    ``randomize_for_parity`` draws them, head convs scaled so activations keep their size, ``retina_cls``
    with mmdetection's prior bias (sigmoid 0.01) and weights that lift a few percent of the pairs above
    score_thr, ``retina_reg`` giving deltas of a few tenths (overlapping boxes, so NMS has work)."""
    from dcn_deploy.onnx.recipes import randomize_for_parity

    torch.manual_seed(seed)
    model = model_class()
    randomize_for_parity(model, seed, random_offsets)
    generator = torch.Generator().manual_seed(seed + 2)
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and (name.startswith("neck.") or name.startswith("bbox_head.")):
            fan_in = module.weight[0].numel()
            gain = {"bbox_head.retina_cls": 4.0, "bbox_head.retina_reg": 0.5}.get(name, math.sqrt(2))
            module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * gain / math.sqrt(fan_in))
            module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.05)
    model.bbox_head.retina_cls.bias.fill_(-math.log((1 - PRIOR_PROB) / PRIOR_PROB))
    return model.eval()


def example_inputs(batch: int = INPUT_SHAPE[0], height: int = INPUT_SHAPE[2], width: int = INPUT_SHAPE[3],
                   seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 3, height, width, generator=generator),)

