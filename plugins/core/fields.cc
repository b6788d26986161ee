#include "core/fields.h"

#include <cstring>

#include "core/text.h"

namespace dcn_deploy {
namespace {

const char* type_name(const FieldView& field) {
  switch (field.type) {
    case FieldType::kInt32:
      return "kINT32";
    case FieldType::kInt64:
      return "kINT64";
    case FieldType::kChar:
      return "kCHAR";
    case FieldType::kFloat32:
      return "kFLOAT32";
    case FieldType::kOther:
      break;
  }
  return field.type_label ? field.type_label : "an unsupported type";
}

int find_attribute_field(const char* name) {
  for (int i = 0; i < kNumAttributeFields; ++i) {
    if (std::strcmp(name, kAttributeFields[i].name) == 0) return i;
  }
  return -1;
}

bool is_ignored_string_field(const char* name) {
  for (const char* ignored : kIgnoredStringFields) {
    if (std::strcmp(name, ignored) == 0) return true;
  }
  return false;
}

std::string expected_field_list() {
  std::string names;
  for (int i = 0; i < kNumAttributeFields; ++i) {
    names += (i ? ", " : "");
    names += kAttributeFields[i].name;
  }
  for (const char* ignored : kIgnoredStringFields) {
    names += ", ";
    names += ignored;
  }
  return names;
}

std::string field_error(const std::string& node_name, const char* field_name, const std::string& detail) {
  return node_error(node_name, concat("plugin field '", field_name, "' ", detail));
}

// Reads an int32 or int64 field of the expected length into `values`.
std::string read_int_field(const std::string& node_name, const FieldView& field, int64_t expected_length,
                           std::vector<int64_t>* values) {
  if (field.type != FieldType::kInt32 && field.type != FieldType::kInt64) {
    return field_error(node_name, field.name, concat("has type ", type_name(field), ", expected kINT32 or kINT64"));
  }
  if (field.length != expected_length) {
    return field_error(node_name, field.name,
                       concat("has ", field.length, " value", field.length == 1 ? "" : "s", ", expected ",
                              expected_length));
  }
  if (field.data == nullptr) {
    return field_error(node_name, field.name, "has no data (null pointer)");
  }
  values->resize(static_cast<size_t>(expected_length));
  for (int64_t i = 0; i < expected_length; ++i) {
    int64_t value = 0;
    if (field.type == FieldType::kInt32) {
      int32_t narrow = 0;
      std::memcpy(&narrow, static_cast<const char*>(field.data) + static_cast<size_t>(i) * sizeof(int32_t), sizeof(narrow));
      value = narrow;
    } else {
      std::memcpy(&value, static_cast<const char*>(field.data) + static_cast<size_t>(i) * sizeof(int64_t), sizeof(value));
    }
    (*values)[static_cast<size_t>(i)] = value;
  }
  return "";
}

std::string check_rank(const std::string& node_name, const char* what, int32_t rank, int32_t expected,
                       const char* layout) {
  if (rank != expected) {
    return node_error(node_name, concat(what, " must be ", expected, "-D ", layout, ", got rank ", rank));
  }
  return "";
}

}  // namespace

std::string attributes_from_fields(const std::string& node_name, const FieldView* fields, int64_t count,
                                   DeformConvAttributes* attributes) {
  if (count < 0 || (count > 0 && fields == nullptr)) {
    return node_error(node_name, concat("invalid plugin field list (", count, " fields, ",
                                        fields ? "non-null" : "null", " pointer)"));
  }
  std::vector<int64_t> values[kNumAttributeFields];
  bool seen[kNumAttributeFields] = {};
  bool seen_ignored[sizeof(kIgnoredStringFields) / sizeof(kIgnoredStringFields[0])] = {};

  for (int64_t i = 0; i < count; ++i) {
    const FieldView& field = fields[i];
    if (field.name == nullptr) {
      return node_error(node_name, concat("plugin field #", i, " has no name"));
    }
    if (field.length < 0) {
      return field_error(node_name, field.name, concat("has a negative length ", field.length));
    }
    const int index = find_attribute_field(field.name);
    if (index >= 0) {
      if (seen[index]) return field_error(node_name, field.name, "is given more than once");
      seen[index] = true;
      std::string error = read_int_field(node_name, field, kAttributeFields[index].length, &values[index]);
      if (!error.empty()) return error;
      continue;
    }
    if (is_ignored_string_field(field.name)) {
      const size_t ignored_index = std::strcmp(field.name, kIgnoredStringFields[0]) == 0 ? 0 : 1;
      if (seen_ignored[ignored_index]) return field_error(node_name, field.name, "is given more than once");
      seen_ignored[ignored_index] = true;
      if (field.type != FieldType::kChar) {
        return field_error(node_name, field.name, concat("has type ", type_name(field), ", expected kCHAR (a string)"));
      }
      continue;  // Only routes the ONNX node to the plugin registry.
    }
    return node_error(node_name, concat("unknown plugin field '", field.name, "' (expected ",
                                        expected_field_list(), ")"));
  }
  for (int i = 0; i < kNumAttributeFields; ++i) {
    if (!seen[i]) {
      return field_error(node_name, kAttributeFields[i].name,
                         concat("is missing (", kAttributeFields[i].length, " int value",
                                kAttributeFields[i].length == 1 ? "" : "s", " expected)"));
    }
  }
  // Order of kAttributeFields: kernel_shape, strides, pads, dilations, group, offset_group.
  return make_attributes(node_name, values[0], values[1], values[2], values[3], values[4][0], values[5][0],
                         attributes);
}

std::string int8_fields_from_fields(const std::string& node_name, const FieldView* fields, int64_t count,
                                    bool requantized, DeformConvAttributes* attributes,
                                    DeformConvInt8Scales* scales) {
  if (count < 0 || (count > 0 && fields == nullptr)) return attributes_from_fields(node_name, fields, count, attributes);
  constexpr int kScaleFields = static_cast<int>(sizeof(kInt8ScaleFields) / sizeof(kInt8ScaleFields[0]));
  std::vector<float> values[kScaleFields];
  bool seen[kScaleFields] = {};
  std::vector<FieldView> attribute_fields;
  for (int64_t i = 0; i < count; ++i) {
    const FieldView& field = fields[i];
    int index = -1;
    for (int s = 0; s < kScaleFields && field.name != nullptr; ++s) {
      if (std::strcmp(field.name, kInt8ScaleFields[s]) == 0) index = s;
    }
    if (index < 0) {
      attribute_fields.push_back(field);  // attributes_from_fields reports unknown fields
      continue;
    }
    if (index == 2 && !requantized) {
      return field_error(node_name, field.name, concat("is for ", kInt8RequantizedOpType, " only (", kInt8OpType,
                                                       " writes float32 Y)"));
    }
    if (seen[index]) return field_error(node_name, field.name, "is given more than once");
    seen[index] = true;
    if (field.type != FieldType::kFloat32) {
      return field_error(node_name, field.name, concat("has type ", type_name(field), ", expected kFLOAT32"));
    }
    if (index == 1 ? field.length < 1 : field.length != 1) {
      return field_error(node_name, field.name, concat("has ", field.length, " values, expected ",
                                                       index == 1 ? "one per output channel (or 1)" : "1"));
    }
    if (field.data == nullptr) return field_error(node_name, field.name, "has no data (null pointer)");
    values[index].resize(static_cast<size_t>(field.length));
    std::memcpy(values[index].data(), field.data, values[index].size() * sizeof(float));
  }
  for (int s = 0; s < kScaleFields; ++s) {
    if (!seen[s] && (s < 2 || requantized)) {
      return field_error(node_name, kInt8ScaleFields[s], s == 1 ? "is missing (kFLOAT32, one per output channel)"
                                                                : "is missing (1 kFLOAT32 value)");
    }
  }
  DeformConvAttributes parsed;
  std::string error = attributes_from_fields(node_name, attribute_fields.data(),
                                             static_cast<int64_t>(attribute_fields.size()), &parsed);
  if (!error.empty()) return error;
  DeformConvInt8Scales parsed_scales;
  parsed_scales.x_scale = values[0][0];
  parsed_scales.w_scale = values[1];
  parsed_scales.y_scale = requantized ? values[2][0] : 0.0f;
  error = check_int8_scales(node_name, parsed_scales, -1);
  if (!error.empty()) return error;
  if (requantized && !(parsed_scales.y_scale > 0.0f)) {  // check_int8_scales treats 0 as "no y_scale"
    return field_error(node_name, kInt8ScaleFields[2], concat("must be finite and positive, got ",
                                                              parsed_scales.y_scale));
  }
  *attributes = parsed;
  *scales = parsed_scales;
  return "";
}

std::vector<Int64Field> attributes_to_fields(const DeformConvAttributes& attributes) {
  return {
      {kAttributeFields[0].name, {attributes.kernel[0], attributes.kernel[1]}},
      {kAttributeFields[1].name, {attributes.stride[0], attributes.stride[1]}},
      {kAttributeFields[2].name, {attributes.pads[0], attributes.pads[1], attributes.pads[2], attributes.pads[3]}},
      {kAttributeFields[3].name, {attributes.dilation[0], attributes.dilation[1]}},
      {kAttributeFields[4].name, {attributes.group}},
      {kAttributeFields[5].name, {attributes.offset_group}},
  };
}

std::string describe_attributes(const DeformConvAttributes& attributes) {
  std::string text;
  for (const Int64Field& field : attributes_to_fields(attributes)) {
    text += text.empty() ? "" : " ";
    text += field.name + "=";
    text += field.values.size() == 1 ? std::to_string(field.values[0])
                                     : format_list(field.values.data(), field.values.size());
  }
  return text;
}

std::string resolve_input_layout(const std::string& node_name, int32_t num_inputs, const int32_t* ranks,
                                 InputLayout* layout) {
  if (num_inputs < 3 || num_inputs > 5) {
    return node_error(node_name, concat("expects 3 to 5 inputs (X, W, offset, optional B, optional mask), got ",
                                        num_inputs));
  }
  if (ranks == nullptr) return node_error(node_name, "input ranks are missing");
  std::string error = check_rank(node_name, "input X", ranks[0], 4, "[N, C, H, W]");
  if (error.empty()) error = check_rank(node_name, "weight W", ranks[1], 4, "[M, C/group, kh, kw]");
  if (error.empty()) error = check_rank(node_name, "offset", ranks[2], 4, "[N, 2*offset_group*kh*kw, Ho, Wo]");
  if (!error.empty()) return error;

  InputLayout result;
  result.num_inputs = num_inputs;
  if (num_inputs == 4) {
    if (ranks[3] == 1) {
      result.bias_index = 3;
    } else if (ranks[3] == 4) {
      result.mask_index = 3;
    } else {
      return node_error(node_name, concat("4th input must be bias B [M] (rank 1) or mask [N, offset_group*kh*kw, "
                                          "Ho, Wo] (rank 4), got rank ",
                                          ranks[3]));
    }
  } else if (num_inputs == 5) {
    error = check_rank(node_name, "bias B (input 4)", ranks[3], 1, "[M]");
    if (error.empty()) error = check_rank(node_name, "mask (input 5)", ranks[4], 4, "[N, offset_group*kh*kw, Ho, Wo]");
    if (!error.empty()) return error;
    result.bias_index = 3;
    result.mask_index = 4;
  }
  *layout = result;
  return "";
}

}  // namespace dcn_deploy
