// C entry points of the CUDA deformable-convolution kernel: validation (the
// shared infer_shape of plugins/common), the launch, and the CPU emulator.
#include "deform_conv_cuda.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "deform_conv_params.h"
#include "deform_conv_tile.cuh"

namespace dcn_deploy {
namespace {

using cuda_tile::BlockIndex;
using cuda_tile::SharedTiles;
using cuda_tile::TilePointers;
using cuda_tile::TileProblem;

// Name used in messages: the C API has no ONNX node name.
constexpr const char* kCallerName = "dcn_deform_conv_cuda";
constexpr int64_t kMaxGridYZ = 65535;

template <typename T, typename TOffset>
__global__ void __launch_bounds__(cuda_tile::kThreads)
    deform_conv_tile_kernel(TileProblem problem, TilePointers<T, TOffset> tensors) {
  __shared__ SharedTiles tiles;
  const BlockIndex block{static_cast<int32_t>(blockIdx.x), static_cast<int32_t>(blockIdx.y),
                         static_cast<int32_t>(blockIdx.z)};
  const int tid = static_cast<int>(threadIdx.x);
  cuda_tile::Accumulator acc = {};
  for (int32_t k0 = 0; k0 < problem.reduction; k0 += cuda_tile::kTileK) {
    cuda_tile::load_tiles(problem, tensors, block, k0, tid, tiles);
    __syncthreads();
    cuda_tile::accumulate(tiles, tid, acc);
    __syncthreads();
  }
  cuda_tile::store_outputs(problem, tensors, block, tid, acc);
}

struct LaunchPlan {
  TileProblem problem;
  dim3 grid;
};

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

int report(int status, const std::string& message, char* error, size_t capacity) {
  if (error != nullptr && capacity > 0) {
    const size_t length = std::min(message.size(), capacity - 1);
    std::memcpy(error, message.data(), length);
    error[length] = '\0';
  }
  return status;
}

bool known_type(DcnElementType type) { return type == DCN_FLOAT32 || type == DCN_FLOAT16; }

// Validates the C problem with the shared shape inference and fills the
// kernel's int32 constants. Returns a DcnStatus; `message` is set on failure.
int plan_launch(const DcnDeformConvProblem* p, LaunchPlan* plan, std::string* message) {
  if (p == nullptr) {
    *message = node_error(kCallerName, "problem is NULL");
    return DCN_STATUS_INVALID_ARGUMENT;
  }
  if (!known_type(p->data_type) || !known_type(p->offset_type)) {
    *message = node_error(kCallerName, "data_type and offset_type must be DCN_FLOAT32 (0) or DCN_FLOAT16 (1), got " +
                                           std::to_string(static_cast<int>(p->data_type)) + " and " +
                                           std::to_string(static_cast<int>(p->offset_type)));
    return DCN_STATUS_INVALID_ARGUMENT;
  }
  DeformConvAttributes attributes;
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
  std::string error = check_attributes(kCallerName, attributes);
  if (!error.empty()) {
    *message = error;
    return DCN_STATUS_INVALID_ARGUMENT;
  }
  // Output size from the attributes, then the full shape check on dims built
  // from it (so the C caller cannot pass inconsistent Ho/Wo).
  const int64_t out_height =
      output_extent(p->in_height, p->pad_top, p->pad_bottom, p->kernel_h, p->stride_h, p->dilation_h);
  const int64_t out_width =
      output_extent(p->in_width, p->pad_left, p->pad_right, p->kernel_w, p->stride_w, p->dilation_w);
  const int64_t taps = p->offset_group * p->kernel_h * p->kernel_w;
  const int64_t channels_per_group = p->group > 0 ? p->in_channels / p->group : 0;
  DeformConvInputDims dims;
  dims.input = {p->batch, p->in_channels, p->in_height, p->in_width};
  dims.weight = {p->out_channels, channels_per_group, p->kernel_h, p->kernel_w};
  dims.offset = {p->batch, 2 * taps, out_height, out_width};
  if (p->has_bias) dims.bias = std::vector<int64_t>{p->out_channels};
  if (p->has_mask) dims.mask = std::vector<int64_t>{p->batch, taps, out_height, out_width};
  DeformConvShape shape;
  error = infer_shape(kCallerName, attributes, dims, &shape);
  if (!error.empty()) {
    *message = error;
    return DCN_STATUS_INVALID_ARGUMENT;
  }

  const int64_t int32_max = std::numeric_limits<int32_t>::max();
  const int64_t out_pixels = shape.out_height * shape.out_width;
  const int64_t reduction = channels_per_group * shape.kernel_h * shape.kernel_w;
  const int64_t out_channels_per_group = shape.out_channels / attributes.group;
  const int64_t image_groups = shape.batch * attributes.group;
  const int64_t channel_tiles = ceil_div(out_channels_per_group, cuda_tile::kTileM);
  if (out_pixels > int32_max - cuda_tile::kTileN || reduction > int32_max - cuda_tile::kTileK ||
      shape.in_channels > int32_max || shape.out_channels > int32_max) {
    *message = node_error(kCallerName, "problem too large for this kernel: Ho*Wo = " + std::to_string(out_pixels) +
                                           ", C/group*kh*kw = " + std::to_string(reduction) +
                                           " (each must stay below 2^31 - 64)");
    return DCN_STATUS_UNSUPPORTED;
  }
  if (image_groups > kMaxGridYZ || channel_tiles > kMaxGridYZ) {
    *message = node_error(kCallerName, "problem too large for one launch: N*group = " + std::to_string(image_groups) +
                                           " and ceil((M/group)/64) = " + std::to_string(channel_tiles) +
                                           " must each be <= 65535");
    return DCN_STATUS_UNSUPPORTED;
  }
  if (shape.batch == 0) {
    plan->grid = dim3(0, 0, 0);  // Nothing to compute; the caller skips the launch.
  } else {
    plan->grid = dim3(static_cast<unsigned>(ceil_div(out_pixels, cuda_tile::kTileN)),
                      static_cast<unsigned>(channel_tiles), static_cast<unsigned>(image_groups));
  }

  TileProblem& t = plan->problem;
  t.in_channels = static_cast<int32_t>(shape.in_channels);
  t.height = static_cast<int32_t>(shape.in_height);
  t.width = static_cast<int32_t>(shape.in_width);
  t.out_channels = static_cast<int32_t>(shape.out_channels);
  t.out_height = static_cast<int32_t>(shape.out_height);
  t.out_width = static_cast<int32_t>(shape.out_width);
  t.out_pixels = static_cast<int32_t>(out_pixels);
  t.kernel_w = static_cast<int32_t>(shape.kernel_w);
  t.kernel_area = static_cast<int32_t>(shape.kernel_h * shape.kernel_w);
  t.stride_h = static_cast<int32_t>(attributes.stride[0]);
  t.stride_w = static_cast<int32_t>(attributes.stride[1]);
  t.pad_top = static_cast<int32_t>(attributes.pads[0]);
  t.pad_left = static_cast<int32_t>(attributes.pads[1]);
  t.dilation_h = static_cast<int32_t>(attributes.dilation[0]);
  t.dilation_w = static_cast<int32_t>(attributes.dilation[1]);
  t.groups = static_cast<int32_t>(attributes.group);
  t.channels_per_group = static_cast<int32_t>(channels_per_group);
  t.out_channels_per_group = static_cast<int32_t>(out_channels_per_group);
  t.offset_groups = static_cast<int32_t>(attributes.offset_group);
  t.channels_per_offset_group = static_cast<int32_t>(shape.in_channels / attributes.offset_group);
  t.reduction = static_cast<int32_t>(reduction);
  t.has_mask = shape.has_mask;
  t.has_bias = shape.has_bias;
  return DCN_STATUS_OK;
}

int check_buffers(const DcnDeformConvProblem* p, const DcnDeformConvBuffers* b, std::string* message) {
  if (b == nullptr) {
    *message = node_error(kCallerName, "buffers is NULL");
    return DCN_STATUS_INVALID_ARGUMENT;
  }
  std::string missing;
  if (b->input == nullptr) missing += " X";
  if (b->weight == nullptr) missing += " W";
  if (b->offset == nullptr) missing += " offset";
  if (p->has_bias && b->bias == nullptr) missing += " B (has_bias is set)";
  if (p->has_mask && b->mask == nullptr) missing += " mask (has_mask is set)";
  if (b->output == nullptr) missing += " Y";
  if (!missing.empty()) {
    *message = node_error(kCallerName, "NULL buffer for:" + missing);
    return DCN_STATUS_INVALID_ARGUMENT;
  }
  return DCN_STATUS_OK;
}

template <typename T, typename TOffset>
TilePointers<T, TOffset> typed_pointers(const DcnDeformConvBuffers& b) {
  return TilePointers<T, TOffset>{static_cast<const T*>(b.input),    static_cast<const T*>(b.weight),
                                  static_cast<const TOffset*>(b.offset), static_cast<const TOffset*>(b.mask),
                                  static_cast<const T*>(b.bias),     static_cast<T*>(b.output)};
}

// Calls Body::template run<T, TOffset>(args...) for the problem's storage types.
template <typename Body, typename... Args>
void dispatch_types(DcnElementType data_type, DcnElementType offset_type, Args&&... args) {
  if (data_type == DCN_FLOAT32) {
    if (offset_type == DCN_FLOAT32) Body::template run<float, float>(args...);
    else Body::template run<float, __half>(args...);
  } else {
    if (offset_type == DCN_FLOAT32) Body::template run<__half, float>(args...);
    else Body::template run<__half, __half>(args...);
  }
}

struct Launch {
  template <typename T, typename TOffset>
  static void run(const LaunchPlan& plan, const DcnDeformConvBuffers& buffers, cudaStream_t stream) {
    deform_conv_tile_kernel<T, TOffset>
        <<<plan.grid, cuda_tile::kThreads, 0, stream>>>(plan.problem, typed_pointers<T, TOffset>(buffers));
  }
};

struct Emulate {
  template <typename T, typename TOffset>
  static void run(const LaunchPlan& plan, const DcnDeformConvBuffers& buffers);
};

template <typename T, typename TOffset>
void Emulate::run(const LaunchPlan& plan, const DcnDeformConvBuffers& buffers) {
  const TilePointers<T, TOffset> tensors = typed_pointers<T, TOffset>(buffers);
  SharedTiles tiles;
  std::vector<cuda_tile::Accumulator> acc(cuda_tile::kThreads);
  for (unsigned z = 0; z < plan.grid.z; ++z) {
    for (unsigned y = 0; y < plan.grid.y; ++y) {
      for (unsigned x = 0; x < plan.grid.x; ++x) {
        const BlockIndex block{static_cast<int32_t>(x), static_cast<int32_t>(y), static_cast<int32_t>(z)};
        std::fill(acc.begin(), acc.end(), cuda_tile::Accumulator{});
        for (int32_t k0 = 0; k0 < plan.problem.reduction; k0 += cuda_tile::kTileK) {
          for (int tid = 0; tid < cuda_tile::kThreads; ++tid) {
            cuda_tile::load_tiles(plan.problem, tensors, block, k0, tid, tiles);
          }
          for (int tid = 0; tid < cuda_tile::kThreads; ++tid) cuda_tile::accumulate(tiles, tid, acc[tid]);
        }
        for (int tid = 0; tid < cuda_tile::kThreads; ++tid) {
          cuda_tile::store_outputs(plan.problem, tensors, block, tid, acc[tid]);
        }
      }
    }
  }
}

}  // namespace
}  // namespace dcn_deploy

using namespace dcn_deploy;

extern "C" int dcn_deform_conv_output_size(const DcnDeformConvProblem* problem, int64_t* out_height,
                                           int64_t* out_width, char* error, size_t error_capacity) {
  LaunchPlan plan;
  std::string message;
  const int status = plan_launch(problem, &plan, &message);
  if (status != DCN_STATUS_OK) return report(status, message, error, error_capacity);
  if (out_height) *out_height = plan.problem.out_height;
  if (out_width) *out_width = plan.problem.out_width;
  return DCN_STATUS_OK;
}

extern "C" size_t dcn_deform_conv_cuda_workspace_size(const DcnDeformConvProblem*) { return 0; }

extern "C" int dcn_deform_conv_cuda(const DcnDeformConvProblem* problem, const DcnDeformConvBuffers* buffers,
                                    void* /*workspace*/, void* stream, char* error, size_t error_capacity) {
  LaunchPlan plan;
  std::string message;
  int status = plan_launch(problem, &plan, &message);
  if (status == DCN_STATUS_OK) status = check_buffers(problem, buffers, &message);
  if (status != DCN_STATUS_OK) return report(status, message, error, error_capacity);
  if (plan.grid.x == 0 || plan.grid.y == 0 || plan.grid.z == 0) return DCN_STATUS_OK;

  dispatch_types<Launch>(problem->data_type, problem->offset_type, plan, *buffers,
                         static_cast<cudaStream_t>(stream));
  const cudaError_t launch = cudaGetLastError();
  if (launch != cudaSuccess) {
    return report(DCN_STATUS_CUDA_ERROR,
                  node_error(kCallerName, std::string("kernel launch failed: ") + cudaGetErrorName(launch) + ": " +
                                              cudaGetErrorString(launch)),
                  error, error_capacity);
  }
  return DCN_STATUS_OK;
}

extern "C" int dcn_deform_conv_cuda_emulated(const DcnDeformConvProblem* problem, const DcnDeformConvBuffers* buffers,
                                             char* error, size_t error_capacity) {
  LaunchPlan plan;
  std::string message;
  int status = plan_launch(problem, &plan, &message);
  if (status == DCN_STATUS_OK) status = check_buffers(problem, buffers, &message);
  if (status != DCN_STATUS_OK) return report(status, message, error, error_capacity);
  dispatch_types<Emulate>(problem->data_type, problem->offset_type, plan, *buffers);
  return DCN_STATUS_OK;
}
