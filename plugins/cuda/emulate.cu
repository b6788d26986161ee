#include "cuda/emulate.h"

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "cuda/dispatch.cuh"

namespace dcn_deploy::cuda {
namespace {

using cuda_tile::BlockIndex;
using cuda_tile::SharedTiles;

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

template <class V>
void emulate_mma(const LaunchPlan& plan, const DcnDeformConvBuffers& buffers) {
  using namespace cuda_mma;
  using TOffset = std::remove_cv_t<std::remove_pointer_t<decltype(V::Tensors::offset)>>;
  typename V::Tensors tensors = typed_pointers<__half, TOffset>(buffers);
  if (plan.gather != Gather::kWorkspaceNhwc) return emulate_blocks<V>(plan, tensors);
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
  emulate_blocks<V>(plan, tensors);
}

struct EmulateMma {
  template <class V>
  static void run(const LaunchPlan& plan, const DcnDeformConvBuffers& buffers) {
    emulate_mma<V>(plan, buffers);
  }
};

struct EmulateInt8 {
  template <class V>
  static void run(const LaunchPlan& plan, const cuda_mma::Int8Pointers& tensors) {
    emulate_blocks<V>(plan, tensors);
  }
};

}  // namespace

void emulate_on_host(const LaunchPlan& plan, const Problem& problem, const DcnDeformConvBuffers& buffers) {
  if (problem.data_type == DCN_INT8) {
    dispatch_int8<EmulateInt8>(plan, plan, int8_pointers(problem, buffers));
  } else if (plan.block_kernel) {
    dispatch_mma<EmulateMma>(plan, problem.offset_type, plan, buffers);
  } else {
    dispatch_types<Emulate>(problem.data_type, problem.offset_type, plan, buffers);
  }
}

}  // namespace dcn_deploy::cuda
