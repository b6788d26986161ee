// ONNX Runtime custom operators dcn_deploy::DcnDeformConvInt8 (float32 Y) and
// dcn_deploy::DcnDeformConvInt8Requantized (int8 Yq), CPU.
//
// Inputs: X int8, W int8, offset float32, B float32 (optional), mask float32
// (optional). Attributes: the six DeformConv attributes, x_scale (float),
// w_scale (floats, M or 1 values) and, for the Requantized form, y_scale
// (float). Zero points are 0. The definition is dcn_deploy/op/int8.py; the
// kernel (plugins/cpu/int8_driver.h) computes its exact bits.
//
// Two op types, not one with an attribute choosing the output type: ONNX
// Runtime infers a custom op's output type from the first registration whose
// input types match, so one name cannot have two output types.
#pragma once

#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT

#include <cstdint>
#include <string>
#include <vector>

#include "core/int8_scales.h"
#include "core/params.h"
#include "onnxruntime/kernel_support.h"

namespace dcn_deploy {

class DeformConvInt8OrtKernel {
 public:
  // constant_weight: W is a constant initializer (its packed form is cached).
  DeformConvInt8OrtKernel(std::string node_label, const DeformConvAttributes& attributes,
                          const DeformConvInt8Scales& scales, bool constant_weight);

  OrtStatusPtr ComputeV2(OrtKernelContext* context) const noexcept;

 private:
  void compute(OrtKernelContext* context) const;

  const std::string node_label_;
  const DeformConvAttributes attributes_;
  const DeformConvInt8Scales scales_;
  const bool constant_weight_;
  mutable PackedWeightCache<int32_t> packed_weights_;  // A constant W, packed per channel block.
};

struct DeformConvInt8OrtOp
    : Ort::CustomOpBase<DeformConvInt8OrtOp, DeformConvInt8OrtKernel, /*WithStatus=*/true> {
  explicit DeformConvInt8OrtOp(bool requantized) : requantized_(requantized) {}

  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** op_kernel) const noexcept;

  const char* GetName() const { return requantized_ ? kInt8RequantizedOpType : kInt8OpType; }

  size_t GetInputTypeCount() const { return kInputCount; }
  ONNXTensorElementDataType GetInputType(size_t index) const {
    return index < 2 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const {
    return index >= 3 ? OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_OPTIONAL
                      : OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t /*index*/) const {
    return requantized_ ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }

 private:
  bool requantized_;
};

// The two registrations (float output, int8 output), alive for the process.
const std::vector<DeformConvInt8OrtOp>& deform_conv_int8_ort_ops();

}  // namespace dcn_deploy
