// Launch planning of the CUDA kernels, host code only: the kernel's int32
// constants, the choice of kernel (SIMT, tensor core, channels-last, INT8),
// tile size, split-K and shared memory, for given device limits.
// Compiled by nvcc because it sizes the kernels' shared memory (kernels/*.cuh).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <string>

#include "cuda/kernels/mma.cuh"
#include "cuda/kernels/tile.cuh"
#include "cuda/runner.h"

namespace dcn_deploy::cuda {

using cuda_tile::TileProblem;

constexpr int64_t kMaxGridYZ = 65535;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// What the launch depends on besides the problem.
struct DeviceLimits {
  int sm_count;
  int compute_capability;  // major * 10 + minor
  size_t max_shared_per_block;
};

// The emulator plans for an H100 so its choices (split-K included) are the ones CI should cover.
constexpr DeviceLimits kEmulatedDevice{132, 90, 227 * 1024};

// The kernel, its int32 constants and its launch shape for one problem.
struct LaunchPlan {
  DcnAlgorithm algorithm = DCN_ALGORITHM_SIMT;
  TileProblem problem;      // SIMT kernel
  cuda_mma::MmaProblem mma;  // tensor-core kernel
  int tile_m = 0;            // tensor-core kernel: 128, 256 or 512 channels per block
  cuda_mma::Gather gather = cuda_mma::Gather::kPlanar;  // float16 block kernel (kWorkspaceNhwc: the two copy passes)
  bool block_kernel = false;   // deform_conv_mma_kernel (float16 tensor core, or INT8 with either algorithm)
  size_t input_elements = 0, weight_elements = 0;  // of X and W (the NHWC passes)
  dim3 grid;
  size_t shared_bytes = 0;
};

// Whether DCN_ALGORITHM_AUTO takes the channels-last variant where it fits.
constexpr bool kAutoChannelsLast = false;

// The channels-last variant gathers 8 channels at once: they must share a
// weight group and an offset group.
inline bool channels_last_fits(const TileProblem& t) {
  return t.channels_per_group % cuda_mma::kChannelVector == 0 && t.channels_per_offset_group % cuda_mma::kChannelVector == 0;
}

// Workspace of the channels-last variant: X (NHWC) then W (tap-major), each 256-byte aligned.
constexpr size_t kWorkspaceAlignment = 256;
inline size_t aligned_bytes(size_t elements) {
  return (elements * sizeof(__half) + kWorkspaceAlignment - 1) / kWorkspaceAlignment * kWorkspaceAlignment;
}

inline size_t channels_last_workspace(const LaunchPlan& plan) {
  return aligned_bytes(plan.input_elements) + aligned_bytes(plan.weight_elements);
}

// Where the channels-last copies of X and W live in the workspace.
struct ChannelsLastCopies {
  __half* input;
  __half* weight;
};

inline ChannelsLastCopies channels_last_copies(const LaunchPlan& plan, void* workspace) {
  auto* base = static_cast<unsigned char*>(workspace);
  return {reinterpret_cast<__half*>(base), reinterpret_cast<__half*>(base + aligned_bytes(plan.input_elements))};
}

// The SIMT kernel's constants and grid, and the limits every kernel shares
// (DCN_STATUS_UNSUPPORTED beyond them). Returns a DcnStatus.
int plan_tiles(const Problem& problem, LaunchPlan* plan, std::string* message);

// Limits of the current device, read once per device ordinal and cached
// (device_limits.cu). Returns a DcnStatus.
int query_device(DeviceLimits* device, std::string* message);

// After plan_tiles: chooses the kernel for `device` and sizes the block
// kernel's launch. `input_aligned`: X's address is a multiple of 16 bytes (the
// in-place 8-channel gathers of a channels-last X need it; without buffers,
// as for dcn_deform_conv_cuda_launch_info, assumed). Returns a DcnStatus.
int plan_algorithm(const Problem& problem, const DeviceLimits& device, LaunchPlan* plan, std::string* message,
                   bool input_aligned = true);

}  // namespace dcn_deploy::cuda
