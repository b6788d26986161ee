"""Every bad input gets a clear error naming what mismatches, from the Python reference and
from the custom op (whose errors also name the node). Nothing crashes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from cases import Case
from graphs import run_model, single_node_model

from dcn_deploy import deform_conv2d

pytestmark = pytest.mark.custom_op

NODE = "backbone.layer3.0.conv2"


def _drop_channel(name):
    return lambda a: a.__setitem__(name, a[name][:, :-1])


def _crop(name):
    return lambda a: a.__setitem__(name, a[name][:, :, :-1])


# (id, case, change to the arrays, change to the attributes, Python message, custom-op key word)
BAD = [
    ("offset_channels", Case("b"), _drop_channel("offset"), None, "offset has 17 channels, expected 2\\*offset_group\\*kh\\*kw = 18", "offset"),
    ("mask_channels", Case("b"), _drop_channel("mask"), None, "mask has 8 channels, expected offset_group\\*kh\\*kw = 9", "mask"),
    ("channels_vs_group", Case("b", c=4, m=6), None, {"group": 3}, "not divisible by groups=3", "group"),
    ("channels_vs_offset_group", Case("b", c=4), None, {"offset_group": 3}, "offset_groups=3", "offset_group"),
    ("weight_in_channels", Case("b"), lambda a: a.__setitem__("W", a["W"][:, :-1]), None, "dim 1 must be input channels", "W"),
    ("offset_size", Case("b"), _crop("offset"), None, "offset spatial size \\(6, 9\\) differs from the output size \\(7, 9\\)", "offset"),
    ("mask_size", Case("b"), _crop("mask"), None, "mask spatial size \\(6, 9\\) differs from the output size \\(7, 9\\)", "mask"),
    ("bias_length", Case("b"), lambda a: a.__setitem__("B", a["B"][:-1]), None, "bias has shape \\(5,\\), expected \\(6,\\)", "B"),
    ("stride_zero", Case("b"), None, {"strides": [0, 1]}, "stride must be positive", "stride"),
    ("dilation_negative", Case("b"), None, {"dilations": [1, -1]}, "dilation must be positive", "dilation"),
    ("negative_pads", Case("b"), None, {"pads": [1, -1, 1, 1]}, "pads must be non-negative", "pads"),
]


def _apply(case, change_arrays, change_attrs):
    arrays = case.make()
    if change_arrays:
        change_arrays(arrays)
    attrs = dict(case.attributes, **(change_attrs or {}))
    return arrays, attrs


@pytest.mark.parametrize("bad", BAD, ids=lambda b: b[0])
def test_reference_names_the_mismatch(bad):
    _, case, change_arrays, change_attrs, message, _ = bad
    arrays, attrs = _apply(case, change_arrays, change_attrs)
    t = {k: None if v is None else torch.from_numpy(v) for k, v in arrays.items()}
    with pytest.raises(ValueError, match=message):
        deform_conv2d(t["X"], t["offset"], t["W"], t["B"], stride=attrs["strides"], padding=attrs["pads"],
                      dilation=attrs["dilations"], mask=t["mask"], groups=attrs["group"],
                      offset_groups=attrs["offset_group"])


@pytest.mark.parametrize("bad", BAD, ids=lambda b: b[0])
def test_custom_op_names_the_node_and_the_mismatch(bad):
    _, case, change_arrays, change_attrs, _, keyword = bad
    arrays, attrs = _apply(case, change_arrays, change_attrs)
    model = single_node_model(case, "custom", attributes=attrs, node_name=NODE, arrays=arrays)
    with pytest.raises(Exception) as error:
        run_model(model, arrays, custom_op=True)
    text = str(error.value)
    assert NODE in text and keyword in text, text


@pytest.mark.parametrize("missing", ["strides", "pads", "dilations", "group", "offset_group", "kernel_shape"])
def test_custom_op_missing_required_attribute(missing):
    case = Case("attrs")
    arrays = case.make()
    attrs = {k: v for k, v in case.attributes.items() if k != missing}
    model = single_node_model(case, "custom", attributes=attrs, node_name=NODE, arrays=arrays)
    with pytest.raises(Exception) as error:
        run_model(model, arrays, custom_op=True)
    text = str(error.value)
    assert NODE in text and missing in text and "missing" in text, text


def test_kernel_shape_attribute_must_match_weight():
    case = Case("kernel")
    arrays = case.make()
    model = single_node_model(case, "custom", attributes=dict(case.attributes, kernel_shape=[5, 5]), node_name=NODE)
    with pytest.raises(Exception, match="kernel_shape") as error:
        run_model(model, arrays, custom_op=True)
    assert NODE in str(error.value)


def test_non_finite_offsets_in_custom_op_never_read_outside():
    case = Case("nonfinite", offset_scale=2.0, seed=4)
    arrays = case.make()
    poisoned = dict(arrays, offset=arrays["offset"].copy())
    cleaned = dict(arrays, offset=arrays["offset"].copy(), mask=arrays["mask"].copy())
    rng = np.random.default_rng(0)
    for bad in (np.nan, np.inf, -np.inf, 1e30, -1e30):
        n, tap, oy, ox = (int(rng.integers(0, s)) for s in (case.n, 9, *case.out_hw))
        axis = int(rng.integers(0, 2))
        poisoned["offset"][n, 2 * tap + axis, oy, ox] = bad
        cleaned["offset"][n, 2 * tap + axis, oy, ox] = 0.0
        cleaned["mask"][n, tap, oy, ox] = 0.0
    model = single_node_model(case, "custom")
    got = run_model(model, poisoned, custom_op=True)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, run_model(model, cleaned, custom_op=True), rtol=0, atol=1e-5)
