#include "onnxruntime/float_op.h"

#include <algorithm>
#include <array>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <utility>
#include <vector>

#include "cpu/float_driver.h"
#include "onnxruntime/kernel_support.h"
#include "onnxruntime/parallel_items.h"

namespace dcn_deploy {
namespace {

bool is_supported_float(ONNXTensorElementDataType type) {
  return type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
}

constexpr size_t kOffsetIndex = 2;
constexpr size_t kMaskIndex = 4;

bool is_sampling_input(size_t index) { return index == kOffsetIndex || index == kMaskIndex; }

// The element types of a node's inputs (UNDEFINED where an optional input is
// absent) and of its output Y.
struct NodeTypes {
  std::array<ONNXTensorElementDataType, kInputCount> inputs{};
  ONNXTensorElementDataType output = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
};

// "X float16, W float32, offset float32, mask float32, Y float16".
std::string describe_types(const NodeTypes& types) {
  std::string text;
  for (size_t index = 0; index < kInputCount; ++index) {
    if (types.inputs[index] == ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED) continue;
    text += std::string(kInputNames[index]) + " " + element_type_name(types.inputs[index]) + ", ";
  }
  return text + "Y " + element_type_name(types.output);
}

// Checks the type rule: X, W, B and Y share one type; offset and mask share
// one type; each float32 or float16.
DeformConvElementTypes check_element_types(const std::string& node_label, const NodeTypes& types) {
  DeformConvElementTypes result;
  result.data = types.inputs[0];
  result.sampling = types.inputs[kOffsetIndex];
  bool valid = is_supported_float(result.data) && is_supported_float(result.sampling) &&
               types.output == result.data;
  for (size_t index = 0; index < kInputCount; ++index) {
    const ONNXTensorElementDataType type = types.inputs[index];
    if (type == ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED) continue;
    valid = valid && type == (is_sampling_input(index) ? result.sampling : result.data);
  }
  if (!valid) {
    throw NodeError(ORT_INVALID_ARGUMENT,
                    node_error(node_label, "unsupported element types: " + describe_types(types) +
                                               "; X, W, B and Y must share one type and offset and mask "
                                               "one type, each float32 or float16"));
  }
  return result;
}

// The node's element types as the graph declares them (known at session creation).
NodeTypes read_node_types(const OrtKernelInfo* info) {
  Ort::ConstKernelInfo kernel_info(info);
  NodeTypes types;
  types.inputs.fill(ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED);
  const size_t count = std::min(kernel_info.GetInputCount(), kInputCount);
  for (size_t index = 0; index < count; ++index) {
    if (kernel_info.GetInputName(index).empty()) continue;  // Absent optional input.
    types.inputs[index] = kernel_info.GetInputTypeInfo(index).GetTensorTypeAndShapeInfo().GetElementType();
  }
  types.output = kernel_info.GetOutputTypeInfo(0).GetTensorTypeAndShapeInfo().GetElementType();
  return types;
}

// A float32 view of one input: the tensor's own data, or a float32 copy of float16 data.
struct FloatInput {
  const float* data = nullptr;
  std::vector<int64_t> dims;
  std::vector<float> converted;  // Owns the data of a converted float16 input.
};

void half_to_float(const Ort::Float16_t* source, size_t count, std::vector<float>* target) {
  target->resize(count);
  float* out = target->data();
  for (size_t index = 0; index < count; ++index) out[index] = source[index].ToFloat();
}

// Reads input `index`, which must have element type `expected`; returns false
// for an absent optional input.
bool read_input(const Ort::KernelContext& context, size_t index, ONNXTensorElementDataType expected,
                const std::string& node_label, FloatInput* tensor) {
  if (index >= context.GetInputCount()) return false;
  Ort::ConstValue value = context.GetInput(index);
  if (value == nullptr) return false;
  const std::string input_name = kInputNames[index];
  if (!value.IsTensor()) {
    throw NodeError(ORT_INVALID_ARGUMENT, node_error(node_label, "input " + input_name + " must be a tensor"));
  }
  const Ort::TensorTypeAndShapeInfo info = value.GetTensorTypeAndShapeInfo();
  const ONNXTensorElementDataType type = info.GetElementType();
  if (type != expected) {  // Only if ONNX Runtime passed other types than the graph declares.
    throw NodeError(ORT_INVALID_ARGUMENT,
                    node_error(node_label, "input " + input_name + " has element type " + element_type_name(type) +
                                               ", expected " + element_type_name(expected) +
                                               " as at session creation"));
  }
  tensor->dims = info.GetShape();
  if (type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16) {
    half_to_float(value.GetTensorData<Ort::Float16_t>(), info.GetElementCount(), &tensor->converted);
    tensor->data = tensor->converted.data();
  } else {
    tensor->data = value.GetTensorData<float>();
  }
  return true;
}

// Scratch memory of one Compute call from the session's CPU allocator (an
// arena, so repeated runs do not fault in fresh pages), or from the heap when
// ONNX Runtime offers no allocator.
class Workspace {
 public:
  Workspace(const Ort::KernelContext& context, size_t floats) {
    const OrtApi& api = Ort::GetApi();
    try {
      const Ort::MemoryInfo info = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
      allocator_ = context.GetAllocator(*info);
      if (allocator_ != nullptr) data_ = static_cast<float*>(allocator_->Alloc(allocator_, floats * sizeof(float)));
    } catch (const Ort::Exception&) {
      data_ = nullptr;
    }
    if (data_ == nullptr) {
      if (allocator_ != nullptr) api.ReleaseAllocator(allocator_);
      allocator_ = nullptr;
      heap_.resize(floats);
      data_ = heap_.data();
    }
  }
  ~Workspace() {
    if (allocator_ != nullptr) {
      allocator_->Free(allocator_, data_);
      Ort::GetApi().ReleaseAllocator(allocator_);
    }
  }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  float* data() const { return data_; }

 private:
  OrtAllocator* allocator_ = nullptr;
  float* data_ = nullptr;
  std::vector<float> heap_;
};

}  // namespace

DeformConvOrtKernel::DeformConvOrtKernel(std::string node_label, const DeformConvAttributes& attributes,
                                         const DeformConvElementTypes& types, bool constant_weight)
    : node_label_(std::move(node_label)), attributes_(attributes), types_(types), constant_weight_(constant_weight) {}

OrtStatusPtr DeformConvOrtKernel::ComputeV2(OrtKernelContext* context) const noexcept {
  return run_returning_status(node_label_, [&] { compute(context); });
}

void DeformConvOrtKernel::compute(OrtKernelContext* raw_context) const {
  Ort::KernelContext context(raw_context);
  FloatInput input, weight, offset, bias, mask;
  read_input(context, 0, types_.data, node_label_, &input);
  read_input(context, 1, types_.data, node_label_, &weight);
  read_input(context, kOffsetIndex, types_.sampling, node_label_, &offset);
  const bool has_bias = read_input(context, 3, types_.data, node_label_, &bias);
  const bool has_mask = read_input(context, kMaskIndex, types_.sampling, node_label_, &mask);

  DeformConvInputDims dims;
  dims.input = input.dims;
  dims.weight = weight.dims;
  dims.offset = offset.dims;
  if (has_bias) dims.bias = bias.dims;
  if (has_mask) dims.mask = mask.dims;

  DeformConvShape shape;
  const std::string error = infer_shape(node_label_, attributes_, dims, &shape);
  if (!error.empty()) throw NodeError(ORT_INVALID_ARGUMENT, error);

  Ort::UnownedValue output = context.GetOutput(0, output_dims(shape));
  const bool half_output = types_.data == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
  const size_t output_count = output.GetTensorTypeAndShapeInfo().GetElementCount();
  std::vector<float> output_float;  // The float32 result of a float16 output before rounding.
  DeformConvTensors tensors;
  tensors.input = input.data;
  tensors.weight = weight.data;
  tensors.offset = offset.data;
  tensors.bias = has_bias ? bias.data : nullptr;
  tensors.mask = has_mask ? mask.data : nullptr;
  if (half_output) {
    output_float.resize(output_count);
    tensors.output = output_float.data();
  } else {
    tensors.output = output.GetTensorMutableData<float>();
  }

  DeformConvCpuOptions options;
  options.min_work_items = kMinWorkItems;
  options.input_finite = DeformConvCpuOptions::Finite::kCheckWhilePreparing;
  DeformConvCpu convolution(attributes_, shape, tensors, options);
  if (convolution.work_item_count() == 0) return;  // Empty batch: nothing to compute.
  std::shared_ptr<const std::vector<float>> packed;
  if (constant_weight_ && convolution.packed_weight_floats() > 0) {
    // A constant W never changes, so its packing depends only on the channel
    // block (the rest of the layout is fixed by W's shape and the attributes).
    packed = packed_weights_.get(convolution.channel_block(), convolution.packed_weight_floats(), [&](float* out) {
      for (int64_t panel = 0; panel < convolution.packed_panel_count(); ++panel) {
        convolution.pack_weight_panel(panel, out);
      }
    });
    convolution.set_packed_weights(packed->data());
  }
  std::unique_ptr<Workspace> workspace;
  if (convolution.workspace_floats() > 0) {
    workspace = std::make_unique<Workspace>(context, static_cast<size_t>(convolution.workspace_floats()));
    convolution.set_workspace(workspace->data());
  }
  run_prepare_items(context, convolution);
  convolution.finish_prepare();
  run_work_items<DeformConvCpuScratch>(context, convolution, node_label_);
  if (half_output) {
    // Round to nearest even; beyond the float16 range gives +-inf, NaN stays NaN.
    Ort::Float16_t* out = output.GetTensorMutableData<Ort::Float16_t>();
    for (size_t index = 0; index < output_count; ++index) out[index] = Ort::Float16_t(output_float[index]);
  }
}

OrtStatusPtr DeformConvOrtOp::CreateKernelV2(const OrtApi& /*api*/, const OrtKernelInfo* info,
                                             void** op_kernel) const noexcept {
  std::string node_label = "<unknown>";
  return run_returning_status(node_label, [&] {
    node_label = make_node_label(info);
    // plugin_namespace / plugin_version are for TensorRT's ONNX parser and ignored here.
    const DeformConvAttributes attributes = read_geometry_attributes(info, node_label);
    // The registration that matched says nothing about absent inputs: check the node's own types.
    const DeformConvElementTypes types = check_element_types(node_label, read_node_types(info));
    // A constant (initializer) W lets the kernel pack it once.
    *op_kernel = new DeformConvOrtKernel(node_label, attributes, types, input_is_constant(info, 1));
  });
}

const std::vector<DeformConvOrtOp>& deform_conv_ort_ops() {
  static const std::vector<DeformConvOrtOp> ops = [] {
    std::vector<DeformConvOrtOp> all;
    constexpr size_t kCombinations = size_t{1} << kInputCount;
    all.reserve(kCombinations);
    // Bit i of `combination` set: input i declared float16. Combination 0 (all float32) first.
    for (size_t combination = 0; combination < kCombinations; ++combination) {
      std::array<ONNXTensorElementDataType, kInputCount> types{};
      for (size_t index = 0; index < kInputCount; ++index) {
        types[index] = ((combination >> index) & 1) != 0 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16
                                                         : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
      }
      all.emplace_back(types);
    }
    return all;
  }();
  return ops;
}

}  // namespace dcn_deploy
