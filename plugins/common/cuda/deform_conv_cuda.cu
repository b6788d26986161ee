// C entry points of the CUDA deformable-convolution kernel: validation (the
// shared infer_shape of plugins/common), the launch, and the CPU emulator.
#include "deform_conv_cuda.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <atomic>
#include <mutex>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "deform_conv_int8.cuh"
#include "deform_conv_mma.cuh"
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

// Tensor-core kernel: see deform_conv_mma.cuh for the phases.
template <class C, bool ChannelsLast, typename TOffset>
__host__ __device__ inline void load_any_slice(const cuda_mma::MmaProblem& problem,
                                               const TilePointers<__half, TOffset>& tensors,
                                               cuda_mma::MmaBlockIndex block, int32_t k0, int32_t k_end, int tid,
                                               const cuda_mma::SharedLayout& layout, int stage) {
  if constexpr (ChannelsLast) {
    cuda_mma::load_slice_channels_last<C>(problem, tensors, block, k0, k_end, tid, layout, stage);
  } else {
    cuda_mma::load_slice<C>(problem, tensors, block, k0, k_end, tid, layout, stage);
  }
}

// The channels-last variant's two passes (grid-stride loops over the outputs).
__global__ void to_channels_last_kernel(const __half* x, __half* x_nhwc, int64_t elements, int32_t channels,
                                        int64_t plane_size) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < elements;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    cuda_mma::to_channels_last(x, x_nhwc, e, channels, plane_size);
  }
}

__global__ void to_tap_major_kernel(const __half* w, __half* w_taps, int64_t elements, int32_t channels_per_group,
                                    int32_t kernel_area) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < elements;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    cuda_mma::to_tap_major(w, w_taps, e, channels_per_group, kernel_area);
  }
}

// The block kernels of deform_conv_mma.cuh run one body (below, and the
// emulator's emulate_blocks) over a variant V that supplies the phases whose
// element types differ:
//   C, Tensors, Layout, Accumulator, Partial (element of the epilogue tile),
//   layout(), load(), clear(), multiply(), store_accumulators(), store_outputs().

// Float16 X/W/B/Y, float32 accumulation. ChannelsLast: `tensors.input` /
// `tensors.weight` are the workspace copies of X (NHWC) and W (tap-major)
// made by the two passes above.
template <int TileM, bool ChannelsLast, typename TOffset>
struct Fp16Variant {
  using C = cuda_mma::Config<TileM>;
  using Tensors = TilePointers<__half, TOffset>;
  using Layout = cuda_mma::SharedLayout;
  using Accumulator = cuda_mma::WarpAccumulator;
  using Partial = float;
  static DCN_HOST_DEVICE Layout layout(unsigned char* shared, int32_t offset_group_taps) {
    return cuda_mma::shared_layout<C>(shared, offset_group_taps);
  }
  static DCN_HOST_DEVICE void load(const cuda_mma::MmaProblem& problem, const Tensors& tensors,
                                   cuda_mma::MmaBlockIndex block, int32_t k0, int32_t k_end, int tid,
                                   const Layout& layout, int stage) {
    load_any_slice<C, ChannelsLast>(problem, tensors, block, k0, k_end, tid, layout, stage);
  }
  static DCN_HOST_DEVICE void clear(Accumulator& acc) { cuda_mma::clear_accumulator(acc); }
  static DCN_HOST_DEVICE void multiply(const Layout& layout, int stage, int warp, Accumulator& acc) {
    cuda_mma::mma_slice<C, ChannelsLast>(layout, stage, warp, acc);
  }
  static DCN_HOST_DEVICE void store_accumulators(const Layout& layout, int warp, const Accumulator& acc) {
    cuda_mma::store_accumulators<C>(layout, warp, acc);
  }
  static DCN_HOST_DEVICE void store_outputs(const cuda_mma::MmaProblem& problem, const Tensors& tensors,
                                            cuda_mma::MmaBlockIndex block, int tid, const Partial* const* tiles,
                                            int ranks, int row_begin, int row_end) {
    cuda_mma::store_outputs<C>(problem, tensors, block, tid, tiles, ranks, row_begin, row_end);
  }
};

// INT8 (deform_conv_int8.cuh): int8 slices, exact int32 accumulation on
// integer tensor cores (TensorCores) or with dp4a.
template <int TileM, bool TensorCores>
struct Int8Variant {
  using C = cuda_mma::Int8Config<TileM>;
  using Tensors = cuda_mma::Int8Pointers;
  using Layout = cuda_mma::Int8Layout;
  using Accumulator = cuda_mma::Int8WarpAccumulator<TensorCores>;
  using Partial = int32_t;
  static DCN_HOST_DEVICE Layout layout(unsigned char* shared, int32_t offset_group_taps) {
    return cuda_mma::shared_layout<C, Layout>(shared, offset_group_taps);
  }
  static DCN_HOST_DEVICE void load(const cuda_mma::MmaProblem& problem, const Tensors& tensors,
                                   cuda_mma::MmaBlockIndex block, int32_t k0, int32_t k_end, int tid,
                                   const Layout& layout, int stage) {
    cuda_mma::load_int8_slice<C>(problem, tensors, block, k0, k_end, tid, layout, stage);
  }
  static DCN_HOST_DEVICE void clear(Accumulator& acc) { cuda_mma::clear_int8_accumulator(acc); }
  static DCN_HOST_DEVICE void multiply(const Layout& layout, int stage, int warp, Accumulator& acc) {
    cuda_mma::int8_mma_slice<C, TensorCores>(layout, stage, warp, acc);
  }
  static DCN_HOST_DEVICE void store_accumulators(const Layout& layout, int warp, const Accumulator& acc) {
    cuda_mma::store_int8_accumulators<C, TensorCores>(layout, warp, acc);
  }
  static DCN_HOST_DEVICE void store_outputs(const cuda_mma::MmaProblem& problem, const Tensors& tensors,
                                            cuda_mma::MmaBlockIndex block, int tid, const Partial* const* tiles,
                                            int ranks, int row_begin, int row_end) {
    cuda_mma::store_int8_outputs<C>(problem, tensors, block, tid, tiles, ranks, row_begin, row_end);
  }
};

template <class V>
__global__ void __launch_bounds__(cuda_mma::kThreads, cuda_mma::kMinBlocksPerSm)
    deform_conv_mma_kernel(cuda_mma::MmaProblem problem, typename V::Tensors tensors) {
  extern __shared__ __align__(128) unsigned char shared[];
  using namespace cuda_mma;
  using C = typename V::C;
  using Partial = typename V::Partial;
  const typename V::Layout layout = V::layout(shared, problem.offset_group_taps);
  const int32_t split = static_cast<int32_t>(blockIdx.x) % problem.splits;
  const MmaBlockIndex block{static_cast<int32_t>(blockIdx.x) / problem.splits, split,
                            static_cast<int32_t>(blockIdx.y), static_cast<int32_t>(blockIdx.z)};
  const int tid = static_cast<int>(threadIdx.x);
  const int warp = tid / kWarpSize;

  build_corner_table<C>(problem, tensors, block, tid, layout);
  __syncthreads();
  typename V::Accumulator acc;
  V::clear(acc);
  int32_t k_begin, k_end;
  k_range_of_split(problem, split, &k_begin, &k_end);
  if (k_begin < k_end) {
    V::load(problem, tensors, block, k_begin, k_end, tid, layout, 0);
    __syncthreads();
    int stage = 0;
    for (int32_t k0 = k_begin; k0 < k_end; k0 += kTileK) {
      V::multiply(layout, stage, warp, acc);
      if (k0 + kTileK < k_end) {
        V::load(problem, tensors, block, k0 + kTileK, k_end, tid, layout, stage ^ 1);
      }
      __syncthreads();
      stage ^= 1;
    }
  }
  __syncthreads();  // The partial tile overwrites the stages and the corner table.
  V::store_accumulators(layout, warp, acc);
  if (problem.splits == 1) {
    __syncthreads();
    const Partial* tiles[1] = {layout.c};
    V::store_outputs(problem, tensors, block, tid, tiles, 1, 0, C::kTileM);
    return;
  }
#if __CUDA_ARCH__ >= 900
  // Split-K: the cluster's blocks hold partial tiles of one output tile; each
  // sums its share of rows over all of them through distributed shared memory.
  namespace cg = cooperative_groups;
  cg::cluster_group cluster = cg::this_cluster();
  cluster.sync();
  const Partial* tiles[kMaxSplits];
  for (int rank = 0; rank < problem.splits; ++rank) tiles[rank] = cluster.map_shared_rank(layout.c, rank);
  int row_begin, row_end;
  rows_of_rank(C::kTileM, split, problem.splits, &row_begin, &row_end);
  V::store_outputs(problem, tensors, block, tid, tiles, problem.splits, row_begin, row_end);
  cluster.sync();  // Keep this block's tile alive until every rank has read it.
#endif
}

// What the launch depends on besides the problem.
struct DeviceLimits {
  int sm_count;
  int compute_capability;  // major * 10 + minor
  size_t max_shared_per_block;
};

// The emulator plans for an H100 so its choices (split-K included) are the ones CI should cover.
constexpr DeviceLimits kEmulatedDevice{132, 90, 227 * 1024};

struct LaunchPlan {
  DcnAlgorithm algorithm = DCN_ALGORITHM_SIMT;
  TileProblem problem;      // SIMT kernel
  cuda_mma::MmaProblem mma;  // tensor-core kernel
  int tile_m = 0;            // tensor-core kernel: 128, 256 or 512 channels per block
  bool channels_last = false;  // DCN_ALGORITHM_TENSOR_CORE_NHWC
  bool block_kernel = false;   // deform_conv_mma_kernel (float16 tensor core, or INT8 with either algorithm)
  size_t input_elements = 0, weight_elements = 0;  // of X and W (the NHWC passes)
  dim3 grid;
  size_t shared_bytes = 0;
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

// Validates the C problem with the shared shape inference and fills the
// kernel's int32 constants. Returns a DcnStatus; `message` is set on failure.
int plan_launch(const DcnDeformConvProblem* p, LaunchPlan* plan, std::string* message) {
  if (p == nullptr) {
    *message = node_error(kCallerName, "problem is NULL");
    return DCN_STATUS_INVALID_ARGUMENT;
  }
  const int types = check_types(p, message);
  if (types != DCN_STATUS_OK) return types;
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
  if (error.empty() && p->data_type == DCN_INT8) error = check_int8_shape(kCallerName, attributes, shape);
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
  plan->input_elements = static_cast<size_t>(shape.batch * shape.in_channels * shape.in_height * shape.in_width);
  plan->weight_elements = static_cast<size_t>(shape.out_channels * reduction);
  plan->algorithm = DCN_ALGORITHM_SIMT;
  return DCN_STATUS_OK;
}

// Whether DCN_ALGORITHM_AUTO takes the channels-last variant where it fits.
constexpr bool kAutoChannelsLast = false;

// The channels-last variant gathers 8 channels at once: they must share a
// weight group and an offset group.
bool channels_last_fits(const TileProblem& t) {
  return t.channels_per_group % cuda_mma::kChannelVector == 0 && t.channels_per_offset_group % cuda_mma::kChannelVector == 0;
}

// Workspace of the channels-last variant: X (NHWC) then W (tap-major), each 256-byte aligned.
constexpr size_t kWorkspaceAlignment = 256;
size_t aligned_bytes(size_t elements) {
  return (elements * sizeof(__half) + kWorkspaceAlignment - 1) / kWorkspaceAlignment * kWorkspaceAlignment;
}

// Sizes a launch of deform_conv_mma_kernel (float16 or INT8): tile grid,
// split-K and shared memory, for blocks of tile_m x tile_n outputs.
int plan_block_grid(const DcnDeformConvProblem* p, const DeviceLimits& device, int tile_m, int tile_n,
                    size_t shared, LaunchPlan* plan, std::string* message) {
  using namespace cuda_mma;
  const TileProblem& t = plan->problem;
  const int32_t offset_group_taps = t.offset_groups * t.kernel_area;
  const int64_t pixel_tiles = ceil_div(t.out_pixels, tile_n);
  const int64_t channel_tiles = ceil_div(t.out_channels_per_group, tile_m);
  const int64_t image_groups = static_cast<int64_t>(plan->grid.z);
  const int64_t slices = ceil_div(t.reduction, kTileK);
  int64_t splits = 1;
  if (p->split_k > 0) {
    splits = p->split_k;
    if (splits > 1 && device.compute_capability < 90) {
      *message = node_error(kCallerName, "split_k > 1 needs thread-block clusters (compute capability 9.0)");
      return DCN_STATUS_UNSUPPORTED;
    }
  } else if (device.compute_capability >= 90 && image_groups > 0) {
    // Split K when the tile grid gives fewer than two blocks per SM (the
    // kernel is latency bound: it needs resident warps); each split keeps at
    // least 4 K slices so the partial sums are worth their reduction.
    const int64_t blocks = pixel_tiles * channel_tiles * image_groups;
    const int64_t wanted = 2 * static_cast<int64_t>(device.sm_count);
    if (blocks < wanted) {
      splits = std::min<int64_t>({kMaxSplits, ceil_div(wanted, blocks), std::max<int64_t>(1, slices / 4)});
    }
  }
  const int64_t slices_per_split = ceil_div(slices, splits);
  if (p->split_k == 0) splits = ceil_div(slices, slices_per_split);  // no empty split
  if (pixel_tiles * splits > std::numeric_limits<int32_t>::max() || channel_tiles > kMaxGridYZ) {
    *message = node_error(kCallerName, "problem too large for one tensor-core launch: " + std::to_string(pixel_tiles) +
                                           " pixel tiles, " + std::to_string(channel_tiles) + " channel tiles");
    return DCN_STATUS_UNSUPPORTED;
  }
  plan->tile_m = tile_m;
  plan->mma.base = t;
  plan->mma.offset_group_taps = offset_group_taps;
  plan->mma.splits = static_cast<int32_t>(splits);
  plan->mma.k_per_split = static_cast<int32_t>(slices_per_split * kTileK);
  plan->shared_bytes = shared;
  if (image_groups > 0) {
    plan->grid = dim3(static_cast<unsigned>(pixel_tiles * splits), static_cast<unsigned>(channel_tiles),
                      static_cast<unsigned>(image_groups));
  }
  return DCN_STATUS_OK;
}

// INT8 data: the block kernel with int8 slices; integer tensor cores (WMMA
// s8, sm_72+) or dp4a (DCN_ALGORITHM_SIMT, and older devices).
int plan_int8(const DcnDeformConvProblem* p, const DeviceLimits& device, LaunchPlan* plan, std::string* message) {
  using namespace cuda_mma;
  const TileProblem& t = plan->problem;
  if (p->algorithm == DCN_ALGORITHM_TENSOR_CORE_NHWC) {
    *message = node_error(kCallerName, "DCN_ALGORITHM_TENSOR_CORE_NHWC is a float16 kernel; DCN_INT8 data runs "
                                       "DCN_ALGORITHM_TENSOR_CORE or DCN_ALGORITHM_SIMT");
    return DCN_STATUS_UNSUPPORTED;
  }
  const bool imma = device.compute_capability >= 72;
  if (p->algorithm == DCN_ALGORITHM_TENSOR_CORE && !imma) {
    *message = node_error(kCallerName, "the INT8 tensor-core kernel needs compute capability 7.2 or newer, the device "
                                       "has " + std::to_string(device.compute_capability / 10) + "." +
                                           std::to_string(device.compute_capability % 10));
    return DCN_STATUS_UNSUPPORTED;
  }
  // The smallest tile that holds every output channel of a group (as for
  // float16), or a taller one (fewer pixels, a smaller corner table) when
  // the table does not fit: there is no table-free INT8 kernel to fall back to.
  const int32_t offset_group_taps = t.offset_groups * t.kernel_area;
  const int wanted = t.out_channels_per_group <= 128 ? 128 : t.out_channels_per_group <= 256 ? 256 : 512;
  const int tiles[3] = {128, 256, 512};
  const size_t shared_of[3] = {Int8Config<128>::shared_bytes(offset_group_taps),
                               Int8Config<256>::shared_bytes(offset_group_taps),
                               Int8Config<512>::shared_bytes(offset_group_taps)};
  const int tile_n_of[3] = {Int8Config<128>::kTileN, Int8Config<256>::kTileN, Int8Config<512>::kTileN};
  for (int i = 0; i < 3; ++i) {
    if (tiles[i] < wanted || shared_of[i] > device.max_shared_per_block) continue;
    plan->algorithm = imma && p->algorithm != DCN_ALGORITHM_SIMT ? DCN_ALGORITHM_TENSOR_CORE : DCN_ALGORITHM_SIMT;
    plan->block_kernel = true;
    return plan_block_grid(p, device, tiles[i], tile_n_of[i], shared_of[i], plan, message);
  }
  *message = node_error(kCallerName, "the INT8 kernel's corner table of offset_group*kh*kw = " +
                                         std::to_string(offset_group_taps) + " taps needs " +
                                         std::to_string(shared_of[2]) + " bytes of shared memory, the device allows " +
                                         std::to_string(device.max_shared_per_block));
  return DCN_STATUS_UNSUPPORTED;
}

// Chooses between the kernels (after plan_launch) and sizes the tensor-core
// launch: tile grid, split-K and shared memory.
int plan_algorithm(const DcnDeformConvProblem* p, const DeviceLimits& device, LaunchPlan* plan,
                   std::string* message) {
  using namespace cuda_mma;
  const TileProblem& t = plan->problem;
  if (p->algorithm != DCN_ALGORITHM_AUTO && p->algorithm != DCN_ALGORITHM_SIMT &&
      p->algorithm != DCN_ALGORITHM_TENSOR_CORE && p->algorithm != DCN_ALGORITHM_TENSOR_CORE_NHWC) {
    *message = node_error(kCallerName,
                          "algorithm must be DCN_ALGORITHM_AUTO (0), SIMT (1), TENSOR_CORE (2) or TENSOR_CORE_NHWC (3), "
                          "got " + std::to_string(static_cast<int>(p->algorithm)));
    return DCN_STATUS_INVALID_ARGUMENT;
  }
  const bool tensor_core_asked = p->algorithm == DCN_ALGORITHM_TENSOR_CORE || p->algorithm == DCN_ALGORITHM_TENSOR_CORE_NHWC;
  if (p->split_k < 0 || p->split_k > kMaxSplits) {
    *message = node_error(kCallerName, "split_k must be 0 (automatic) or 1.." + std::to_string(kMaxSplits) +
                                           ", got " + std::to_string(p->split_k));
    return DCN_STATUS_INVALID_ARGUMENT;
  }
  if (p->data_type == DCN_INT8) return plan_int8(p, device, plan, message);
  const int32_t offset_group_taps = t.offset_groups * t.kernel_area;
  // The smallest tile that holds every output channel of a group (up to 512),
  // so each sample is computed once per block.
  const int tile_m = t.out_channels_per_group <= 128 ? 128 : t.out_channels_per_group <= 256 ? 256 : 512;
  const int tile_n = tile_m == 128 ? Config<128>::kTileN : tile_m == 256 ? Config<256>::kTileN : Config<512>::kTileN;
  const size_t shared = tile_m == 128   ? Config<128>::shared_bytes(offset_group_taps)
                        : tile_m == 256 ? Config<256>::shared_bytes(offset_group_taps)
                                        : Config<512>::shared_bytes(offset_group_taps);
  std::string why_not;
  if (p->data_type != DCN_FLOAT16) {
    why_not = "it needs float16 X/W/B/Y";
  } else if (device.compute_capability < 70) {
    why_not = "it needs compute capability 7.0 or newer";
  } else if (shared > device.max_shared_per_block) {
    why_not = "its corner table of offset_group*kh*kw = " + std::to_string(offset_group_taps) +
              " taps needs " + std::to_string(shared) + " bytes of shared memory, the device allows " +
              std::to_string(device.max_shared_per_block);
  }
  if (!why_not.empty()) {
    if (tensor_core_asked) {
      *message = node_error(kCallerName, "the tensor-core kernel cannot run this problem: " + why_not);
      return DCN_STATUS_UNSUPPORTED;
    }
    if (p->split_k > 1) {
      *message = node_error(kCallerName, "split_k > 1 needs the tensor-core kernel, which cannot run this problem: " +
                                             why_not);
      return DCN_STATUS_UNSUPPORTED;
    }
    return DCN_STATUS_OK;  // SIMT
  }
  if (p->algorithm == DCN_ALGORITHM_SIMT) {
    if (p->split_k > 1) {
      *message = node_error(kCallerName, "split_k > 1 needs the tensor-core kernel, not DCN_ALGORITHM_SIMT");
      return DCN_STATUS_UNSUPPORTED;
    }
    return DCN_STATUS_OK;
  }

  const bool channels_last = channels_last_fits(t) && (p->algorithm == DCN_ALGORITHM_TENSOR_CORE_NHWC ||
                                                       (p->algorithm == DCN_ALGORITHM_AUTO && kAutoChannelsLast));
  if (p->algorithm == DCN_ALGORITHM_TENSOR_CORE_NHWC && !channels_last) {
    *message = node_error(kCallerName, "the channels-last tensor-core kernel needs C/group and C/offset_group to be "
                                       "multiples of 8, got C/group = " + std::to_string(t.channels_per_group) +
                                           " and C/offset_group = " + std::to_string(t.channels_per_offset_group));
    return DCN_STATUS_UNSUPPORTED;
  }
  plan->algorithm = channels_last ? DCN_ALGORITHM_TENSOR_CORE_NHWC : DCN_ALGORITHM_TENSOR_CORE;
  plan->channels_last = channels_last;
  plan->block_kernel = true;
  return plan_block_grid(p, device, tile_m, tile_n, shared, plan, message);
}

// Limits of the current device.
// Limits of the current device, read once per device ordinal: a launch is on
// the hot path of every DCN layer, the attributes never change.
constexpr int kCachedDevices = 64;
struct CachedLimits {
  std::atomic<bool> ready{false};
  DeviceLimits limits{};
};
CachedLimits g_device_limits[kCachedDevices];

int query_device(DeviceLimits* device, std::string* message) {
  int ordinal = 0, sm_count = 0, major = 0, minor = 0, shared = 0;
  cudaError_t status = cudaGetDevice(&ordinal);
  const bool cacheable = status == cudaSuccess && ordinal >= 0 && ordinal < kCachedDevices;
  if (cacheable && g_device_limits[ordinal].ready.load(std::memory_order_acquire)) {
    *device = g_device_limits[ordinal].limits;
    return DCN_STATUS_OK;
  }
  if (status == cudaSuccess) status = cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, ordinal);
  if (status == cudaSuccess) status = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, ordinal);
  if (status == cudaSuccess) status = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, ordinal);
  if (status == cudaSuccess) {
    status = cudaDeviceGetAttribute(&shared, cudaDevAttrMaxSharedMemoryPerBlockOptin, ordinal);
  }
  if (status != cudaSuccess) {
    *message = node_error(kCallerName, std::string("kernel launch failed: ") + cudaGetErrorName(status) + ": " +
                                           cudaGetErrorString(status));
    return DCN_STATUS_CUDA_ERROR;
  }
  *device = DeviceLimits{sm_count, major * 10 + minor, static_cast<size_t>(shared)};
  if (cacheable) {  // Written once, under the lock; read only after `ready`.
    static std::mutex fill;
    const std::lock_guard<std::mutex> lock(fill);
    if (!g_device_limits[ordinal].ready.load(std::memory_order_relaxed)) {
      g_device_limits[ordinal].limits = *device;
      g_device_limits[ordinal].ready.store(true, std::memory_order_release);
    }
  }
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
  if (p->data_type == DCN_INT8 && b->output_scale == nullptr) missing += " output_scale (DCN_INT8 data)";
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
auto dispatch_types(DcnElementType data_type, DcnElementType offset_type, Args&&... args) {
  if (data_type == DCN_FLOAT32) {
    if (offset_type == DCN_FLOAT32) return Body::template run<float, float>(args...);
    return Body::template run<float, __half>(args...);
  }
  if (offset_type == DCN_FLOAT32) return Body::template run<__half, float>(args...);
  return Body::template run<__half, __half>(args...);
}

struct Launch {
  template <typename T, typename TOffset>
  static cudaError_t run(const LaunchPlan& plan, const DcnDeformConvBuffers& buffers, cudaStream_t stream) {
    deform_conv_tile_kernel<T, TOffset>
        <<<plan.grid, cuda_tile::kThreads, 0, stream>>>(plan.problem, typed_pointers<T, TOffset>(buffers));
    return cudaGetLastError();
  }
};

// Where the channels-last copies of X and W live in the workspace.
struct ChannelsLastCopies {
  __half* input;
  __half* weight;
};

ChannelsLastCopies channels_last_copies(const LaunchPlan& plan, void* workspace) {
  auto* base = static_cast<unsigned char*>(workspace);
  return {reinterpret_cast<__half*>(base), reinterpret_cast<__half*>(base + aligned_bytes(plan.input_elements))};
}

size_t channels_last_workspace(const LaunchPlan& plan) {
  return aligned_bytes(plan.input_elements) + aligned_bytes(plan.weight_elements);
}

// Launches deform_conv_mma_kernel<V>: opt-in shared memory and, with split-K,
// the thread-block cluster of the splits.
template <class V>
cudaError_t launch_blocks(const LaunchPlan& plan, const typename V::Tensors& tensors, cudaStream_t stream) {
  auto kernel = deform_conv_mma_kernel<V>;
  cudaError_t status = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(plan.shared_bytes));
  if (status != cudaSuccess) return status;
  cudaLaunchConfig_t config = {};
  config.gridDim = plan.grid;
  config.blockDim = dim3(cuda_mma::kThreads);
  config.dynamicSmemBytes = plan.shared_bytes;
  config.stream = stream;
  cudaLaunchAttribute cluster[1];
  if (plan.mma.splits > 1) {
    cluster[0].id = cudaLaunchAttributeClusterDimension;
    cluster[0].val.clusterDim.x = static_cast<unsigned>(plan.mma.splits);
    cluster[0].val.clusterDim.y = 1;
    cluster[0].val.clusterDim.z = 1;
    config.attrs = cluster;
    config.numAttrs = 1;
  }
  status = cudaLaunchKernelEx(&config, kernel, plan.mma, tensors);
  if (status != cudaSuccess) return status;
  return cudaGetLastError();
}

template <int TileM, typename TOffset>
cudaError_t launch_mma(const LaunchPlan& plan, const DcnDeformConvBuffers& buffers, void* workspace,
                       cudaStream_t stream) {
  TilePointers<__half, TOffset> tensors = typed_pointers<__half, TOffset>(buffers);
  if (!plan.channels_last) return launch_blocks<Fp16Variant<TileM, false, TOffset>>(plan, tensors, stream);
  const ChannelsLastCopies copies = channels_last_copies(plan, workspace);
  constexpr int kPassThreads = 256;
  const auto pass_blocks = [](size_t elements) {
    return static_cast<unsigned>(std::min<size_t>((elements + kPassThreads - 1) / kPassThreads, 65535 * 8));
  };
  const TileProblem& t = plan.problem;
  to_channels_last_kernel<<<pass_blocks(plan.input_elements), kPassThreads, 0, stream>>>(
      tensors.input, copies.input, static_cast<int64_t>(plan.input_elements), t.in_channels,
      static_cast<int64_t>(t.height) * t.width);
  to_tap_major_kernel<<<pass_blocks(plan.weight_elements), kPassThreads, 0, stream>>>(
      tensors.weight, copies.weight, static_cast<int64_t>(plan.weight_elements), t.channels_per_group,
      t.kernel_area);
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) return status;
  tensors.input = copies.input;
  tensors.weight = copies.weight;
  return launch_blocks<Fp16Variant<TileM, true, TOffset>>(plan, tensors, stream);
}

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

// Runs deform_conv_mma_kernel<V> on the CPU: the phases of each block for
// every thread (or warp) in turn, the blocks of a cluster side by side so
// that split-K reads the partial tiles of every rank.
template <class V>
void emulate_blocks(const LaunchPlan& plan, const typename V::Tensors& tensors) {
  using namespace cuda_mma;
  using C = typename V::C;
  using Partial = typename V::Partial;
  const MmaProblem& problem = plan.mma;
  const int ranks = problem.splits;
  // One shared memory per cluster rank, 128-byte aligned like the device's.
  std::vector<std::vector<float4>> shared(ranks, std::vector<float4>(plan.shared_bytes / sizeof(float4) + 8));
  std::vector<typename V::Accumulator> acc(kWarps);
  for (unsigned z = 0; z < plan.grid.z; ++z) {
    for (unsigned y = 0; y < plan.grid.y; ++y) {
      for (unsigned cluster_x = 0; cluster_x < plan.grid.x; cluster_x += ranks) {
        std::vector<const Partial*> tiles;
        for (int rank = 0; rank < ranks; ++rank) {
          auto* base = reinterpret_cast<unsigned char*>(shared[rank].data());
          base += (128 - reinterpret_cast<uintptr_t>(base) % 128) % 128;
          const typename V::Layout layout = V::layout(base, problem.offset_group_taps);
          tiles.push_back(layout.c);
          const MmaBlockIndex block{static_cast<int32_t>(cluster_x / ranks), rank, static_cast<int32_t>(y),
                                    static_cast<int32_t>(z)};
          for (int tid = 0; tid < kThreads; ++tid) build_corner_table<C>(problem, tensors, block, tid, layout);
          for (auto& warp_acc : acc) V::clear(warp_acc);
          int32_t k_begin, k_end;
          k_range_of_split(problem, rank, &k_begin, &k_end);
          if (k_begin < k_end) {
            for (int tid = 0; tid < kThreads; ++tid) V::load(problem, tensors, block, k_begin, k_end, tid, layout, 0);
            int stage = 0;
            for (int32_t k0 = k_begin; k0 < k_end; k0 += kTileK) {
              // The multiply reads this stage, the loads write the other: their
              // order within an iteration does not matter.
              for (int warp = 0; warp < kWarps; ++warp) V::multiply(layout, stage, warp, acc[warp]);
              if (k0 + kTileK < k_end) {
                for (int tid = 0; tid < kThreads; ++tid) {
                  V::load(problem, tensors, block, k0 + kTileK, k_end, tid, layout, stage ^ 1);
                }
              }
              stage ^= 1;
            }
          }
          for (int warp = 0; warp < kWarps; ++warp) V::store_accumulators(layout, warp, acc[warp]);
        }
        for (int rank = 0; rank < ranks; ++rank) {
          const MmaBlockIndex block{static_cast<int32_t>(cluster_x / ranks), rank, static_cast<int32_t>(y),
                                    static_cast<int32_t>(z)};
          int row_begin, row_end;
          rows_of_rank(C::kTileM, rank, ranks, &row_begin, &row_end);
          for (int tid = 0; tid < kThreads; ++tid) {
            V::store_outputs(problem, tensors, block, tid, tiles.data(), ranks, row_begin, row_end);
          }
        }
      }
    }
  }
}

template <int TileM, typename TOffset>
void emulate_mma(const LaunchPlan& plan, const DcnDeformConvBuffers& buffers) {
  using namespace cuda_mma;
  TilePointers<__half, TOffset> tensors = typed_pointers<__half, TOffset>(buffers);
  if (!plan.channels_last) return emulate_blocks<Fp16Variant<TileM, false, TOffset>>(plan, tensors);
  // The channels-last copies, made by the passes' element functions.
  std::vector<float4> workspace(channels_last_workspace(plan) / sizeof(float4) + 1);
  const ChannelsLastCopies copies = channels_last_copies(plan, workspace.data());
  const TileProblem& t = plan.problem;
  for (size_t e = 0; e < plan.input_elements; ++e) {
    to_channels_last(tensors.input, copies.input, static_cast<int64_t>(e), t.in_channels,
                     static_cast<int64_t>(t.height) * t.width);
  }
  for (size_t e = 0; e < plan.weight_elements; ++e) {
    to_tap_major(tensors.weight, copies.weight, static_cast<int64_t>(e), t.channels_per_group, t.kernel_area);
  }
  tensors.input = copies.input;
  tensors.weight = copies.weight;
  emulate_blocks<Fp16Variant<TileM, true, TOffset>>(plan, tensors);
}

struct LaunchMma {
  template <int TileM, typename TOffset>
  static cudaError_t run(const LaunchPlan& plan, const DcnDeformConvBuffers& buffers, void* workspace,
                         cudaStream_t stream) {
    return launch_mma<TileM, TOffset>(plan, buffers, workspace, stream);
  }
};

struct EmulateMma {
  template <int TileM, typename TOffset>
  static void run(const LaunchPlan& plan, const DcnDeformConvBuffers& buffers) {
    emulate_mma<TileM, TOffset>(plan, buffers);
  }
};

// Calls Body::template run<tile_m, TOffset>(args...) for the plan's tile and offset type.
template <typename Body, typename... Args>
auto dispatch_mma(const LaunchPlan& plan, DcnElementType offset_type, Args&&... args) {
  if (offset_type == DCN_FLOAT32) {
    if (plan.tile_m == 128) return Body::template run<128, float>(args...);
    if (plan.tile_m == 256) return Body::template run<256, float>(args...);
    return Body::template run<512, float>(args...);
  }
  if (plan.tile_m == 128) return Body::template run<128, __half>(args...);
  if (plan.tile_m == 256) return Body::template run<256, __half>(args...);
  return Body::template run<512, __half>(args...);
}

cuda_mma::Int8Pointers int8_pointers(const DcnDeformConvProblem& problem, const DcnDeformConvBuffers& b) {
  return cuda_mma::Int8Pointers{static_cast<const int8_t*>(b.input),  static_cast<const int8_t*>(b.weight),
                                static_cast<const float*>(b.offset),  static_cast<const float*>(b.mask),
                                static_cast<const float*>(b.bias),    static_cast<const float*>(b.output_scale),
                                problem.y_scale,                      b.output};
}

struct LaunchInt8 {
  template <class V>
  static cudaError_t run(const LaunchPlan& plan, const cuda_mma::Int8Pointers& tensors, cudaStream_t stream) {
    return launch_blocks<V>(plan, tensors, stream);
  }
};

struct EmulateInt8 {
  template <class V>
  static void run(const LaunchPlan& plan, const cuda_mma::Int8Pointers& tensors) {
    emulate_blocks<V>(plan, tensors);
  }
};

// Calls Body::template run<Int8Variant<tile_m, tensor cores>>(args...) for the plan.
template <typename Body, typename... Args>
auto dispatch_int8(const LaunchPlan& plan, Args&&... args) {
  const bool tensor_cores = plan.algorithm == DCN_ALGORITHM_TENSOR_CORE;
  if (plan.tile_m == 128) {
    return tensor_cores ? Body::template run<Int8Variant<128, true>>(args...)
                        : Body::template run<Int8Variant<128, false>>(args...);
  }
  if (plan.tile_m == 256) {
    return tensor_cores ? Body::template run<Int8Variant<256, true>>(args...)
                        : Body::template run<Int8Variant<256, false>>(args...);
  }
  return tensor_cores ? Body::template run<Int8Variant<512, true>>(args...)
                      : Body::template run<Int8Variant<512, false>>(args...);
}

// Validates, then plans the launch for `device`.
int plan_everything(const DcnDeformConvProblem* problem, const DcnDeformConvBuffers* buffers,
                    const DeviceLimits* device, LaunchPlan* plan, std::string* message) {
  int status = plan_launch(problem, plan, message);
  if (status == DCN_STATUS_OK && buffers != nullptr) status = check_buffers(problem, buffers, message);
  DeviceLimits current{};
  if (status == DCN_STATUS_OK && device == nullptr) {
    status = query_device(&current, message);
    device = &current;
  }
  if (status == DCN_STATUS_OK) status = plan_algorithm(problem, *device, plan, message);
  return status;
}

}  // namespace
}  // namespace dcn_deploy

using namespace dcn_deploy;

extern "C" int dcn_deform_conv_cuda_plan(const DcnDeformConvProblem* problem, int emulated, DcnLaunchInfo* info,
                                         char* error, size_t error_capacity) {
  LaunchPlan plan;
  std::string message;
  const int status = plan_everything(problem, nullptr, emulated ? &kEmulatedDevice : nullptr, &plan, &message);
  if (status != DCN_STATUS_OK) return report(status, message, error, error_capacity);
  if (info != nullptr) {
    info->algorithm = plan.algorithm;
    info->splits = plan.block_kernel ? plan.mma.splits : 1;
    info->grid[0] = plan.grid.x;
    info->grid[1] = plan.grid.y;
    info->grid[2] = plan.grid.z;
    info->threads = plan.block_kernel ? cuda_mma::kThreads : cuda_tile::kThreads;
    info->shared_bytes = plan.shared_bytes;
  }
  return DCN_STATUS_OK;
}

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

extern "C" size_t dcn_deform_conv_cuda_workspace_size(const DcnDeformConvProblem* problem) {
  // Device-independent: the channels-last variant's needs whenever the problem
  // asks for it (or AUTO would take it) and it fits; an unused workspace is harmless.
  LaunchPlan plan;
  std::string message;
  if (plan_launch(problem, &plan, &message) != DCN_STATUS_OK || problem->data_type != DCN_FLOAT16 ||
      !channels_last_fits(plan.problem)) {
    return 0;
  }
  const bool wanted = problem->algorithm == DCN_ALGORITHM_TENSOR_CORE_NHWC ||
                      (problem->algorithm == DCN_ALGORITHM_AUTO && kAutoChannelsLast);
  return wanted ? channels_last_workspace(plan) : 0;
}

extern "C" int dcn_deform_conv_cuda(const DcnDeformConvProblem* problem, const DcnDeformConvBuffers* buffers,
                                    void* workspace, void* stream, char* error, size_t error_capacity) {
  LaunchPlan plan;
  std::string message;
  if (buffers == nullptr) {
    return report(DCN_STATUS_INVALID_ARGUMENT, node_error(kCallerName, "buffers is NULL"), error, error_capacity);
  }
  const int status = plan_everything(problem, buffers, nullptr, &plan, &message);
  if (status != DCN_STATUS_OK) return report(status, message, error, error_capacity);
  if (plan.grid.x == 0 || plan.grid.y == 0 || plan.grid.z == 0) return DCN_STATUS_OK;

  if (plan.channels_last && workspace == nullptr) {
    return report(DCN_STATUS_INVALID_ARGUMENT,
                  node_error(kCallerName, "the channels-last tensor-core kernel needs a workspace of " +
                                              std::to_string(channels_last_workspace(plan)) +
                                              " bytes (dcn_deform_conv_cuda_workspace_size), got NULL"),
                  error, error_capacity);
  }
  const auto cuda_stream = static_cast<cudaStream_t>(stream);
  cudaError_t launch;
  if (problem->data_type == DCN_INT8) {
    launch = dispatch_int8<LaunchInt8>(plan, plan, int8_pointers(*problem, *buffers), cuda_stream);
  } else if (plan.block_kernel) {
    launch = dispatch_mma<LaunchMma>(plan, problem->offset_type, plan, *buffers, workspace, cuda_stream);
  } else {
    launch = dispatch_types<Launch>(problem->data_type, problem->offset_type, plan, *buffers, cuda_stream);
  }
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
  if (buffers == nullptr) {
    return report(DCN_STATUS_INVALID_ARGUMENT, node_error(kCallerName, "buffers is NULL"), error, error_capacity);
  }
  const int status = plan_everything(problem, buffers, &kEmulatedDevice, &plan, &message);
  if (status != DCN_STATUS_OK) return report(status, message, error, error_capacity);
  if (plan.grid.x == 0 || plan.grid.y == 0 || plan.grid.z == 0) return DCN_STATUS_OK;
  if (problem->data_type == DCN_INT8) {
    dispatch_int8<EmulateInt8>(plan, plan, int8_pointers(*problem, *buffers));
  } else if (plan.block_kernel) {
    dispatch_mma<EmulateMma>(plan, problem->offset_type, plan, *buffers);
  } else {
    dispatch_types<Emulate>(problem->data_type, problem->offset_type, plan, *buffers);
  }
  return DCN_STATUS_OK;
}
