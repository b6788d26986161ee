#include "tensorrt/plugin.h"

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <new>
#include <utility>

#include "core/int8_scales.h"
#include "cuda/runner.h"
#include "tensorrt/logging.h"
#include "core/text.h"

namespace dcn_deploy::tensorrt {
namespace {

using nvinfer1::DataType;
using nvinfer1::DimensionOperation;
using nvinfer1::ErrorCode;
using nvinfer1::PluginFieldType;
using nvinfer1::PluginTensorDesc;
using nvinfer1::TensorFormat;

bool is_float_or_half(DataType type) { return type == DataType::kFLOAT || type == DataType::kHALF; }

const char* data_type_name(DataType type) {
  switch (type) {
    case DataType::kFLOAT:
      return "float32";
    case DataType::kHALF:
      return "float16";
    case DataType::kBF16:
      return "bfloat16";
    case DataType::kINT8:
      return "int8";
    case DataType::kINT32:
      return "int32";
    case DataType::kINT64:
      return "int64";
    default:
      return "an unsupported type";
  }
}

DcnElementType to_element_type(DataType type) {
  return type == DataType::kHALF ? DCN_FLOAT16 : type == DataType::kINT8 ? DCN_INT8 : DCN_FLOAT32;
}

// The formats X and Y may take, and the layout the kernels read and write
// (core/params.h TensorLayout); offset, mask, W and B are always kLINEAR.
//   format   X/Y types          layout                    why
//   kLINEAR  all                planar NCHW
//   kHWC8    float16            NHWC, C padded to 8       TensorRT's float16 convolutions' channels-last
//                                                         format; read in place by 16-byte gathers
//   kHWC16   float16            NHWC, C padded to 16      the same gathers
//   kCHW32   int8 (Y: + fp32)   NC/32HW32                 TensorRT's int8 (IMMA) convolutions' format
//   kCHW4    int8               NC/4HW4                   TensorRT's int8 (dp4a) convolutions' format
//   kHWC16   int8               NHWC, C padded to 16      int8 channels-last (TensorRT offers it)
// The INT8 kernel gathers one channel at a time in every layout (bitwise the planar result).
// kCHW4 and kHWC16 int8 X only with int8 Yq (float32 Y has kCHW32 alone); float16 kHWC8/kHWC16
// only where the tensor-core kernel fits (channels_last_fits; never ahead of time).
bool format_layout(TensorFormat format, DataType type, TensorLayout* layout) {
  switch (format) {
    case TensorFormat::kLINEAR:
      *layout = TensorLayout{ChannelLayout::kPlanar, 1};
      return true;
    case TensorFormat::kHWC8:
      *layout = TensorLayout{ChannelLayout::kChannelsLast, 8};
      return type == DataType::kHALF;
    case TensorFormat::kHWC16:
      *layout = TensorLayout{ChannelLayout::kChannelsLast, 16};
      return type == DataType::kINT8 || type == DataType::kHALF;
    case TensorFormat::kCHW4:
      *layout = TensorLayout{ChannelLayout::kBlocked, 4};
      return type == DataType::kINT8;
    case TensorFormat::kCHW32:
      *layout = TensorLayout{ChannelLayout::kBlocked, 32};
      return type == DataType::kINT8;
    default:
      return false;
  }
}

const char* format_name(TensorFormat format) {
  switch (format) {
    case TensorFormat::kLINEAR:
      return "kLINEAR";
    case TensorFormat::kCHW2:
      return "kCHW2";
    case TensorFormat::kHWC8:
      return "kHWC8";
    case TensorFormat::kCHW4:
      return "kCHW4";
    case TensorFormat::kCHW16:
      return "kCHW16";
    case TensorFormat::kCHW32:
      return "kCHW32";
    case TensorFormat::kDHWC8:
      return "kDHWC8";
    case TensorFormat::kCDHW32:
      return "kCDHW32";
    case TensorFormat::kHWC:
      return "kHWC";
    case TensorFormat::kDLA_LINEAR:
      return "kDLA_LINEAR";
    case TensorFormat::kDLA_HWC4:
      return "kDLA_HWC4";
    case TensorFormat::kHWC16:
      return "kHWC16";
    default:
      return "unknown";
  }
}

// DCN_DEPLOY_TRT_FORMAT_LOG=<file>: every format query of the builder and its
// answer, and every configuration, appended as JSON lines (a debugging aid
// and the record tests/test_rtx_build.py reads). Unset: nothing is written.
// Read once per process; callers check it before building a line, so that the
// builder's many format queries cost no string work when it is unset.
const char* format_log_path() noexcept {
  static const char* const path = [] {
    const char* value = std::getenv("DCN_DEPLOY_TRT_FORMAT_LOG");
    return value != nullptr && *value != '\0' ? value : nullptr;
  }();
  return path;
}

// `make_line` builds the JSON line (only when the log is on); a failure to build or
// write it (e.g. std::bad_alloc) loses the line, never the query.
template <typename MakeLine>
void record_format_event(MakeLine&& make_line) noexcept {
  const char* path = format_log_path();
  if (path == nullptr) return;
  try {
    const std::string line = make_line() + "\n";
    if (std::FILE* file = std::fopen(path, "a")) {
      std::fputs(line.c_str(), file);
      std::fclose(file);
    }
  } catch (...) {
  }
}

std::string json_tensor(const PluginTensorDesc& desc) {
  return concat("{\"format\": \"", format_name(desc.format), "\", \"type\": \"", data_type_name(desc.type), "\"}");
}

// The CUDA kernels' problem from attributes and a shape this plugin has
// already validated (infer_shape): the kernels do not check them again.
cuda::Problem cuda_problem(const DeformConvAttributes& attributes, const DeformConvShape& shape, DataType data_type,
                           DataType offset_type, const TensorLayout& layout = {}) {
  cuda::Problem problem;
  problem.attributes = attributes;
  problem.shape = shape;
  problem.data_type = to_element_type(data_type);
  problem.offset_type = to_element_type(offset_type);
  problem.layout = layout;
  return problem;
}

std::vector<int64_t> dims_of(const nvinfer1::Dims& dims) {
  std::vector<int64_t> values;
  const int32_t rank = dims.nbDims < 0 ? 0 : (dims.nbDims > nvinfer1::Dims::MAX_DIMS ? 0 : dims.nbDims);
  values.reserve(static_cast<size_t>(rank));
  for (int32_t i = 0; i < rank; ++i) values.push_back(dims.d[i]);
  return values;
}

// Constant dimensions of `dims`, kUnknownDim for the others.
std::vector<int64_t> known_dims_of(const nvinfer1::DimsExprs& dims) {
  std::vector<int64_t> values;
  const int32_t rank = dims.nbDims < 0 ? 0 : (dims.nbDims > nvinfer1::Dims::MAX_DIMS ? 0 : dims.nbDims);
  for (int32_t i = 0; i < rank; ++i) {
    const nvinfer1::IDimensionExpr* d = dims.d[i];
    values.push_back(d != nullptr && d->isConstant() ? d->getConstantValue() : kUnknownDim);
  }
  return values;
}

// The operator's input dims from per-tensor dims in plugin input order.
template <typename Dims, typename Convert>
DeformConvInputDims input_dims(const Dims* in, const InputLayout& layout, Convert convert) {
  DeformConvInputDims dims;
  dims.input = convert(in[0]);
  dims.weight = convert(in[1]);
  dims.offset = convert(in[2]);
  if (layout.bias_index >= 0) dims.bias = convert(in[layout.bias_index]);
  if (layout.mask_index >= 0) dims.mask = convert(in[layout.mask_index]);
  return dims;
}

bool all_known(const nvinfer1::Dims& dims) {
  if (dims.nbDims < 0 || dims.nbDims > nvinfer1::Dims::MAX_DIMS) return false;
  for (int32_t i = 0; i < dims.nbDims; ++i) {
    if (dims.d[i] < 0) return false;
  }
  return true;
}

// Role of plugin input/output `pos`, given the resolved layout.
enum class Role { kInput, kWeight, kOffset, kBias, kMask, kOutput, kInvalid };

// The type of a tensor in an INT8 mode: int8 X and W, int8 Yq (Requantized)
// or float32 Y, float32 offset, mask and B.
DataType int8_mode_type(Role role, PluginMode mode) {
  switch (role) {
    case Role::kInput:
    case Role::kWeight:
      return DataType::kINT8;
    case Role::kOutput:
      return mode == PluginMode::kInt8Requantized ? DataType::kINT8 : DataType::kFLOAT;
    default:
      return DataType::kFLOAT;
  }
}

Role role_of(int32_t pos, int32_t nb_inputs, const InputLayout& layout) {
  if (pos == nb_inputs) return Role::kOutput;
  switch (pos) {
    case 0:
      return Role::kInput;
    case 1:
      return Role::kWeight;
    case 2:
      return Role::kOffset;
    default:
      break;
  }
  if (pos == layout.bias_index) return Role::kBias;
  if (pos == layout.mask_index) return Role::kMask;
  return Role::kInvalid;
}

const char* role_name(Role role) {
  switch (role) {
    case Role::kInput:
      return "input X";
    case Role::kWeight:
      return "weight W";
    case Role::kOffset:
      return "offset";
    case Role::kBias:
      return "bias B";
    case Role::kMask:
      return "mask";
    case Role::kOutput:
      return "output Y";
    case Role::kInvalid:
      break;
  }
  return "unexpected tensor";
}

// output_extent (core/params.h) as a dimension expression: floor((in + shift) / stride) + 1.
const nvinfer1::IDimensionExpr* output_extent_expr(nvinfer1::IExprBuilder& builder, const nvinfer1::IDimensionExpr& in,
                                                   int64_t pad_begin, int64_t pad_end, int64_t kernel, int64_t stride,
                                                   int64_t dilation) {
  const nvinfer1::IDimensionExpr* shift_expr =
      builder.constant(output_extent_shift(pad_begin, pad_end, kernel, dilation));
  const nvinfer1::IDimensionExpr* stride_expr = builder.constant(stride);
  const nvinfer1::IDimensionExpr* one = builder.constant(1);
  if (!shift_expr || !stride_expr || !one) return nullptr;
  const nvinfer1::IDimensionExpr* span = builder.operation(DimensionOperation::kSUM, in, *shift_expr);
  if (!span) return nullptr;
  const nvinfer1::IDimensionExpr* steps = builder.operation(DimensionOperation::kFLOOR_DIV, *span, *stride_expr);
  if (!steps) return nullptr;
  return builder.operation(DimensionOperation::kSUM, *steps, *one);
}

}  // namespace

const char* plugin_name(PluginMode mode) {
  switch (mode) {
    case PluginMode::kInt8:
      return kInt8OpType;
    case PluginMode::kInt8Requantized:
      return kInt8RequantizedOpType;
    case PluginMode::kFloat:
      break;
  }
  return kPluginName;
}

// ---------------------------------------------------------------------------
// DcnDeformConvPlugin

DcnDeformConvPlugin::DcnDeformConvPlugin(const std::string& layer_name, const DeformConvAttributes& attributes,
                                         PluginMode mode, const DeformConvInt8Scales& scales)
    : layer_name_(layer_name.empty() ? std::string(plugin_name(mode)) : layer_name),
      attributes_(attributes),
      mode_(mode),
      scales_(scales),
      description_(describe_attributes(attributes)) {}

DcnDeformConvPlugin::~DcnDeformConvPlugin() {
  if (device_output_scales_ != nullptr) cudaFree(device_output_scales_);
}

DcnDeformConvPlugin::DcnDeformConvPlugin(const DcnDeformConvPlugin& other)
    : nvinfer1::IPluginV3(other),
      nvinfer1::IPluginV3OneCore(other),
      nvinfer1::IPluginV3OneBuild(other),
      nvinfer1::IPluginV3OneRuntime(other),
      layer_name_(other.layer_name_),
      attributes_(other.attributes_),
      mode_(other.mode_),
      scales_(other.scales_),  // The device copy of the output scales is per object, made on first use.
      description_(other.description_),
      layout_(other.layout_),
      configured_(other.configured_),
      shape_(other.shape_),
      shape_known_(other.shape_known_),
      data_type_(other.data_type_),
      offset_type_(other.offset_type_),
      error_recorder_(other.error_recorder_) {}  // Serialisation storage is per object.

void DcnDeformConvPlugin::report(ErrorCode code, const std::string& message) const noexcept {
  log_error(message);
  if (error_recorder_ != nullptr) {
    try {
      // Error recorders keep at most kMAX_DESC_LENGTH characters; the logger got the full text.
      const std::string text = message.substr(0, nvinfer1::IErrorRecorder::kMAX_DESC_LENGTH);
      error_recorder_->reportError(code, text.c_str());
    } catch (...) {
      error_recorder_->reportError(code, "DcnDeformConv plugin error (see the TensorRT log)");
    }
  }
}

void DcnDeformConvPlugin::report_failure(ErrorCode code, const char* method, const char* what) const noexcept {
  try {
    report(code, node_error(layer_name_, concat(method, " failed: ", what)));
  } catch (...) {
    log_message(nvinfer1::ILogger::Severity::kERROR, "DcnDeformConv plugin: internal error (no memory to report it)");
  }
}

template <typename Result, typename Body>
Result DcnDeformConvPlugin::guarded(const char* method, Result fallback, Body&& body) const noexcept {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    report_failure(ErrorCode::kFAILED_ALLOCATION, method, "out of memory");
  } catch (const std::exception& error) {
    report_failure(ErrorCode::kINTERNAL_ERROR, method, error.what());
  } catch (...) {
    report_failure(ErrorCode::kINTERNAL_ERROR, method, "unknown exception");
  }
  return fallback;
}

nvinfer1::IPluginCapability* DcnDeformConvPlugin::getCapabilityInterface(
    nvinfer1::PluginCapabilityType type) noexcept {
  switch (type) {
    case nvinfer1::PluginCapabilityType::kCORE:
      return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD:
      return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME:
      return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
  }
  return nullptr;
}

nvinfer1::IPluginV3* DcnDeformConvPlugin::clone() noexcept {
  return guarded<nvinfer1::IPluginV3*>("clone", nullptr, [&]() -> nvinfer1::IPluginV3* {
    return new DcnDeformConvPlugin(*this);
  });
}

char const* DcnDeformConvPlugin::getPluginName() const noexcept { return plugin_name(mode_); }
char const* DcnDeformConvPlugin::getPluginVersion() const noexcept { return kPluginVersion; }
char const* DcnDeformConvPlugin::getPluginNamespace() const noexcept { return kPluginNamespace; }

int32_t DcnDeformConvPlugin::getNbOutputs() const noexcept { return 1; }

std::string DcnDeformConvPlugin::check_tensors(const PluginTensorDesc* in, int32_t nbInputs,
                                               const PluginTensorDesc* out, int32_t nbOutputs) {
  if (nbOutputs != 1 || out == nullptr) {
    return node_error(layer_name_, concat("has 1 output, TensorRT configured ", nbOutputs));
  }
  if (in == nullptr) return node_error(layer_name_, "no input descriptions");
  if (nbInputs < 3 || nbInputs > 5) {
    return node_error(layer_name_, concat("expects 3 to 5 inputs (X, W, offset, optional B, optional mask), got ",
                                          nbInputs));
  }
  int32_t ranks[5] = {};
  for (int32_t i = 0; i < nbInputs; ++i) ranks[i] = in[i].dims.nbDims;
  InputLayout layout;
  std::string error = resolve_input_layout(layer_name_, nbInputs, ranks, &layout);
  if (!error.empty()) return error;

  // Types and formats (normally already settled by supportsFormatCombination).
  const DataType data_type = in[0].type;
  const DataType offset_type = in[2].type;
  TensorLayout tensor_layout;
  if (!format_layout(in[0].format, data_type, &tensor_layout)) {
    return node_error(layer_name_, concat("input X has format ", format_name(in[0].format), " with type ",
                                          data_type_name(data_type), ", expected kLINEAR, kHWC8 or kHWC16 (float16), "
                                          "or kCHW32, kCHW4, kHWC16 (int8)"));
  }
  for (int32_t pos = 0; pos <= nbInputs; ++pos) {
    const PluginTensorDesc& desc = pos < nbInputs ? in[pos] : out[0];
    const Role role = role_of(pos, nbInputs, layout);
    const bool x_or_y = role == Role::kInput || role == Role::kOutput;
    if (x_or_y && desc.format != in[0].format) {
      return node_error(layer_name_, concat("output Y has format ", format_name(desc.format),
                                            ", expected that of input X (", format_name(in[0].format), ")"));
    }
    if (!x_or_y && desc.format != TensorFormat::kLINEAR) {
      return node_error(layer_name_, concat(role_name(role), " must use the linear (NCHW) format"));
    }
    if (int8()) {
      const DataType expected = int8_mode_type(role, mode_);
      if (desc.type != expected) {
        return node_error(layer_name_, concat(role_name(role), " has type ", data_type_name(desc.type), ", expected ",
                                              data_type_name(expected), " (", plugin_name(mode_), ")"));
      }
      continue;
    }
    if (!is_float_or_half(desc.type)) {
      return node_error(layer_name_, concat(role_name(role), " has type ", data_type_name(desc.type),
                                            ", expected float32 or float16"));
    }
    const bool offset_like = role == Role::kOffset || role == Role::kMask;
    const DataType expected = offset_like ? offset_type : data_type;
    if (desc.type != expected) {
      return node_error(layer_name_, concat(role_name(role), " has type ", data_type_name(desc.type), ", expected ",
                                            data_type_name(expected),
                                            offset_like ? " (the type of offset)" : " (the type of X)"));
    }
  }

  bool known = all_known(out[0].dims);
  for (int32_t i = 0; i < nbInputs; ++i) known = known && all_known(in[i].dims);
  const DeformConvInputDims dims =
      input_dims(in, layout, [](const PluginTensorDesc& desc) { return dims_of(desc.dims); });
  if (!known) {
    // Dynamic axes (-1) at build time: every check on the known (constant) dims.
    error = check_known_dims(layer_name_, attributes_, dims);
    if (!error.empty()) return error;
  } else {
    DeformConvShape shape;
    error = infer_shape(layer_name_, attributes_, dims, &shape);
    if (error.empty() && int8()) error = check_int8_shape(layer_name_, attributes_, shape);
    if (error.empty() && int8()) error = check_int8_scales(layer_name_, scales_, shape.out_channels);
    if (!error.empty()) return error;
    const std::vector<int64_t> expected_out = output_dims(shape);
    if (dims_of(out[0].dims) != expected_out) {
      return node_error(layer_name_, concat("output Y has shape ", format_dims(dims_of(out[0].dims)), ", expected ",
                                            format_dims(expected_out)));
    }
    shape_ = shape;
  }
  shape_known_ = known;
  data_type_ = data_type;
  offset_type_ = offset_type;
  layout_ = layout;
  tensor_layout_ = tensor_layout;
  configured_ = true;
  return "";
}

int32_t DcnDeformConvPlugin::configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
                                             nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept {
  return guarded<int32_t>("configurePlugin", -1, [&]() -> int32_t {
    if ((nbInputs > 0 && in == nullptr) || (nbOutputs > 0 && out == nullptr) || nbInputs < 0 || nbOutputs < 0) {
      report(ErrorCode::kINVALID_ARGUMENT, node_error(layer_name_, "configurePlugin: missing tensor descriptions"));
      return -1;
    }
    std::vector<PluginTensorDesc> in_desc;
    std::vector<PluginTensorDesc> out_desc;
    for (int32_t i = 0; i < nbInputs; ++i) in_desc.push_back(in[i].desc);
    for (int32_t i = 0; i < nbOutputs; ++i) out_desc.push_back(out[i].desc);
    // desc.dims has -1 for dimensions only known at run time: check_tensors
    // checks the known ones, the profile's bounds below the whole shapes,
    // and onShapeChange each run-time shape.
    std::string error = check_tensors(in_desc.data(), nbInputs, out_desc.data(), nbOutputs);
    record_format_event([&] {
      std::string tensors;
      for (int32_t i = 0; i < nbInputs + nbOutputs; ++i) {
        tensors += concat(i == 0 ? "" : ", ", json_tensor(i < nbInputs ? in_desc[i] : out_desc[i - nbInputs]));
      }
      return concat("{\"event\": \"configure\", \"layer\": \"", layer_name_, "\", \"tensors\": [", tensors,
                    "], \"accepted\": ", error.empty() ? "true" : "false", "}");
    });
    for (const char* bound : {"min", "max"}) {
      if (!error.empty()) break;
      bool known = true;
      for (int32_t i = 0; i < nbInputs; ++i) known = known && all_known(bound[1] == 'i' ? in[i].min : in[i].max);
      if (!known) continue;  // A harness without profile bounds.
      const DeformConvInputDims dims = input_dims(in, layout_, [&](const nvinfer1::DynamicPluginTensorDesc& desc) {
        return dims_of(bound[1] == 'i' ? desc.min : desc.max);
      });
      DeformConvShape shape;
      error = infer_shape(layer_name_, attributes_, dims, &shape);
      if (!error.empty()) error = concat(error, " (at the optimization profile's ", bound, " shapes)");
    }
    if (!error.empty()) {
      configured_ = false;
      report(ErrorCode::kINVALID_ARGUMENT, error);
      return -1;
    }
    return 0;
  });
}

int32_t DcnDeformConvPlugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes,
                                                int32_t nbInputs) const noexcept {
  return guarded<int32_t>("getOutputDataTypes", -1, [&]() -> int32_t {
    if (outputTypes == nullptr || inputTypes == nullptr || nbOutputs != 1 || nbInputs < 3 || nbInputs > 5) {
      report(ErrorCode::kINVALID_ARGUMENT,
             node_error(layer_name_, concat("expects 3 to 5 inputs and 1 output, got ", nbInputs, " inputs and ",
                                            nbOutputs, " outputs")));
      return -1;
    }
    if (int8()) {
      if (inputTypes[0] != DataType::kINT8) {
        report(ErrorCode::kINVALID_ARGUMENT,
               node_error(layer_name_, concat("input X has type ", data_type_name(inputTypes[0]), ", expected int8 (",
                                              plugin_name(mode_), ")")));
        return -1;
      }
      outputTypes[0] = int8_mode_type(Role::kOutput, mode_);
      return 0;
    }
    if (!is_float_or_half(inputTypes[0])) {
      report(ErrorCode::kINVALID_ARGUMENT, node_error(layer_name_, concat("input X has type ",
                                                                          data_type_name(inputTypes[0]),
                                                                          ", expected float32 or float16")));
      return -1;
    }
    outputTypes[0] = inputTypes[0];  // Y has the type of X.
    return 0;
  });
}

int32_t DcnDeformConvPlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
                                             nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t nbShapeInputs,
                                             nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                                             nvinfer1::IExprBuilder& exprBuilder) noexcept {
  return guarded<int32_t>("getOutputShapes", -1, [&]() -> int32_t {
    if (inputs == nullptr || outputs == nullptr || nbOutputs != 1 || nbShapeInputs != 0) {
      report(ErrorCode::kINVALID_ARGUMENT,
             node_error(layer_name_, concat("expects 1 output and no shape inputs, got ", nbOutputs, " outputs and ",
                                            nbShapeInputs, " shape inputs")));
      return -1;
    }
    if (nbInputs < 3 || nbInputs > 5) {
      report(ErrorCode::kINVALID_ARGUMENT,
             node_error(layer_name_, concat("expects 3 to 5 inputs (X, W, offset, optional B, optional mask), got ",
                                            nbInputs)));
      return -1;
    }
    int32_t ranks[5] = {};
    for (int32_t i = 0; i < nbInputs; ++i) ranks[i] = inputs[i].nbDims;
    InputLayout layout;
    const std::string error = resolve_input_layout(layer_name_, nbInputs, ranks, &layout);
    if (!error.empty()) {
      report(ErrorCode::kINVALID_ARGUMENT, error);
      return -1;
    }
    // Constant dims (channels, kernel; every dim of a static input) are checked
    // here, when the ONNX parser adds the layer, whatever else stays dynamic.
    const std::string dims_error =
        check_known_dims(layer_name_, attributes_, input_dims(inputs, layout, known_dims_of));
    if (!dims_error.empty()) {
      report(ErrorCode::kINVALID_ARGUMENT, dims_error);
      return -1;
    }
    const nvinfer1::DimsExprs& x = inputs[0];
    const nvinfer1::DimsExprs& w = inputs[1];
    const auto& a = attributes_;
    const nvinfer1::IDimensionExpr* out_h =
        output_extent_expr(exprBuilder, *x.d[2], a.pads[0], a.pads[2], a.kernel[0], a.stride[0], a.dilation[0]);
    const nvinfer1::IDimensionExpr* out_w =
        output_extent_expr(exprBuilder, *x.d[3], a.pads[1], a.pads[3], a.kernel[1], a.stride[1], a.dilation[1]);
    if (out_h == nullptr || out_w == nullptr) {
      report(ErrorCode::kINTERNAL_ERROR, node_error(layer_name_, "could not build the output size expressions"));
      return -1;
    }
    outputs[0].nbDims = 4;
    outputs[0].d[0] = x.d[0];  // N
    outputs[0].d[1] = w.d[0];  // M
    outputs[0].d[2] = out_h;   // Ho
    outputs[0].d[3] = out_w;   // Wo
    return 0;
  });
}

bool DcnDeformConvPlugin::supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut,
                                                    int32_t nbInputs, int32_t nbOutputs) noexcept {
  return guarded<bool>("supportsFormatCombination", false, [&]() -> bool {
    if (inOut == nullptr || nbOutputs != 1 || nbInputs < 3 || nbInputs > 5 || pos < 0 || pos > nbInputs) {
      return false;
    }
    const PluginTensorDesc& desc = inOut[pos].desc;
    const bool accepted = accepts_format(pos, inOut, nbInputs);
    record_format_event([&] {
      return concat("{\"event\": \"query\", \"layer\": \"", layer_name_, "\", \"pos\": ", pos,
                    ", \"tensor\": ", json_tensor(desc), ", \"accepted\": ", accepted ? "true" : "false", "}");
    });
    return accepted;
  });
}

// Float channels-last X runs only on the tensor-core kernel, which has no fallback when its
// corner table does not fit shared memory: offered only where it fits (W's output channels
// must be known; they are at build time for a constant W).
bool DcnDeformConvPlugin::channels_last_fits(nvinfer1::Dims const& weight_dims) const {
  if (weight_dims.nbDims != 4 || weight_dims.d[0] <= 0) return false;
  return cuda::float_channels_last_fits(attributes_.offset_group * attributes_.kernel[0] * attributes_.kernel[1],
                                        weight_dims.d[0] / attributes_.group);
}

// supportsFormatCombination's answer. TensorRT asks position by position,
// with the formats and types of the positions before `pos` already chosen.
bool DcnDeformConvPlugin::accepts_format(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut,
                                         int32_t nbInputs) const {
  const PluginTensorDesc& desc = inOut[pos].desc;
  if (!int8() && !is_float_or_half(desc.type)) return false;
  // Ranks are valid for every position (only later formats/types are not).
  InputLayout layout;
  layout.num_inputs = nbInputs;
  if (nbInputs == 4) {
    (inOut[3].desc.dims.nbDims == 1 ? layout.bias_index : layout.mask_index) = 3;
  } else if (nbInputs == 5) {
    layout.bias_index = 3;
    layout.mask_index = 4;
  }
  const Role role = role_of(pos, nbInputs, layout);
  TensorLayout tensor_layout;
  if (role == Role::kInput) {
    if (!format_layout(desc.format, desc.type, &tensor_layout)) return false;
    if (!int8() && desc.format != TensorFormat::kLINEAR && !channels_last_fits(inOut[1].desc.dims)) return false;
    // INT8 with float32 Y: Y follows X's format and kCHW32 is the only blocked float32 one, so an X
    // format no Y could follow (kCHW4, kHWC16) is refused here rather than left to a dead end at Y.
    if (int8() && mode_ != PluginMode::kInt8Requantized && desc.format != TensorFormat::kLINEAR &&
        desc.format != TensorFormat::kCHW32) {
      return false;
    }
  } else if (role == Role::kOutput) {
    // Y in X's layout; for the INT8 float32 Y, kCHW32 is TensorRT's only blocked float32 format.
    const bool float_y = int8() && desc.type == DataType::kFLOAT;
    if (desc.format != inOut[0].desc.format) return false;
    if (float_y && desc.format != TensorFormat::kLINEAR && desc.format != TensorFormat::kCHW32) return false;
  } else if (desc.format != TensorFormat::kLINEAR) {
    return false;
  }
  if (int8()) return role != Role::kInvalid && desc.type == int8_mode_type(role, mode_);
  switch (role) {
    case Role::kInput:
    case Role::kOffset:
      return true;  // float32 or float16, each independently
    case Role::kWeight:
    case Role::kBias:
    case Role::kOutput:
      return desc.type == inOut[0].desc.type;
    case Role::kMask:
      return desc.type == inOut[2].desc.type;
    case Role::kInvalid:
      break;
  }
  return false;
}

size_t DcnDeformConvPlugin::getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
                                             nvinfer1::DynamicPluginTensorDesc const* /*outputs*/,
                                             int32_t /*nbOutputs*/) const noexcept {
  return guarded<size_t>("getWorkspaceSize", 0, [&]() -> size_t {
    if (inputs == nullptr || nbInputs < 3 || inputs[0].max.nbDims != 4 || inputs[1].max.nbDims != 4) return size_t{0};
    // Upper bounds of the profile: the workspace must cover every smaller problem.
    const nvinfer1::Dims& x = inputs[0].max;
    DeformConvSizes sizes;
    sizes.batch = x.d[0];
    sizes.in_channels = x.d[1];
    sizes.in_height = x.d[2];
    sizes.in_width = x.d[3];
    sizes.out_channels = inputs[1].max.d[0];
    DeformConvShape shape;
    if (!infer_shape_from_sizes(layer_name_, attributes_, sizes, &shape).empty()) return size_t{0};
    TensorLayout tensor_layout;
    if (!format_layout(inputs[0].desc.format, inputs[0].desc.type, &tensor_layout)) return size_t{0};
    return cuda::workspace_bytes(
        cuda_problem(attributes_, shape, inputs[0].desc.type, inputs[2].desc.type, tensor_layout));
  });
}

char const* DcnDeformConvPlugin::getTimingCacheID() noexcept { return description_.c_str(); }

char const* DcnDeformConvPlugin::getMetadataString() noexcept { return description_.c_str(); }

int32_t DcnDeformConvPlugin::onShapeChange(PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out,
                                           int32_t nbOutputs) noexcept {
  return guarded<int32_t>("onShapeChange", -1, [&]() -> int32_t {
    const std::string error = check_tensors(in, nbInputs, out, nbOutputs);
    if (!error.empty()) {
      configured_ = false;
      report(ErrorCode::kINVALID_ARGUMENT, error);
      return -1;
    }
    return 0;
  });
}

int32_t DcnDeformConvPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
                                     void const* const* inputs, void* const* outputs, void* workspace,
                                     cudaStream_t stream) noexcept {
  return guarded<int32_t>("enqueue", -1, [&]() -> int32_t {
    if (!configured_ || !shape_known_) {
      report(ErrorCode::kINVALID_STATE, node_error(layer_name_, "enqueue called before onShapeChange"));
      return -1;
    }
    if (inputDesc == nullptr || outputDesc == nullptr || inputs == nullptr || outputs == nullptr) {
      report(ErrorCode::kINVALID_ARGUMENT, node_error(layer_name_, "enqueue: missing tensors"));
      return -1;
    }
    // The shape and types onShapeChange validated: TensorRT calls it whenever they change.
    cuda::Problem problem = cuda_problem(attributes_, shape_, data_type_, offset_type_, tensor_layout_);

    DcnDeformConvBuffers buffers{};
    buffers.input = inputs[0];
    buffers.weight = inputs[1];
    buffers.offset = inputs[2];
    buffers.bias = layout_.bias_index >= 0 ? inputs[layout_.bias_index] : nullptr;
    buffers.mask = layout_.mask_index >= 0 ? inputs[layout_.mask_index] : nullptr;
    buffers.output = outputs[0];
    if (int8()) {
      problem.y_scale = scales_.y_scale;
      const std::string error = upload_output_scales(shape_.out_channels, stream);
      if (!error.empty()) {
        report(ErrorCode::kFAILED_EXECUTION, error);
        return -1;
      }
      buffers.output_scale = device_output_scales_;
    }

    std::string message;
    const int status = cuda::run(problem, &buffers, workspace, static_cast<void*>(stream), &message);
    if (status != DCN_STATUS_OK) {
      const bool launch_failed = status == DCN_STATUS_CUDA_ERROR;
      const char* what = launch_failed                         ? "the CUDA launch failed: "
                         : status == DCN_STATUS_UNSUPPORTED    ? "the CUDA kernel does not support this problem: "
                                                               : "the CUDA kernel rejected the problem: ";
      report(launch_failed ? ErrorCode::kFAILED_EXECUTION : ErrorCode::kINVALID_ARGUMENT,
             node_error(layer_name_, concat(what, message)));
      return -1;
    }
    return 0;
  });
}

// The output scales float32(x_scale * w_scale[o]) live in device memory owned
// by the plugin object, not in the workspace: they are constant, so copying
// them into a workspace on every enqueue (from pageable host memory, which a
// captured CUDA graph cannot replay) would be wasted work. The copy is made
// once, synchronously, by the first enqueue of each object (TensorRT clones
// the plugin per execution context) and never again, so later enqueues
// launch only the kernel and are safe to capture into a CUDA graph. A first
// enqueue under stream capture is refused with a message (cudaMalloc and a
// synchronous copy are not allowed there): run the engine once before
// capturing, as TensorRT asks for its own deferred allocations.
std::string DcnDeformConvPlugin::upload_output_scales(int64_t out_channels, cudaStream_t stream) {
  if (device_output_scales_ != nullptr && device_output_channels_ == out_channels) return "";
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &capture) == cudaSuccess && capture != cudaStreamCaptureStatusNone) {
    return node_error(layer_name_, "the first enqueue uploads the INT8 output scales and cannot run under CUDA graph "
                                   "capture; run the engine once before capturing");
  }
  const std::string error = check_int8_scales(layer_name_, scales_, out_channels);
  if (!error.empty()) return error;
  const std::vector<float> host = int8_output_scales(scales_.x_scale, scales_.w_scale, out_channels);
  if (device_output_scales_ != nullptr) cudaFree(device_output_scales_);
  device_output_scales_ = nullptr;
  device_output_channels_ = 0;
  void* memory = nullptr;
  cudaError_t status = cudaMalloc(&memory, host.size() * sizeof(float));
  if (status == cudaSuccess) {
    status = cudaMemcpy(memory, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice);
    if (status != cudaSuccess) cudaFree(memory);
  }
  if (status != cudaSuccess) {
    return node_error(layer_name_, concat("could not upload the INT8 output scales: ", cudaGetErrorName(status), ": ",
                                          cudaGetErrorString(status)));
  }
  device_output_scales_ = static_cast<float*>(memory);
  device_output_channels_ = out_channels;
  return "";
}

nvinfer1::IPluginV3* DcnDeformConvPlugin::attachToContext(nvinfer1::IPluginResourceContext* context) noexcept {
  return guarded<nvinfer1::IPluginV3*>("attachToContext", nullptr, [&]() -> nvinfer1::IPluginV3* {
    auto* attached = new DcnDeformConvPlugin(*this);
    // Valid until TensorRT deletes the attached plugin.
    attached->error_recorder_ = context != nullptr ? context->getErrorRecorder() : nullptr;
    return attached;
  });
}

nvinfer1::PluginFieldCollection const* DcnDeformConvPlugin::getFieldsToSerialize() noexcept {
  return guarded<nvinfer1::PluginFieldCollection const*>(
      "getFieldsToSerialize", nullptr, [&]() -> nvinfer1::PluginFieldCollection const* {
        serialized_ = attributes_to_fields(attributes_);
        serialized_fields_.clear();
        for (const Int64Field& field : serialized_) {
          serialized_fields_.emplace_back(field.name.c_str(), field.values.data(), PluginFieldType::kINT64,
                                          static_cast<int32_t>(field.values.size()));
        }
        if (int8()) {  // The scales as the ONNX parser passes them (kFLOAT32), exact float32 values.
          serialized_scales_[0] = {scales_.x_scale};
          serialized_scales_[1] = scales_.w_scale;
          serialized_scales_[2] = {scales_.y_scale};
          const int count = mode_ == PluginMode::kInt8Requantized ? 3 : 2;
          for (int i = 0; i < count; ++i) {
            serialized_fields_.emplace_back(kInt8ScaleFields[i], serialized_scales_[i].data(),
                                            PluginFieldType::kFLOAT32,
                                            static_cast<int32_t>(serialized_scales_[i].size()));
          }
        }
        serialized_collection_.nbFields = static_cast<int32_t>(serialized_fields_.size());
        serialized_collection_.fields = serialized_fields_.data();
        return &serialized_collection_;
      });
}

}  // namespace dcn_deploy::tensorrt
