// The variants of the block kernel (kernels/mma.cuh): one body, run by
// deform_conv_mma_kernel on the GPU (launch.cu) and block by block on the CPU
// (emulate.cu), over a variant V that supplies the phases whose element types
// differ. Shared here so the emulator runs exactly the device's phases.
#pragma once

#include "cuda/kernels/int8.cuh"
#include "cuda/kernels/mma.cuh"
#include "cuda/kernels/tile.cuh"

namespace dcn_deploy {

using cuda_tile::TilePointers;

using cuda_mma::Gather;

template <class C, Gather G, typename TOffset>
__host__ __device__ inline void load_any_slice(const cuda_mma::MmaProblem& problem,
                                               const TilePointers<__half, TOffset>& tensors,
                                               cuda_mma::MmaBlockIndex block, int32_t k0, int32_t k_end, int tid,
                                               const cuda_mma::SharedLayout& layout, int stage) {
  if constexpr (G == Gather::kPlanar) {
    cuda_mma::load_slice<C>(problem, tensors, block, k0, k_end, tid, layout, stage);
  } else {
    cuda_mma::load_slice_channels_last<C, G == Gather::kNhwc>(problem, tensors, block, k0, k_end, tid, layout, stage);
  }
}

// What a variant supplies:
//   C, Tensors, Layout, Accumulator, Partial (element of the epilogue tile),
//   layout(), load(), clear(), multiply(), store_accumulators(), store_outputs().

// Float16 X/W/B/Y, float32 accumulation. kWorkspaceNhwc: `tensors.input` /
// `tensors.weight` are the workspace copies of X (NHWC) and W (tap-major)
// made by the two passes of launch.cu / emulate.cu.
template <int TileM, Gather G, typename TOffset>
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
    load_any_slice<C, G>(problem, tensors, block, k0, k_end, tid, layout, stage);
  }
  static DCN_HOST_DEVICE void clear(Accumulator& acc) { cuda_mma::clear_accumulator(acc); }
  static DCN_HOST_DEVICE void multiply(const Layout& layout, int stage, int warp, Accumulator& acc) {
    cuda_mma::mma_slice<C, G != Gather::kPlanar>(layout, stage, warp, acc);
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

// INT8 (kernels/int8.cuh): int8 slices, exact int32 accumulation on
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

}  // namespace dcn_deploy
