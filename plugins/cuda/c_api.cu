// The C API of libdcn_deploy_cuda.so (deform_conv_cuda.h): each entry point
// turns the C struct into a validated cuda::Problem once (types, then the
// core's infer_shape_from_sizes) and hands it to the runner.
#include "cuda/deform_conv_cuda.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "core/int8_scales.h"
#include "core/params.h"
#include "cuda/plan.h"
#include "cuda/runner.h"

namespace dcn_deploy::cuda {
namespace {

int report(int status, const std::string& message, char* error, size_t capacity) {
  if (error != nullptr && capacity > 0) {
    const size_t length = std::min(message.size(), capacity - 1);
    std::memcpy(error, message.data(), length);
    error[length] = '\0';
  }
  return status;
}

bool float_type(DcnElementType type) { return type == DCN_FLOAT32 || type == DCN_FLOAT16; }

// The element types and y_scale: float32/float16 data with float32/float16
// offsets, or DCN_INT8 data with float32 offsets (the INT8 definition).
int check_types(const DcnDeformConvProblem* p, std::string* message) {
  const int data = static_cast<int>(p->data_type);
  const int offset = static_cast<int>(p->offset_type);
  if (p->data_type == DCN_INT8) {
    if (p->offset_type != DCN_FLOAT32) {
      *message = node_error(kCallerName, "DCN_INT8 data needs offset_type DCN_FLOAT32 (0) (float32 offset and mask), "
                                         "got " + std::to_string(offset));
      return DCN_STATUS_INVALID_ARGUMENT;
    }
    if (!(p->y_scale >= 0.0f) || !std::isfinite(p->y_scale)) {
      *message = node_error(kCallerName, "y_scale must be 0 (float32 Y) or finite and positive (int8 Yq), got " +
                                             std::to_string(p->y_scale));
      return DCN_STATUS_INVALID_ARGUMENT;
    }
    return DCN_STATUS_OK;
  }
  if (!float_type(p->data_type) || !float_type(p->offset_type)) {
    *message = node_error(kCallerName, "data_type must be DCN_FLOAT32 (0), DCN_FLOAT16 (1) or DCN_INT8 (2) and "
                                       "offset_type DCN_FLOAT32 (0) or DCN_FLOAT16 (1), got " +
                                           std::to_string(data) + " and " + std::to_string(offset));
    return DCN_STATUS_INVALID_ARGUMENT;
  }
  if (p->y_scale != 0.0f) {
    *message = node_error(kCallerName, "y_scale is for DCN_INT8 data only; it must be 0 for float data, got " +
                                           std::to_string(p->y_scale));
    return DCN_STATUS_INVALID_ARGUMENT;
  }
  return DCN_STATUS_OK;
}

// The one conversion of the C struct: its attributes (pads in ONNX order
// top, left, bottom, right) and sizes, validated by the core once.
int problem_from_c(const DcnDeformConvProblem* p, Problem* problem, std::string* message) {
  if (p == nullptr) {
    *message = node_error(kCallerName, "problem is NULL");
    return DCN_STATUS_INVALID_ARGUMENT;
  }
  const int types = check_types(p, message);
  if (types != DCN_STATUS_OK) return types;
  DeformConvAttributes& attributes = problem->attributes;
  attributes.kernel[0] = p->kernel_h;
  attributes.kernel[1] = p->kernel_w;
  attributes.stride[0] = p->stride_h;
  attributes.stride[1] = p->stride_w;
  attributes.pads[0] = p->pad_top;
  attributes.pads[1] = p->pad_left;
  attributes.pads[2] = p->pad_bottom;
  attributes.pads[3] = p->pad_right;
  attributes.dilation[0] = p->dilation_h;
  attributes.dilation[1] = p->dilation_w;
  attributes.group = p->group;
  attributes.offset_group = p->offset_group;
  DeformConvSizes sizes;
  sizes.batch = p->batch;
  sizes.in_channels = p->in_channels;
  sizes.in_height = p->in_height;
  sizes.in_width = p->in_width;
  sizes.out_channels = p->out_channels;
  sizes.has_bias = p->has_bias != 0;
  sizes.has_mask = p->has_mask != 0;
  std::string error = infer_shape_from_sizes(kCallerName, attributes, sizes, &problem->shape);
  if (error.empty() && p->data_type == DCN_INT8) error = check_int8_shape(kCallerName, attributes, problem->shape);
  problem->layout.kind = static_cast<ChannelLayout>(p->layout);
  problem->layout.vector = p->layout_vector == 0 && p->layout == DCN_LAYOUT_NCHW ? 1 : p->layout_vector;
  if (error.empty()) error = check_layout(kCallerName, problem->layout);
  if (!error.empty()) {
    *message = error;
    return DCN_STATUS_INVALID_ARGUMENT;
  }
  problem->data_type = p->data_type;
  problem->offset_type = p->offset_type;
  problem->algorithm = p->algorithm;
  problem->split_k = p->split_k;
  problem->y_scale = p->y_scale;
  return DCN_STATUS_OK;
}

}  // namespace
}  // namespace dcn_deploy::cuda

using dcn_deploy::node_error;
using dcn_deploy::cuda::kCallerName;
using dcn_deploy::cuda::Problem;
using dcn_deploy::cuda::problem_from_c;
using dcn_deploy::cuda::report;

extern "C" int dcn_deform_conv_cuda_plan(const DcnDeformConvProblem* problem, int emulated, DcnLaunchInfo* info,
                                         char* error, size_t error_capacity) {
  Problem checked;
  std::string message;
  int status = problem_from_c(problem, &checked, &message);
  if (status == DCN_STATUS_OK) status = dcn_deploy::cuda::plan(checked, emulated != 0, info, &message);
  return status == DCN_STATUS_OK ? status : report(status, message, error, error_capacity);
}

extern "C" int dcn_deform_conv_output_size(const DcnDeformConvProblem* problem, int64_t* out_height,
                                           int64_t* out_width, char* error, size_t error_capacity) {
  Problem checked;
  std::string message;
  int status = problem_from_c(problem, &checked, &message);
  dcn_deploy::cuda::LaunchPlan plan;  // The kernels' limits apply to the output size too.
  if (status == DCN_STATUS_OK) status = dcn_deploy::cuda::plan_tiles(checked, &plan, &message);
  if (status != DCN_STATUS_OK) return report(status, message, error, error_capacity);
  if (out_height) *out_height = checked.shape.out_height;
  if (out_width) *out_width = checked.shape.out_width;
  return DCN_STATUS_OK;
}

extern "C" size_t dcn_deform_conv_cuda_workspace_size(const DcnDeformConvProblem* problem) {
  Problem checked;
  std::string message;
  if (problem_from_c(problem, &checked, &message) != DCN_STATUS_OK) return 0;
  return dcn_deploy::cuda::workspace_bytes(checked);
}

extern "C" int dcn_deform_conv_cuda(const DcnDeformConvProblem* problem, const DcnDeformConvBuffers* buffers,
                                    void* workspace, void* stream, char* error, size_t error_capacity) {
  if (buffers == nullptr) {  // Before the problem, as callers have always seen it.
    return report(DCN_STATUS_INVALID_ARGUMENT, node_error(kCallerName, "buffers is NULL"), error, error_capacity);
  }
  Problem checked;
  std::string message;
  int status = problem_from_c(problem, &checked, &message);
  if (status == DCN_STATUS_OK) status = dcn_deploy::cuda::run(checked, buffers, workspace, stream, &message);
  return status == DCN_STATUS_OK ? status : report(status, message, error, error_capacity);
}

extern "C" int dcn_deform_conv_cuda_emulated(const DcnDeformConvProblem* problem, const DcnDeformConvBuffers* buffers,
                                             char* error, size_t error_capacity) {
  if (buffers == nullptr) {  // Before the problem, as callers have always seen it.
    return report(DCN_STATUS_INVALID_ARGUMENT, node_error(kCallerName, "buffers is NULL"), error, error_capacity);
  }
  Problem checked;
  std::string message;
  int status = problem_from_c(problem, &checked, &message);
  if (status == DCN_STATUS_OK) status = dcn_deploy::cuda::emulate(checked, buffers, &message);
  return status == DCN_STATUS_OK ? status : report(status, message, error, error_capacity);
}
