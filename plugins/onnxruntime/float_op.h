// ONNX Runtime custom operator dcn_deploy::DcnDeformConv (CPU, float32 and float16).
//
// Uses the classic Ort::CustomOpBase API with the status-returning
// CreateKernelV2 / KernelComputeV2 entry points, so every failure reaches
// ONNX Runtime as an OrtStatus naming the node instead of an exception
// crossing the C ABI.
//
// Element types (the same rule as the TensorRT plugin): X, W, B and Y share
// one type, offset and mask share one type, each float32 or float16
// independently. The classic API declares one fixed type per input, so the
// op is registered once per float32/float16 combination of its five inputs
// (deform_conv_ort_ops()): ONNX Runtime's graph check then rejects any other
// type (int, double, ...) by naming the node, the input and its type, and the
// kernel rejects a mixed combination the rule forbids when the session is
// created, naming the node and every input's type. Half inputs are computed in
// float32 by the CPU kernel and the output is rounded back to nearest-even.
#pragma once

#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT

#include <array>
#include <string>
#include <vector>

#include "core/params.h"
#include "onnxruntime/kernel_support.h"

namespace dcn_deploy {

// The element types of one node, checked against the type rule.
struct DeformConvElementTypes {
  ONNXTensorElementDataType data = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;      // X, W, B, Y
  ONNXTensorElementDataType sampling = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;  // offset, mask
};

// One instance per graph node. Holds only immutable attributes and types, so
// ONNX Runtime may call ComputeV2 from several threads at once.
class DeformConvCpu;

class DeformConvOrtKernel {
 public:
  // constant_weight: W is a constant initializer (its packed form is cached).
  DeformConvOrtKernel(std::string node_label, const DeformConvAttributes& attributes,
                      const DeformConvElementTypes& types, bool constant_weight);

  OrtStatusPtr ComputeV2(OrtKernelContext* context) const noexcept;

 private:
  void compute(OrtKernelContext* context) const;

  const std::string node_label_;
  const DeformConvAttributes attributes_;
  const DeformConvElementTypes types_;
  const bool constant_weight_;
  mutable PackedWeightCache<float> packed_weights_;  // A constant W, packed per channel block.
};

// One registration of the op for one combination of declared input types.
// Every registration creates the same kernel: it reads the node's actual types.
struct DeformConvOrtOp : Ort::CustomOpBase<DeformConvOrtOp, DeformConvOrtKernel, /*WithStatus=*/true> {
  explicit DeformConvOrtOp(const std::array<ONNXTensorElementDataType, kInputCount>& input_types)
      : input_types_(input_types) {}

  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** op_kernel) const noexcept;

  const char* GetName() const { return kOpType; }

  size_t GetInputTypeCount() const { return kInputCount; }
  ONNXTensorElementDataType GetInputType(size_t index) const { return input_types_[index]; }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const {
    return index >= 3 ? OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_OPTIONAL
                      : OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_REQUIRED;
  }

  // Y has the type of X (ONNX Runtime infers it from the registration that matches the node).
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t /*index*/) const { return input_types_[0]; }

 private:
  std::array<ONNXTensorElementDataType, kInputCount> input_types_;
};

// The registrations: every float32/float16 combination of the five inputs
// (32), created once; they live as long as the process.
const std::vector<DeformConvOrtOp>& deform_conv_ort_ops();

}  // namespace dcn_deploy
