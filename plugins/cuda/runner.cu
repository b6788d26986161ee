#include "cuda/runner.h"

#include <cuda_runtime.h>

#include <cstdint>

#include <string>

#include "cuda/emulate.h"
#include "cuda/launch.h"
#include "cuda/plan.h"

namespace dcn_deploy::cuda {
namespace {

int check_buffers(const Problem& problem, const DcnDeformConvBuffers* b, std::string* message) {
  if (b == nullptr) {
    *message = node_error(kCallerName, "buffers is NULL");
    return DCN_STATUS_INVALID_ARGUMENT;
  }
  std::string missing;
  if (b->input == nullptr) missing += " X";
  if (b->weight == nullptr) missing += " W";
  if (b->offset == nullptr) missing += " offset";
  if (problem.shape.has_bias && b->bias == nullptr) missing += " B (has_bias is set)";
  if (problem.shape.has_mask && b->mask == nullptr) missing += " mask (has_mask is set)";
  if (problem.data_type == DCN_INT8 && b->output_scale == nullptr) missing += " output_scale (DCN_INT8 data)";
  if (b->output == nullptr) missing += " Y";
  if (!missing.empty()) {
    *message = node_error(kCallerName, "NULL buffer for:" + missing);
    return DCN_STATUS_INVALID_ARGUMENT;
  }
  return DCN_STATUS_OK;
}

// Plans the launch for `device` (nullptr: the current device), checking the
// buffers first when given.
int plan_for(const Problem& problem, const DcnDeformConvBuffers* buffers, const DeviceLimits* device,
             LaunchPlan* plan, std::string* message) {
  int status = plan_tiles(problem, plan, message);
  if (status == DCN_STATUS_OK && buffers != nullptr) status = check_buffers(problem, buffers, message);
  DeviceLimits current{};
  if (status == DCN_STATUS_OK && device == nullptr) {
    status = query_device(&current, message);
    device = &current;
  }
  const bool input_aligned = buffers == nullptr || reinterpret_cast<uintptr_t>(buffers->input) % 16 == 0;
  if (status == DCN_STATUS_OK) status = plan_algorithm(problem, *device, plan, message, input_aligned);
  return status;
}

bool nothing_to_compute(const LaunchPlan& plan) { return plan.grid.x == 0 || plan.grid.y == 0 || plan.grid.z == 0; }

}  // namespace

int plan(const Problem& problem, bool emulated, DcnLaunchInfo* info, std::string* message) {
  LaunchPlan launch;
  const int status = plan_for(problem, nullptr, emulated ? &kEmulatedDevice : nullptr, &launch, message);
  if (status != DCN_STATUS_OK || info == nullptr) return status;
  info->algorithm = launch.algorithm;
  info->splits = launch.block_kernel ? launch.mma.splits : 1;
  info->grid[0] = launch.grid.x;
  info->grid[1] = launch.grid.y;
  info->grid[2] = launch.grid.z;
  info->threads = launch.block_kernel ? cuda_mma::kThreads : cuda_tile::kThreads;
  info->shared_bytes = launch.shared_bytes;
  return DCN_STATUS_OK;
}

size_t workspace_bytes(const Problem& problem) {
  // Device-independent: the channels-last variant's needs whenever the problem
  // asks for it (or AUTO would take it) and it fits; an unused workspace is harmless.
  LaunchPlan launch;
  std::string message;
  if (plan_tiles(problem, &launch, &message) != DCN_STATUS_OK || problem.data_type != DCN_FLOAT16 ||
      problem.layout.kind != ChannelLayout::kPlanar || !channels_last_fits(launch.problem)) {
    return 0;
  }
  const bool wanted = problem.algorithm == DCN_ALGORITHM_TENSOR_CORE_NHWC ||
                      (problem.algorithm == DCN_ALGORITHM_AUTO && kAutoChannelsLast);
  return wanted ? channels_last_workspace(launch) : 0;
}

int run(const Problem& problem, const DcnDeformConvBuffers* buffers, void* workspace, void* stream,
        std::string* message) {
  LaunchPlan launch;
  const int status = plan_for(problem, buffers, nullptr, &launch, message);
  if (status != DCN_STATUS_OK || nothing_to_compute(launch)) return status;
  if (launch.gather == cuda_mma::Gather::kWorkspaceNhwc && workspace == nullptr) {
    *message = node_error(kCallerName, "the channels-last tensor-core kernel needs a workspace of " +
                                           std::to_string(channels_last_workspace(launch)) +
                                           " bytes (dcn_deform_conv_cuda_workspace_size), got NULL");
    return DCN_STATUS_INVALID_ARGUMENT;
  }
  const cudaError_t launched =
      launch_on_device(launch, problem, *buffers, workspace, static_cast<cudaStream_t>(stream));
  if (launched != cudaSuccess) {
    *message = node_error(kCallerName, std::string("kernel launch failed: ") + cudaGetErrorName(launched) + ": " +
                                           cudaGetErrorString(launched));
    return DCN_STATUS_CUDA_ERROR;
  }
  return DCN_STATUS_OK;
}

int emulate(const Problem& problem, const DcnDeformConvBuffers* buffers, std::string* message) {
  LaunchPlan launch;
  const int status = plan_for(problem, buffers, &kEmulatedDevice, &launch, message);
  if (status != DCN_STATUS_OK || nothing_to_compute(launch)) return status;
  emulate_on_host(launch, problem, *buffers);
  return DCN_STATUS_OK;
}

}  // namespace dcn_deploy::cuda
