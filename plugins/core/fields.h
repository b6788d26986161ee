// DcnDeformConv attributes as named plugin fields, without TensorRT.
//
// TensorRT hands a plugin its attributes as a list of named, typed arrays
// (PluginField): from the ONNX parser in the build phase (ONNX INT / INTS
// attributes arrive as int32 arrays) and from the plugin's own
// getFieldsToSerialize() when an engine is deserialised (we write int64
// arrays). This file converts between such a list, in a neutral form, and
// DeformConvAttributes, with messages that name the node and the field. The
// TensorRT adapter only converts PluginField <-> FieldView.
//
// It also resolves which tensor a plugin input is, because TensorRT's ONNX
// parser drops the empty optional inputs of a node.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/int8_scales.h"
#include "core/params.h"

namespace dcn_deploy {

// Element type of a field. kOther covers every type we do not accept
// (floats, int8, ...); FieldView::type_label then names it in messages.
enum class FieldType { kInt32, kInt64, kChar, kFloat32, kOther };

// One field as received: `data` points to `length` elements of `type`
// (bytes for kChar, not necessarily NUL-terminated). Nothing is owned.
struct FieldView {
  const char* name = nullptr;
  FieldType type = FieldType::kOther;
  const void* data = nullptr;
  int64_t length = 0;
  const char* type_label = nullptr;  // e.g. "kFLOAT32"; used for kOther only
};

// An attribute written for serialisation: `name` and its int64 values.
struct Int64Field {
  std::string name;
  std::vector<int64_t> values;
};

// The attribute fields in serialisation order, with their lengths.
struct AttributeFieldSpec {
  const char* name;
  int64_t length;
};
constexpr AttributeFieldSpec kAttributeFields[] = {
    {"kernel_shape", 2}, {"strides", 2}, {"pads", 4}, {"dilations", 2}, {"group", 1}, {"offset_group", 1},
};
constexpr int kNumAttributeFields = static_cast<int>(sizeof(kAttributeFields) / sizeof(kAttributeFields[0]));

// String fields of the ONNX node that only route it to the plugin registry;
// accepted (as kChar) and ignored.
constexpr const char* kIgnoredStringFields[] = {"plugin_namespace", "plugin_version"};

// Fills `attributes` from `fields` (count entries). Every attribute field of
// kAttributeFields must appear exactly once, as int32 or int64 with the listed
// length; the ignored string fields may appear once each, as kChar; anything
// else is an error. Values are range-checked like ONNX attributes. Returns an
// error message naming the node and the field, or "" on success
// (`attributes` is only written on success).
std::string attributes_from_fields(const std::string& node_name, const FieldView* fields, int64_t count,
                                   DeformConvAttributes* attributes);

// INT8 forms (DcnDeformConvInt8, DcnDeformConvInt8Requantized): the attribute
// fields above plus the scales, each exactly once as kFLOAT32 (TensorRT's ONNX
// parser passes FLOAT / FLOATS attributes so): x_scale (1 value), w_scale (M
// values, or 1 for every channel) and, for the Requantized form only, y_scale
// (1 value). Fills `attributes` and `scales` (checked with check_int8_scales;
// the length of w_scale against M is checked once M is known). Returns an
// error message naming the node and the field, or "".
constexpr const char* kInt8ScaleFields[] = {"x_scale", "w_scale", "y_scale"};
std::string int8_fields_from_fields(const std::string& node_name, const FieldView* fields, int64_t count,
                                    bool requantized, DeformConvAttributes* attributes,
                                    DeformConvInt8Scales* scales);

// The attribute fields of `attributes`, in kAttributeFields order, as int64.
std::vector<Int64Field> attributes_to_fields(const DeformConvAttributes& attributes);

// One line describing the attributes, e.g. "kernel_shape=[3, 3] strides=[1, 1] ...".
std::string describe_attributes(const DeformConvAttributes& attributes);

// Which tensor each plugin input is. TensorRT's ONNX parser drops empty
// optional inputs, so a node with 4 inputs may carry B or mask; the rank of
// the 4th input decides (1: B [M], 4: mask).
struct InputLayout {
  int32_t num_inputs = 0;
  int32_t bias_index = -1;  // -1 when absent
  int32_t mask_index = -1;  // -1 when absent
};

// Resolves the layout from the number of inputs and their ranks (`ranks` has
// num_inputs entries). Checks the ranks of X, W and offset (4), B (1) and
// mask (4). Returns an error message naming the node, or "" on success.
std::string resolve_input_layout(const std::string& node_name, int32_t num_inputs, const int32_t* ranks,
                                 InputLayout* layout);

}  // namespace dcn_deploy
