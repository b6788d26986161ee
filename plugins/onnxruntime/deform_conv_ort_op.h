// ONNX Runtime custom operator dcn_deploy::DcnDeformConv (CPU, float32).
//
// Uses the classic Ort::CustomOpBase API with the status-returning
// CreateKernelV2 / KernelComputeV2 entry points, so every failure reaches
// ONNX Runtime as an OrtStatus naming the node instead of an exception
// crossing the C ABI.
#pragma once

#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT

#include <string>

#include "deform_conv_params.h"

namespace dcn_deploy {

// One instance per graph node. Holds only immutable attributes, so ONNX
// Runtime may call ComputeV2 from several threads at once.
class DeformConvOrtKernel {
 public:
  DeformConvOrtKernel(std::string node_label, const DeformConvAttributes& attributes);

  OrtStatusPtr ComputeV2(OrtKernelContext* context) const noexcept;

 private:
  void compute(OrtKernelContext* context) const;

  const std::string node_label_;
  const DeformConvAttributes attributes_;
};

struct DeformConvOrtOp : Ort::CustomOpBase<DeformConvOrtOp, DeformConvOrtKernel, /*WithStatus=*/true> {
  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** op_kernel) const noexcept;

  const char* GetName() const { return kOpType; }

  // Inputs: X, W, offset, B (optional), mask (optional).
  size_t GetInputTypeCount() const { return 5; }
  ONNXTensorElementDataType GetInputType(size_t /*index*/) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const {
    return index >= 3 ? OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_OPTIONAL
                      : OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_REQUIRED;
  }

  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t /*index*/) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
};

}  // namespace dcn_deploy
