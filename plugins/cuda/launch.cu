#include "cuda/launch.h"

#include <algorithm>
#include <type_traits>

#include "cuda/dispatch.cuh"

namespace dcn_deploy::cuda {
namespace {

using cuda_tile::BlockIndex;
using cuda_tile::SharedTiles;

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

// The block kernel: see kernels/mma.cuh for the phases.
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

// The float16 block kernel; kWorkspaceNhwc first copies X to NHWC and W to
// tap-major order into `workspace`.
template <class V>
cudaError_t launch_mma(const LaunchPlan& plan, const DcnDeformConvBuffers& buffers, void* workspace,
                       cudaStream_t stream) {
  using TOffset = std::remove_cv_t<std::remove_pointer_t<decltype(V::Tensors::offset)>>;
  typename V::Tensors tensors = typed_pointers<__half, TOffset>(buffers);
  if (plan.gather == cuda_mma::Gather::kWorkspaceNhwc) {
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
  }
  return launch_blocks<V>(plan, tensors, stream);
}

struct Launch {
  template <typename T, typename TOffset>
  static cudaError_t run(const LaunchPlan& plan, const DcnDeformConvBuffers& buffers, cudaStream_t stream) {
    deform_conv_tile_kernel<T, TOffset>
        <<<plan.grid, cuda_tile::kThreads, 0, stream>>>(plan.problem, typed_pointers<T, TOffset>(buffers));
    return cudaGetLastError();
  }
};

struct LaunchMma {
  template <class V>
  static cudaError_t run(const LaunchPlan& plan, const DcnDeformConvBuffers& buffers, void* workspace,
                         cudaStream_t stream) {
    return launch_mma<V>(plan, buffers, workspace, stream);
  }
};

struct LaunchInt8 {
  template <class V>
  static cudaError_t run(const LaunchPlan& plan, const cuda_mma::Int8Pointers& tensors, cudaStream_t stream) {
    return launch_blocks<V>(plan, tensors, stream);
  }
};

}  // namespace

cudaError_t launch_on_device(const LaunchPlan& plan, const Problem& problem, const DcnDeformConvBuffers& buffers,
                             void* workspace, cudaStream_t stream) {
  if (problem.data_type == DCN_INT8) {
    return dispatch_int8<LaunchInt8>(plan, plan, int8_pointers(problem, buffers), stream);
  }
  if (plan.block_kernel) {
    return dispatch_mma<LaunchMma>(plan, problem.offset_type, plan, buffers, workspace, stream);
  }
  return dispatch_types<Launch>(problem.data_type, problem.offset_type, plan, buffers, stream);
}

}  // namespace dcn_deploy::cuda
