"""The TensorRT plugin's fields (plugins/core/fields.cc), bad as TensorRT's ONNX parser or a damaged
serialized engine would hand them over: each case is built and parsed by the C++ harness
(``tests/cpp/test_fields --case ID``, built next to the custom-op library) and must be rejected with a
message naming the node and the field. Under scripts/sanitize_tests.sh the harness is the ASan+UBSan build."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from dcn_deploy.backends.onnxruntime import ort_custom_op_library

pytestmark = [pytest.mark.bad_input, pytest.mark.custom_op]

NODE = "DcnDeformConv node 'backbone.layer3.0.conv2': "
# (id, message after the node prefix); the ids are those of field_cases() in tests/cpp/test_fields.cc
CASES = [
    ("missing_kernel_shape", "plugin field 'kernel_shape' is missing (2 int values expected)"),
    ("missing_offset_group", "plugin field 'offset_group' is missing (1 int value expected)"),
    ("strides_as_float32", "plugin field 'strides' has type kFLOAT32, expected kINT32 or kINT64"),
    ("group_as_string", "plugin field 'group' has type kCHAR, expected kINT32 or kINT64"),
    ("pads_three_values", "plugin field 'pads' has 3 values, expected 4"),
    ("dilations_one_value", "plugin field 'dilations' has 1 value, expected 2"),
    ("pads_negative_length", "plugin field 'pads' has a negative length -4"),
    ("strides_null_data", "plugin field 'strides' has no data (null pointer)"),
    ("group_twice", "plugin field 'group' is given more than once"),
    ("unknown_field_stride", "unknown plugin field 'stride' (expected kernel_shape, strides, pads, dilations"),
    ("unnamed_field", "plugin field #2 has no name"),
    ("zero_stride", "attribute 'strides' values must be >= 1, got [0, 1]"),
    ("plugin_namespace_as_int", "plugin field 'plugin_namespace' has type kINT32, expected kCHAR (a string)"),
    ("null_field_list", "invalid plugin field list (3 fields, null pointer)"),
    ("serialized_negative_kernel", "attribute 'kernel_shape' values must be >= 1, got [-7, 3]"),
    ("serialized_truncated_pads", "plugin field 'pads' has 2 values, expected 4"),
    ("serialized_huge_pad", "attribute 'pads' values must be <= 16777216, got [0, 1099511627776, 0, 0]"),
    ("serialized_zero_group", "attribute 'group' must be >= 1, got 0"),
    ("serialized_last_field_lost", "plugin field 'offset_group' is missing"),
    ("serialized_name_garbled", "unknown plugin field 'dil"),
    ("serialized_count_too_large", "plugin field 'dilations' has 1099511627776 values, expected 2"),
]


def _harness() -> Path:
    """test_fields of the build that holds the custom-op library in use (build/ or build-sanitize/)."""
    harness = Path(ort_custom_op_library()).resolve().parent.parent / "tests" / "cpp" / "test_fields"
    if not harness.is_file():
        pytest.skip(f"{harness} is not built (./scripts/build_plugins.sh builds it)")
    return harness


def test_every_harness_case_is_catalogued():
    listed = subprocess.run([_harness(), "--list"], capture_output=True, text=True, check=True).stdout.split()
    assert listed == [case_id for case_id, _ in CASES]


@pytest.mark.parametrize("bad", CASES, ids=lambda b: b[0])
def test_plugin_fields_rejected(bad):
    case_id, message = bad
    run = subprocess.run([_harness(), "--case", case_id], capture_output=True, timeout=60)
    text = run.stdout.decode(errors="replace").strip()
    assert run.returncode == 0, f"exit {run.returncode}: {text} {run.stderr.decode(errors='replace')}"
    assert text.startswith(NODE) and message in text, text
