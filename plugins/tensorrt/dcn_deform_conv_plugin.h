// TensorRT IPluginV3 plugin for the dcn_deploy::DcnDeformConv ONNX node
// (modulated deformable convolution, ONNX DeformConv semantics with
// asymmetric pads), and its IPluginCreatorV3One creator.
//
// Compiled against TensorRT's public headers only (10.x and 11.x); it calls
// no libnvinfer function. Shapes and attributes are validated by
// plugins/common (deform_conv_params.h, deform_conv_fields.h), the math runs
// in the CUDA kernels behind plugins/common/cuda/deform_conv_cuda.h.
#pragma once

#include <NvInferRuntime.h>

#include <string>
#include <vector>

#include "deform_conv_fields.h"
#include "deform_conv_params.h"

#if !defined(NV_TENSORRT_MAJOR) || NV_TENSORRT_MAJOR < 10
#error "The DcnDeformConv plugin needs TensorRT 10 or newer headers (IPluginV3)"
#endif

namespace dcn_deploy::tensorrt {

// The ONNX node's op_type, plugin_version and domain (= plugin_namespace).
constexpr const char* kPluginName = kOpType;
constexpr const char* kPluginVersion = "1";
constexpr const char* kPluginNamespace = kOpDomain;

class DcnDeformConvPlugin final : public nvinfer1::IPluginV3,
                                  public nvinfer1::IPluginV3OneCore,
                                  public nvinfer1::IPluginV3OneBuild,
                                  public nvinfer1::IPluginV3OneRuntime {
 public:
  // `layer_name` names the node in error messages ("" becomes "DcnDeformConv").
  DcnDeformConvPlugin(const std::string& layer_name, const DeformConvAttributes& attributes);
  DcnDeformConvPlugin(const DcnDeformConvPlugin& other);
  DcnDeformConvPlugin& operator=(const DcnDeformConvPlugin&) = delete;
  ~DcnDeformConvPlugin() override = default;

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

  std::string layer_name_;
  DeformConvAttributes attributes_;
  std::string description_;  // describe_attributes(): timing-cache ID and metadata
  InputLayout layout_;       // valid once configured
  bool configured_ = false;
  nvinfer1::IErrorRecorder* error_recorder_ = nullptr;  // of the execution context, if attached

  // Storage behind getFieldsToSerialize().
  std::vector<Int64Field> serialized_;
  std::vector<nvinfer1::PluginField> serialized_fields_;
  nvinfer1::PluginFieldCollection serialized_collection_{};
};

class DcnDeformConvPluginCreator final : public nvinfer1::IPluginCreatorV3One {
 public:
  DcnDeformConvPluginCreator();
  ~DcnDeformConvPluginCreator() override = default;

  nvinfer1::IPluginV3* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc,
                                    nvinfer1::TensorRTPhase phase) noexcept override;
  nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
  char const* getPluginName() const noexcept override;
  char const* getPluginVersion() const noexcept override;
  char const* getPluginNamespace() const noexcept override;

 private:
  std::vector<nvinfer1::PluginField> field_names_;
  nvinfer1::PluginFieldCollection field_collection_{};
};

// PluginField -> FieldView (type mapped, TensorRT's type name kept for messages).
FieldView to_field_view(const nvinfer1::PluginField& field);

}  // namespace dcn_deploy::tensorrt
