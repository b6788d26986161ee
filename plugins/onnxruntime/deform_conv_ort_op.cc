#include "deform_conv_ort_op.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <utility>
#include <vector>

#include "deform_conv_cpu.h"

namespace dcn_deploy {
namespace {

// Work items are grouped into at most this many parallel chunks; each chunk
// reuses one scratch buffer.
constexpr int64_t kParallelChunks = 32;
// The work-item count asked of the CPU kernel so small inputs still spread
// over ORT's intra-op threads. Not more: every work item streams all weights
// once, so a batch-1 input of few pixels (512x25x34: 850) split into 27 tiles
// of 32 pixels ran about 5% slower than 18 tiles of 48 (1 and 2 threads).
constexpr int64_t kMinWorkItems = 16;

// An error whose message already names the node.
class NodeError : public std::runtime_error {
 public:
  NodeError(OrtErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  OrtErrorCode code() const { return code_; }

 private:
  OrtErrorCode code_;
};

// Converts any exception escaping `body` into an OrtStatus naming the node.
template <typename Body>
OrtStatusPtr run_returning_status(const std::string& node_label, Body&& body) noexcept {
  const OrtApi& api = Ort::GetApi();
  try {
    body();
    return nullptr;
  } catch (const NodeError& error) {
    return api.CreateStatus(error.code(), error.what());
  } catch (const Ort::Exception& error) {
    return api.CreateStatus(error.GetOrtErrorCode(), node_error(node_label, error.what()).c_str());
  } catch (const std::bad_alloc&) {
    return api.CreateStatus(ORT_FAIL, node_error(node_label, "out of memory").c_str());
  } catch (const std::exception& error) {
    return api.CreateStatus(ORT_FAIL, node_error(node_label, error.what()).c_str());
  } catch (...) {
    return api.CreateStatus(ORT_FAIL, node_error(node_label, "unknown error").c_str());
  }
}

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

// ORT has no "does this attribute exist" query for kernels, so probe every
// attribute type the node could carry.
bool attribute_exists(const OrtKernelInfo* info, const char* name) {
  const OrtApi& api = Ort::GetApi();
  size_t size = 0;
  return scalar_attribute_exists(info, name) ||
         call_succeeds(api.KernelInfoGetAttributeArray_int64(info, name, nullptr, &size)) ||
         call_succeeds(api.KernelInfoGetAttributeArray_float(info, name, nullptr, &size));
}

[[noreturn]] void throw_attribute_error(const OrtKernelInfo* info, const std::string& node_label, const char* name,
                                        const char* expected_type) {
  const std::string detail = attribute_exists(info, name)
                                 ? std::string("attribute '") + name + "' must be of type " + expected_type
                                 : std::string("required attribute '") + name + "' is missing";
  throw NodeError(ORT_INVALID_ARGUMENT, node_error(node_label, detail));
}

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
  // ORT reads a scalar attribute as an empty list; report the type, not the length.
  if (size == 0 && scalar_attribute_exists(info, name)) {
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

bool is_supported_float(ONNXTensorElementDataType type) {
  return type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
}

constexpr const char* kInputNames[kInputCount] = {"X", "W", "offset", "B", "mask"};
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

// Shared by the ORT worker threads of one Compute call.
struct ParallelJob {
  const DeformConvCpu* convolution = nullptr;
  int64_t chunk_count = 0;
  std::atomic<bool> failed{false};
};

// Runs one chunk of prepare items (the channels-last copy of X). Called on
// ORT's thread pool: must not throw (run_prepare_item does not allocate).
void run_prepare_chunk(void* user_data, size_t chunk) {
  auto* job = static_cast<ParallelJob*>(user_data);
  const int64_t items = job->convolution->prepare_item_count();
  const int64_t begin = items * static_cast<int64_t>(chunk) / job->chunk_count;
  const int64_t end = items * static_cast<int64_t>(chunk + 1) / job->chunk_count;
  for (int64_t item = begin; item < end; ++item) job->convolution->run_prepare_item(item);
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

// Runs one chunk of work items. Called on ORT's thread pool: must not throw.
void run_chunk(void* user_data, size_t chunk) {
  auto* job = static_cast<ParallelJob*>(user_data);
  const int64_t items = job->convolution->work_item_count();
  const int64_t begin = items * static_cast<int64_t>(chunk) / job->chunk_count;
  const int64_t end = items * static_cast<int64_t>(chunk + 1) / job->chunk_count;
  try {
    // Kept per thread across calls: a fresh buffer per chunk would be faulted
    // in and zero-filled on every call. Bounded by the largest tile run.
    thread_local DeformConvCpuScratch scratch;
    for (int64_t item = begin; item < end; ++item) job->convolution->run_work_item(item, scratch);
  } catch (...) {
    job->failed.store(true, std::memory_order_relaxed);
  }
}

}  // namespace

DeformConvOrtKernel::DeformConvOrtKernel(std::string node_label, const DeformConvAttributes& attributes,
                                         const DeformConvElementTypes& types, bool constant_weight)
    : node_label_(std::move(node_label)), attributes_(attributes), types_(types), constant_weight_(constant_weight) {}

std::shared_ptr<const std::vector<float>> DeformConvOrtKernel::packed_weights(const DeformConvCpu& convolution) const {
  // A constant W never changes, so its packing depends only on the channel
  // block (the rest of the layout is fixed by W's shape and the attributes).
  std::lock_guard<std::mutex> lock(packed_mutex_);
  for (const auto& entry : packed_) {
    if (entry.first == convolution.channel_block()) return entry.second;
  }
  auto packed = std::make_shared<std::vector<float>>(static_cast<size_t>(convolution.packed_weight_floats()));
  for (int64_t panel = 0; panel < convolution.packed_panel_count(); ++panel) {
    convolution.pack_weight_panel(panel, packed->data());
  }
  packed_.emplace_back(convolution.channel_block(), packed);
  return packed;
}

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

  DeformConvCpu convolution(attributes_, shape, tensors, kMinWorkItems);
  if (convolution.work_item_count() == 0) return;  // Empty batch: nothing to compute.
  std::shared_ptr<const std::vector<float>> packed;
  if (constant_weight_ && convolution.packed_weight_floats() > 0) {
    packed = packed_weights(convolution);
    convolution.set_packed_weights(packed->data());
  }
  std::unique_ptr<Workspace> workspace;
  if (convolution.workspace_floats() > 0) {
    workspace = std::make_unique<Workspace>(context, static_cast<size_t>(convolution.workspace_floats()));
    convolution.set_workspace(workspace->data());
  }
  ParallelJob job;
  job.convolution = &convolution;
  if (convolution.prepare_item_count() > 0) {
    job.chunk_count = std::min(convolution.prepare_item_count(), kParallelChunks);
    context.ParallelFor(run_prepare_chunk, static_cast<size_t>(job.chunk_count), 0, &job);
  }
  job.chunk_count = std::min(convolution.work_item_count(), kParallelChunks);
  context.ParallelFor(run_chunk, static_cast<size_t>(job.chunk_count), 0, &job);
  if (job.failed.load()) {
    throw NodeError(ORT_FAIL, node_error(node_label_, "out of memory while computing the output"));
  }
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
    // The registration that matched says nothing about absent inputs: check the node's own types.
    const DeformConvElementTypes types = check_element_types(node_label, read_node_types(info));
    // A constant (initializer) W lets the kernel pack it once.
    bool constant_weight = false;
    try {
      int is_constant = 0;
      Ort::ConstKernelInfo(info).GetTensorConstantInput(1, &is_constant);
      constant_weight = is_constant != 0;
    } catch (const Ort::Exception&) {
      constant_weight = false;
    }
    *op_kernel = new DeformConvOrtKernel(node_label, attributes, types, constant_weight);
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
