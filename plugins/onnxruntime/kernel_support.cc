#include "onnxruntime/kernel_support.h"

namespace dcn_deploy {
namespace {

bool call_succeeds(OrtStatus* status) {
  Ort::Status owned(status);  // Releases the status.
  return owned.IsOK();
}

// True when the attribute is a single int, float or string.
bool scalar_attribute_exists(const OrtKernelInfo* info, const char* name) {
  const OrtApi& api = Ort::GetApi();
  int64_t int_value = 0;
  float float_value = 0.0f;
  size_t size = 0;
  return call_succeeds(api.KernelInfoGetAttribute_int64(info, name, &int_value)) ||
         call_succeeds(api.KernelInfoGetAttribute_float(info, name, &float_value)) ||
         call_succeeds(api.KernelInfoGetAttribute_string(info, name, nullptr, &size));
}

// True when the attribute is a non-empty list of the other kind than the one
// asked for: ORT reads it as an empty list of the kind asked for.
bool other_list_exists(const OrtKernelInfo* info, const char* name, bool asked_ints) {
  const OrtApi& api = Ort::GetApi();
  size_t size = 0;
  const bool read = asked_ints ? call_succeeds(api.KernelInfoGetAttributeArray_float(info, name, nullptr, &size))
                               : call_succeeds(api.KernelInfoGetAttributeArray_int64(info, name, nullptr, &size));
  return read && size > 0;
}

}  // namespace

// ORT has no "does this attribute exist" query for kernels, so probe every
// attribute type the node could carry.
bool attribute_exists(const OrtKernelInfo* info, const char* name) {
  const OrtApi& api = Ort::GetApi();
  size_t size = 0;
  return scalar_attribute_exists(info, name) ||
         call_succeeds(api.KernelInfoGetAttributeArray_int64(info, name, nullptr, &size)) ||
         call_succeeds(api.KernelInfoGetAttributeArray_float(info, name, nullptr, &size));
}

namespace {

[[noreturn]] void throw_attribute_error(const OrtKernelInfo* info, const std::string& node_label, const char* name,
                                        const char* expected_type) {
  const std::string detail = attribute_exists(info, name)
                                 ? std::string("attribute '") + name + "' must be of type " + expected_type
                                 : std::string("required attribute '") + name + "' is missing";
  throw NodeError(ORT_INVALID_ARGUMENT, node_error(node_label, detail));
}

}  // namespace

int64_t read_int_attribute(const OrtKernelInfo* info, const std::string& node_label, const char* name) {
  int64_t value = 0;
  if (!call_succeeds(Ort::GetApi().KernelInfoGetAttribute_int64(info, name, &value))) {
    throw_attribute_error(info, node_label, name, "int");
  }
  return value;
}

std::vector<int64_t> read_ints_attribute(const OrtKernelInfo* info, const std::string& node_label,
                                         const char* name) {
  const OrtApi& api = Ort::GetApi();
  size_t size = 0;
  if (!call_succeeds(api.KernelInfoGetAttributeArray_int64(info, name, nullptr, &size))) {
    throw_attribute_error(info, node_label, name, "ints");
  }
  // ORT reads a scalar attribute, or a list of floats, as an empty list of
  // ints; report the type, not the length.
  if (size == 0 && (scalar_attribute_exists(info, name) || other_list_exists(info, name, true))) {
    throw NodeError(ORT_INVALID_ARGUMENT,
                    node_error(node_label, std::string("attribute '") + name + "' must be of type ints"));
  }
  std::vector<int64_t> values(size);
  if (size > 0 && !call_succeeds(api.KernelInfoGetAttributeArray_int64(info, name, values.data(), &size))) {
    throw_attribute_error(info, node_label, name, "ints");
  }
  return values;
}

// The node name, or a description by output name for unnamed nodes.
std::string make_node_label(const OrtKernelInfo* info) {
  Ort::ConstKernelInfo kernel_info(info);
  std::string name = kernel_info.GetNodeName();
  if (!name.empty()) return name;
  return "<unnamed node with output " + kernel_info.GetOutputName(0) + ">";
}

bool input_is_constant(const OrtKernelInfo* info, size_t index) {
  try {
    int is_constant = 0;
    Ort::ConstKernelInfo(info).GetTensorConstantInput(index, &is_constant);
    return is_constant != 0;
  } catch (const Ort::Exception&) {
    return false;
  }
}

std::string element_type_name(ONNXTensorElementDataType type) {
  switch (type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return "float32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return "float16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16: return "bfloat16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: return "float64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return "int32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return "int64";
    default: return "ONNX element type " + std::to_string(static_cast<int>(type));
  }
}

float read_float_attribute(const OrtKernelInfo* info, const std::string& node_label, const char* name) {
  float value = 0.0f;
  if (!call_succeeds(Ort::GetApi().KernelInfoGetAttribute_float(info, name, &value))) {
    throw_attribute_error(info, node_label, name, "float");
  }
  return value;
}

std::vector<float> read_floats_attribute(const OrtKernelInfo* info, const std::string& node_label,
                                         const char* name) {
  const OrtApi& api = Ort::GetApi();
  size_t size = 0;
  if (!call_succeeds(api.KernelInfoGetAttributeArray_float(info, name, nullptr, &size))) {
    throw_attribute_error(info, node_label, name, "floats");
  }
  if (size == 0 && (scalar_attribute_exists(info, name) || other_list_exists(info, name, false))) {
    throw NodeError(ORT_INVALID_ARGUMENT,
                    node_error(node_label, std::string("attribute '") + name + "' must be of type floats"));
  }
  std::vector<float> values(size);
  if (size > 0 && !call_succeeds(api.KernelInfoGetAttributeArray_float(info, name, values.data(), &size))) {
    throw_attribute_error(info, node_label, name, "floats");
  }
  return values;
}

DeformConvAttributes read_geometry_attributes(const OrtKernelInfo* info, const std::string& node_label) {
  const std::vector<int64_t> dilations = read_ints_attribute(info, node_label, "dilations");
  const int64_t group = read_int_attribute(info, node_label, "group");
  const std::vector<int64_t> kernel_shape = read_ints_attribute(info, node_label, "kernel_shape");
  const int64_t offset_group = read_int_attribute(info, node_label, "offset_group");
  const std::vector<int64_t> pads = read_ints_attribute(info, node_label, "pads");
  const std::vector<int64_t> strides = read_ints_attribute(info, node_label, "strides");
  DeformConvAttributes attributes;
  const std::string error =
      make_attributes(node_label, kernel_shape, strides, pads, dilations, group, offset_group, &attributes);
  if (!error.empty()) throw NodeError(ORT_INVALID_ARGUMENT, error);
  return attributes;
}

}  // namespace dcn_deploy
