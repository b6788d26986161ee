// TensorRT IPluginV3 plugin for the dcn_deploy::DcnDeformConv ONNX node
// (modulated deformable convolution, ONNX DeformConv semantics with
// asymmetric pads) and its INT8 forms DcnDeformConvInt8 (float32 Y) and
// DcnDeformConvInt8Requantized (int8 Yq), definition in dcn_deploy/op/int8.py;
// one plugin class and one IPluginCreatorV3One class, each with a mode.
//
// Compiled against TensorRT's public headers only (10.x and 11.x); it calls
// no libnvinfer function. Shapes and attributes are validated by
// plugins/core (params.h, fields.h), the math runs
// in the CUDA kernels behind plugins/cuda/runner.h.
#pragma once

#include <NvInferRuntime.h>

#include <string>
#include <vector>

#include "core/fields.h"
#include "core/int8_scales.h"
#include "core/params.h"

#if !defined(NV_TENSORRT_MAJOR) || NV_TENSORRT_MAJOR < 10
#error "The DcnDeformConv plugin needs TensorRT 10 or newer headers (IPluginV3)"
#endif

namespace dcn_deploy::tensorrt {

// The ONNX node's op_type, plugin_version and domain (= plugin_namespace).
constexpr const char* kPluginName = kOpType;
constexpr const char* kPluginVersion = "1";
constexpr const char* kPluginNamespace = kOpDomain;

// Which ONNX node the plugin implements.
enum class PluginMode {
  kFloat,             // DcnDeformConv: float32/float16 X, W, B, Y
  kInt8,              // DcnDeformConvInt8: int8 X, W; float32 offset, mask, B, Y
  kInt8Requantized,   // DcnDeformConvInt8Requantized: as kInt8 with int8 Yq
};

// The plugin (= ONNX op_type) name of a mode.
const char* plugin_name(PluginMode mode);

class DcnDeformConvPlugin final : public nvinfer1::IPluginV3,
                                  public nvinfer1::IPluginV3OneCore,
                                  public nvinfer1::IPluginV3OneBuild,
                                  public nvinfer1::IPluginV3OneRuntime {
 public:
  // `layer_name` names the node in error messages ("" becomes "DcnDeformConv").
  // `scales`: the INT8 modes' scales, already checked (int8_fields_from_fields).
  DcnDeformConvPlugin(const std::string& layer_name, const DeformConvAttributes& attributes,
                      PluginMode mode = PluginMode::kFloat, const DeformConvInt8Scales& scales = {});
  DcnDeformConvPlugin(const DcnDeformConvPlugin& other);
  DcnDeformConvPlugin& operator=(const DcnDeformConvPlugin&) = delete;
  ~DcnDeformConvPlugin() override;

  // IPluginV3
  nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
  nvinfer1::IPluginV3* clone() noexcept override;

  // IPluginV3OneCore
  char const* getPluginName() const noexcept override;
  char const* getPluginVersion() const noexcept override;
  char const* getPluginNamespace() const noexcept override;

  // IPluginV3OneBuild
  int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
                          nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
  int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs, nvinfer1::DataType const* inputTypes,
                             int32_t nbInputs) const noexcept override;
  int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
                          int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                          nvinfer1::IExprBuilder& exprBuilder) noexcept override;
  bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
                                 int32_t nbOutputs) noexcept override;
  int32_t getNbOutputs() const noexcept override;
  size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
                          nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;
  char const* getTimingCacheID() noexcept override;
  char const* getMetadataString() noexcept override;

  // IPluginV3OneRuntime
  int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
                        int32_t nbOutputs) noexcept override;
  int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
                  void const* const* inputs, void* const* outputs, void* workspace,
                  cudaStream_t stream) noexcept override;
  nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
  nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

  const DeformConvAttributes& attributes() const { return attributes_; }
  PluginMode mode() const { return mode_; }
  const std::string& layer_name() const { return layer_name_; }

 private:
  // Logs `message` and, in an execution context, reports it to the context's error recorder.
  void report(nvinfer1::ErrorCode code, const std::string& message) const noexcept;
  // report() of "<method> failed: <what>" for an exception caught in `method`.
  void report_failure(nvinfer1::ErrorCode code, const char* method, const char* what) const noexcept;
  // Runs `body`, turning any exception into a reported error and `fallback`.
  template <typename Result, typename Body>
  Result guarded(const char* method, Result fallback, Body&& body) const noexcept;

  // Validates the tensors of one configuration: counts, ranks (resolving the
  // input layout), types and formats, and, when every dimension is known, the
  // shapes with infer_shape. Stores the layout on success.
  std::string check_tensors(const nvinfer1::PluginTensorDesc* in, int32_t nbInputs,
                            const nvinfer1::PluginTensorDesc* out, int32_t nbOutputs);

  bool int8() const { return mode_ != PluginMode::kFloat; }
  // supportsFormatCombination's answer for position `pos` (plugin.cc: the format table).
  bool accepts_format(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs) const;
  bool channels_last_fits(nvinfer1::Dims const& weight_dims) const;
  // INT8: the [M] output scales in device memory owned by this object, made
  // by the first enqueue (see enqueue); "" or an error message.
  std::string upload_output_scales(int64_t out_channels, cudaStream_t stream);

  std::string layer_name_;
  DeformConvAttributes attributes_;
  PluginMode mode_ = PluginMode::kFloat;
  DeformConvInt8Scales scales_;      // INT8 modes
  float* device_output_scales_ = nullptr;  // INT8: [device_output_channels_] floats (cudaMalloc)
  int64_t device_output_channels_ = 0;
  std::string description_;  // describe_attributes(): timing-cache ID and metadata
  InputLayout layout_;       // valid once configured
  TensorLayout tensor_layout_;  // of X and Y, from X's format (valid once configured)
  bool configured_ = false;
  // The last fully known configuration (onShapeChange), validated once there
  // and handed to the kernels as is by enqueue.
  DeformConvShape shape_;
  bool shape_known_ = false;
  nvinfer1::DataType data_type_ = nvinfer1::DataType::kFLOAT;    // of X
  nvinfer1::DataType offset_type_ = nvinfer1::DataType::kFLOAT;  // of offset
  nvinfer1::IErrorRecorder* error_recorder_ = nullptr;  // of the execution context, if attached

  // Storage behind getFieldsToSerialize().
  std::vector<Int64Field> serialized_;
  std::vector<float> serialized_scales_[3];  // x_scale, w_scale, y_scale (INT8 modes)
  std::vector<nvinfer1::PluginField> serialized_fields_;
  nvinfer1::PluginFieldCollection serialized_collection_{};
};

class DcnDeformConvPluginCreator final : public nvinfer1::IPluginCreatorV3One {
 public:
  explicit DcnDeformConvPluginCreator(PluginMode mode = PluginMode::kFloat);
  ~DcnDeformConvPluginCreator() override = default;

  nvinfer1::IPluginV3* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc,
                                    nvinfer1::TensorRTPhase phase) noexcept override;
  nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
  char const* getPluginName() const noexcept override;
  char const* getPluginVersion() const noexcept override;
  char const* getPluginNamespace() const noexcept override;

 private:
  PluginMode mode_;
  std::vector<nvinfer1::PluginField> field_names_;
  nvinfer1::PluginFieldCollection field_collection_{};
};

}  // namespace dcn_deploy::tensorrt
