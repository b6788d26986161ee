"""The one validation of a deformable convolution's arguments and its output-size formula (Python side):
``DeformConvGeometry.check`` names what is wrong; ``output_size`` is the formula every Python caller uses."""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Sequence

from torch import Tensor


# H, W <= 2^24 and H*W, Ho*Wo < 2^31: the limits of the native kernels (plugins/core/params.h), checked
# here too so that every backend refuses the same sizes with the same reason.
MAX_SPATIAL_EXTENT = 1 << 24
MAX_PLANE = (1 << 31) - 1


def _ints(value: int | Sequence[int], name: str, form: str) -> tuple[int, ...]:
    """``value`` (an int or a sequence of ints, numpy ints too) as a tuple of ints; a ValueError naming
    ``name`` and the accepted ``form`` otherwise (floats, strings, bools)."""
    items = value if isinstance(value, Sequence) and not isinstance(value, str) else (value,)
    try:
        if any(isinstance(v, bool) for v in items):
            raise TypeError
        return tuple(operator.index(v) for v in items)
    except TypeError:
        raise ValueError(f"deform_conv2d: {name} must be {form}, got {value!r}") from None


def as_pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    values = _ints(value, name, "an int or a pair of ints")
    if len(values) == 1 and not isinstance(value, Sequence):
        return (values[0], values[0])
    if len(values) != 2:
        raise ValueError(f"deform_conv2d: {name} must be an int or a pair, got {values}")
    return values  # type: ignore[return-value]


def normalize_pads(padding: int | Sequence[int]) -> tuple[int, int, int, int]:
    """Return pads as ``(top, left, bottom, right)``.

    Accepts an int (all sides), a pair ``(ph, pw)`` (symmetric, PyTorch style) or a
    4-tuple already in ONNX order ``(top, left, bottom, right)``.
    """
    form = "an int, (ph, pw) or (top, left, bottom, right)"
    pads = _ints(padding, "padding", form)
    if not isinstance(padding, Sequence):
        return pads * 4  # type: ignore[return-value]
    if len(pads) == 2:
        return (pads[0], pads[1], pads[0], pads[1])
    if len(pads) == 4:
        return pads  # type: ignore[return-value]
    raise ValueError(
        f"deform_conv2d: padding must be {form}, got {pads}"
    )


def output_size(size: int, kernel: int, stride: int, dilation: int, pad_begin: int, pad_end: int) -> int:
    """One spatial output size; works on ints and on symbolic sizes during export."""
    return (size + pad_begin + pad_end - (dilation * (kernel - 1) + 1)) // stride + 1


@dataclass(frozen=True)
class DeformConvGeometry:
    """Attributes of one DeformConv, validated against the shapes of its inputs."""

    stride: tuple[int, int]
    pads: tuple[int, int, int, int]
    dilation: tuple[int, int]
    groups: int
    offset_groups: int
    kernel: tuple[int, int]
    out_hw: tuple[int, int]

    @staticmethod
    def check(
        input: Tensor,
        offset: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        mask: Tensor | None,
        stride: int | Sequence[int],
        padding: int | Sequence[int],
        dilation: int | Sequence[int],
        groups: int,
        offset_groups: int | None,
        where: str = "deform_conv2d",
    ) -> "DeformConvGeometry":
        """Validate everything once; every message names ``where`` and what mismatches."""
        stride = as_pair(stride, "stride")
        dilation = as_pair(dilation, "dilation")
        pads = normalize_pads(padding)

        def fail(message: str) -> None:
            raise ValueError(f"{where}: {message}")

        if min(stride) <= 0:
            fail(f"stride must be positive, got {stride}")
        if min(dilation) <= 0:
            fail(f"dilation must be positive, got {dilation}")
        if min(pads) < 0:
            fail(f"pads must be non-negative, got (top, left, bottom, right) = {pads}")
        for name, tensor in (("input", input), ("offset", offset), ("weight", weight)):
            if tensor.dim() != 4:
                fail(f"{name} must be 4-D, got shape {tuple(tensor.shape)}")
        n, c, h, w = input.shape
        m, c_per_group, kh, kw = weight.shape
        if c < 1 or h < 1 or w < 1:
            fail(f"input must have C, H and W >= 1, got shape {tuple(input.shape)}")
        if max(h, w) > MAX_SPATIAL_EXTENT or h * w > MAX_PLANE:
            fail(f"input spatial size {h}x{w} is too large (each side <= {MAX_SPATIAL_EXTENT} and H*W < 2^31 "
                 f"supported)")
        if kh <= 0 or kw <= 0:
            fail(f"weight has an empty kernel {kh}x{kw}")
        if groups <= 0:
            fail(f"groups must be positive, got {groups}")
        if c % groups:
            fail(f"input channels {c} are not divisible by groups={groups}")
        if m % groups:
            fail(f"weight has {m} output channels, not divisible by groups={groups}")
        if c_per_group * groups != c:
            fail(
                f"weight has shape {tuple(weight.shape)}: dim 1 must be input channels / groups "
                f"= {c}/{groups} = {c // groups}, got {c_per_group}"
            )
        taps = kh * kw
        if offset_groups is None:
            if offset.shape[1] % (2 * taps):
                fail(
                    f"offset has {offset.shape[1]} channels, not a multiple of 2*kh*kw = {2 * taps} "
                    f"(kernel {kh}x{kw})"
                )
            offset_groups = offset.shape[1] // (2 * taps)
        if offset_groups <= 0:
            fail(f"offset_groups must be positive, got {offset_groups}")
        if c % offset_groups:
            fail(f"input channels {c} are not divisible by offset_groups={offset_groups}")
        if offset.shape[1] != 2 * offset_groups * taps:
            fail(
                f"offset has {offset.shape[1]} channels, expected 2*offset_group*kh*kw = "
                f"{2 * offset_groups * taps} (offset_group={offset_groups}, kernel {kh}x{kw})"
            )
        ho = output_size(h, kh, stride[0], dilation[0], pads[0], pads[2])
        wo = output_size(w, kw, stride[1], dilation[1], pads[1], pads[3])
        if ho < 1 or wo < 1:
            fail(
                f"output would be empty ({ho}x{wo}) for input {h}x{w}, kernel {kh}x{kw}, "
                f"stride {stride}, dilation {dilation}, pads {pads}"
            )
        if ho * wo > MAX_PLANE:
            fail(f"output size {ho}x{wo} is too large (Ho*Wo < 2^31 supported)")
        if offset.shape[0] != n:
            fail(f"offset batch {offset.shape[0]} differs from input batch {n}")
        if tuple(offset.shape[2:]) != (ho, wo):
            fail(f"offset spatial size {tuple(offset.shape[2:])} differs from the output size {(ho, wo)}")
        if mask is not None:
            if mask.dim() != 4:
                fail(f"mask must be 4-D, got shape {tuple(mask.shape)}")
            if mask.shape[1] != offset_groups * taps:
                fail(
                    f"mask has {mask.shape[1]} channels, expected offset_group*kh*kw = "
                    f"{offset_groups * taps} (offset_group={offset_groups}, kernel {kh}x{kw})"
                )
            if mask.shape[0] != n:
                fail(f"mask batch {mask.shape[0]} differs from input batch {n}")
            if tuple(mask.shape[2:]) != (ho, wo):
                fail(f"mask spatial size {tuple(mask.shape[2:])} differs from the output size {(ho, wo)}")
        if bias is not None and tuple(bias.shape) != (m,):
            fail(f"bias has shape {tuple(bias.shape)}, expected ({m},)")
        return DeformConvGeometry(stride, pads, dilation, groups, offset_groups, (kh, kw), (ho, wo))


def check_float_tensors(input: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None, mask: Tensor | None,
                        where: str = "deform_conv2d") -> None:
    """The float op's dtype rule: input, weight and bias one floating dtype; offset and mask floating."""
    for name, tensor in (("input", input), ("offset", offset), ("weight", weight), ("bias", bias), ("mask", mask)):
        if tensor is not None and not tensor.is_floating_point():
            raise ValueError(f"{where}: {name} must be a floating-point tensor, got {tensor.dtype}")
    for name, tensor in (("weight", weight), ("bias", bias)):
        if tensor is not None and tensor.dtype != input.dtype:
            raise ValueError(f"{where}: {name} has dtype {tensor.dtype}, expected the input's {input.dtype}")
