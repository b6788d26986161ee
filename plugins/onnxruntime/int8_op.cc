#include "onnxruntime/int8_op.h"

#include <algorithm>
#include <utility>

#include "cpu/int8_driver.h"
#include "onnxruntime/kernel_support.h"
#include "onnxruntime/parallel_items.h"
#include "core/text.h"

namespace dcn_deploy {
namespace {

// Input `index` with its dims, or nullptr data for an absent optional input.
template <typename T>
const T* read_input(const Ort::KernelContext& context, size_t index, ONNXTensorElementDataType expected,
                    const std::string& node_label, std::vector<int64_t>* dims) {
  if (index >= context.GetInputCount()) return nullptr;
  Ort::ConstValue value = context.GetInput(index);
  if (value == nullptr) return nullptr;
  const std::string name = kInputNames[index];
  if (!value.IsTensor()) {
    throw NodeError(ORT_INVALID_ARGUMENT, node_error(node_label, "input " + name + " must be a tensor"));
  }
  const Ort::TensorTypeAndShapeInfo info = value.GetTensorTypeAndShapeInfo();
  if (info.GetElementType() != expected) {
    throw NodeError(ORT_INVALID_ARGUMENT,
                    node_error(node_label, "input " + name + " has element type " +
                                               element_type_name(info.GetElementType()) + ", expected " +
                                               element_type_name(expected)));
  }
  *dims = info.GetShape();
  return value.GetTensorData<T>();
}

}  // namespace

DeformConvInt8OrtKernel::DeformConvInt8OrtKernel(std::string node_label, const DeformConvAttributes& attributes,
                                                 const DeformConvInt8Scales& scales, bool constant_weight)
    : node_label_(std::move(node_label)), attributes_(attributes), scales_(scales), constant_weight_(constant_weight) {}

OrtStatusPtr DeformConvInt8OrtKernel::ComputeV2(OrtKernelContext* context) const noexcept {
  return run_returning_status(node_label_, [&] { compute(context); });
}

void DeformConvInt8OrtKernel::compute(OrtKernelContext* raw_context) const {
  Ort::KernelContext context(raw_context);
  DeformConvInputDims dims;
  std::vector<int64_t> bias_dims, mask_dims;
  DeformConvInt8Tensors tensors;
  tensors.input = read_input<int8_t>(context, 0, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8, node_label_, &dims.input);
  tensors.weight = read_input<int8_t>(context, 1, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8, node_label_, &dims.weight);
  tensors.offset = read_input<float>(context, 2, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, node_label_, &dims.offset);
  tensors.bias = read_input<float>(context, 3, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, node_label_, &bias_dims);
  tensors.mask = read_input<float>(context, 4, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, node_label_, &mask_dims);
  if (tensors.bias) dims.bias = bias_dims;
  if (tensors.mask) dims.mask = mask_dims;

  DeformConvShape shape;
  std::string error = infer_shape(node_label_, attributes_, dims, &shape);
  if (error.empty()) error = check_int8_shape(node_label_, attributes_, shape);
  if (error.empty()) error = check_int8_scales(node_label_, scales_, shape.out_channels);
  if (!error.empty()) throw NodeError(ORT_INVALID_ARGUMENT, error);

  const std::vector<float> output_scale = int8_output_scales(scales_.x_scale, scales_.w_scale, shape.out_channels);
  tensors.output_scale = output_scale.data();
  tensors.y_scale = scales_.y_scale;
  Ort::UnownedValue output = context.GetOutput(0, output_dims(shape));
  if (scales_.y_scale > 0.0f) {
    tensors.output_int8 = output.GetTensorMutableData<int8_t>();
  } else {
    tensors.output = output.GetTensorMutableData<float>();
  }

  DeformConvCpuInt8 convolution(attributes_, shape, tensors, kMinWorkItems);
  if (convolution.work_item_count() == 0) return;  // Empty batch.
  std::shared_ptr<const std::vector<int32_t>> packed;
  if (constant_weight_ && convolution.packed_weight_count() > 0) {
    packed = packed_weights_.get(convolution.channel_block(), convolution.packed_weight_count(),
                                 [&](int32_t* out) { convolution.pack_weights(out); });
    convolution.set_packed_weights(packed->data());
  }
  run_prepare_items(context, convolution);
  run_work_items<DeformConvInt8Scratch>(context, convolution, node_label_);
}

OrtStatusPtr DeformConvInt8OrtOp::CreateKernelV2(const OrtApi& /*api*/, const OrtKernelInfo* info,
                                                 void** op_kernel) const noexcept {
  std::string node_label = "<unknown>";
  return run_returning_status(node_label, [&] {
    node_label = make_node_label(info);
    const DeformConvAttributes attributes = read_geometry_attributes(info, node_label);
    DeformConvInt8Scales scales;
    scales.x_scale = read_float_attribute(info, node_label, "x_scale");
    scales.w_scale = read_floats_attribute(info, node_label, "w_scale");
    if (requantized_) {
      scales.y_scale = read_float_attribute(info, node_label, "y_scale");
      if (!(scales.y_scale > 0.0f)) {  // 0 would mean "float output" to the kernel.
        throw NodeError(ORT_INVALID_ARGUMENT,
                        node_error(node_label, concat("attribute 'y_scale' must be a finite positive scale, got ",
                                                      scales.y_scale)));
      }
    } else if (attribute_exists(info, "y_scale")) {
      throw NodeError(ORT_INVALID_ARGUMENT,
                      node_error(node_label, std::string("attribute 'y_scale' belongs to ") +
                                                 kInt8RequantizedOpType + " (int8 output); " + kInt8OpType +
                                                 " writes float32 Y"));
    }
    const std::string error = check_int8_scales(node_label, scales, -1);
    if (!error.empty()) throw NodeError(ORT_INVALID_ARGUMENT, error);
    *op_kernel = new DeformConvInt8OrtKernel(node_label, attributes, scales, input_is_constant(info, 1));
  });
}

const std::vector<DeformConvInt8OrtOp>& deform_conv_int8_ort_ops() {
  static const std::vector<DeformConvInt8OrtOp> ops = {DeformConvInt8OrtOp(false), DeformConvInt8OrtOp(true)};
  return ops;
}

}  // namespace dcn_deploy
