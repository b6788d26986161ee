// The INT8 deformable-convolution kernel (definition: dcn_deploy/op/int8.py):
// int8 X and W, float32 offset/mask/bias, exact int32 accumulation, float32 Y
// or requantized int8 Yq. It is the tensor-core kernel of kernels/mma.cuh
// with other slice contents: the same block tiles (128x128, 256x64, 512x32),
// the same corner table (build_corner_table), the same two-stage K loop and
// the same split-K over a thread-block cluster; the kernel body, the launch
// and the CPU emulator's driver are shared (launch.cu, emulate.cu). What this
// file adds are the phases whose element types differ:
//
//   load_int8_slice       W slice (int8, 16-byte chunks) and the requantized
//                         samples vq = int8_sample(plane, folded corners) of
//                         the S slice, stored as int8
//   int8_mma_slice        acc += W x S in int32: WMMA s8 16x16x16 (IMMA) when
//                         TensorCores and sm_72+, else __dp4a (SIMT)
//   store_int8_outputs    sum of the partial int32 tiles, then int8_output
//                         (Y) and, when y_scale > 0, int8_requantize (Yq)
//
// Every float operation is one of core/math.h's INT8 functions
// (sample_corners, fold_mask, int8_sample, int8_output, int8_requantize) and
// the integer sums are exact in any order, so the GPU (IMMA or dp4a, any
// split-K), the emulator, the CPU kernel and the PyTorch reference agree to
// the bit.
//
// Slice layouts (bytes), chunked by 16 along K so that every 16x16 int8 WMMA
// fragment is 256 contiguous, 32-byte aligned bytes (WMMA's alignment rule;
// a padded row pitch would misalign the second K chunk of a row):
//   a[stage]: [kTileK / 16][kTileM][16]  W rows m, K chunk columns
//   b[stage]: [kTileK / 16][kTileN][16]  S columns n (pixels), K chunk rows
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__CUDA_ARCH__)
#include <mma.h>
#endif

#include "core/math.h"
#include "cuda/kernels/mma.cuh"

// Integer tensor-core WMMA (s8 x s8 -> s32) exists from sm_72 on.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 720
#define DCN_DEPLOY_HAS_IMMA 1
#else
#define DCN_DEPLOY_HAS_IMMA 0
#endif

namespace dcn_deploy {
namespace cuda_mma {

// Device pointers of the INT8 kernel.
struct Int8Pointers {
  const int8_t* input;         // Xq [N, C, H, W]
  const int8_t* weight;        // Wq [M, C/group, kh, kw]
  const float* offset;         // [N, 2*offset_group*kh*kw, Ho, Wo]
  const float* mask;           // [N, offset_group*kh*kw, Ho, Wo] or null
  const float* bias;           // [M] or null
  const float* output_scale;   // [M]: float32(x_scale * w_scale[o])
  float y_scale;               // > 0: int8 Yq; 0: float32 Y
  void* output;                // Y (float) or Yq (int8) [N, M, Ho, Wo]
};

using Int8Layout = SharedLayoutOf<int8_t, int32_t>;

constexpr int kInt8Chunk = 16;  // K bytes per chunk (one 16-byte vector; WMMA s8 k = 16)
constexpr int kInt8Chunks = kTileK / kInt8Chunk;
static_assert(kTileK % kInt8Chunk == 0, "K slices hold whole chunks");

// The float16 kernel's block and warp tiles with int8 slices and int32 partial sums.
template <int TileM>
struct Int8Config : Config<TileM> {
  using Base = Config<TileM>;
  static constexpr size_t kSliceABytes = round_up(size_t{TileM} * kTileK, 128);
  static constexpr size_t kSliceBBytes = round_up(size_t{Base::kTileN} * kTileK, 128);
  static constexpr size_t kStageBytes = kSliceABytes + kSliceBBytes;
  static constexpr size_t kEpilogueBytes = size_t{TileM} * Base::kPitchC * sizeof(int32_t);
  static constexpr int kBRows = kTileK * Base::kTileN / kThreads;              // S rows (k) a thread samples: 16, 8, 4
  static constexpr int kBStoreBytes = kBRows >= kInt8Chunk ? kInt8Chunk : kBRows;  // one shared store
  static constexpr int kAChunks = TileM * kInt8Chunks / kThreads;             // 16-byte W chunks per thread
  static_assert((kBRows == 4 || kBRows % 8 == 0) && kAChunks >= 1, "thread shares: whole 4-, 8- or 16-byte stores");
  static_assert((kFragment * Base::kPitchC * 4) % 32 == 0, "WMMA int32 tile pointers stay 32-byte aligned");

  static DCN_HOST_DEVICE size_t shared_bytes(int32_t offset_group_taps) {
    const size_t table = static_cast<size_t>(offset_group_taps) * Base::kTileN * (sizeof(int4) + sizeof(float4));
    return max_size(2 * kStageBytes + table, kEpilogueBytes);
  }
};

// Byte `j` of a little-endian word (both the host and the GPU are), and its inverse.
DCN_HOST_DEVICE inline int8_t byte_of_word(uint32_t word, int j) { return static_cast<int8_t>((word >> (8 * j)) & 0xffu); }
DCN_HOST_DEVICE inline uint32_t word_byte(int8_t value, int j) {
  return static_cast<uint32_t>(static_cast<uint8_t>(value)) << (8 * j);
}

// True when every W row starts 16-byte aligned (K % 16 == 0, aligned base).
DCN_HOST_DEVICE inline bool vector_int8_weights(const MmaProblem& mp, const Int8Pointers& t) {
  return mp.base.reduction % kInt8Chunk == 0 && reinterpret_cast<uintptr_t>(t.weight) % 16 == 0;
}

// Phase 2: thread `tid` writes its share of the W and S slices of K range
// [k0, min(k0 + kTileK, k_end)) into `stage`; rows and columns outside the
// problem are zero, so the multiply needs no bounds checks.
template <class C>
DCN_HOST_DEVICE inline void load_int8_slice(const MmaProblem& mp, const Int8Pointers& t, MmaBlockIndex block,
                                            int32_t k0, int32_t k_end, int tid, const Int8Layout& layout,
                                            int stage) {
  const TileProblem& p = mp.base;
  const int32_t image = block.image_group / p.group;
  const int32_t group = block.image_group - image * p.group;

  // W: consecutive threads read consecutive 16-byte chunks of a row (coalesced).
  int8_t* a = layout.a[stage];
  const int64_t first_w_row = static_cast<int64_t>(group) * p.out_channels_per_group;
  const bool vector = vector_int8_weights(mp, t);
  for (int load = 0; load < C::kAChunks; ++load) {
    const int element = tid + load * kThreads;
    const int chunk = element % kInt8Chunks;
    const int mm = element / kInt8Chunks;
    const int32_t m = block.channel_tile * C::kTileM + mm;
    const int32_t k = k0 + chunk * kInt8Chunk;
    const int8_t* row = t.weight + (first_w_row + m) * p.reduction;
    uint4 words = make_uint4(0, 0, 0, 0);
    if (m < p.out_channels_per_group && k < k_end) {
      if (vector) {  // k_end % 16 == 0 here: whole chunks
        words = load_readonly(reinterpret_cast<const uint4*>(row + k));
      } else {
        uint32_t packed[4] = {0, 0, 0, 0};
        for (int j = 0; j < kInt8Chunk; ++j) {
          if (k + j < k_end) packed[j / 4] |= word_byte(load_readonly(row + k + j), j % 4);
        }
        words = make_uint4(packed[0], packed[1], packed[2], packed[3]);
      }
    }
    *reinterpret_cast<uint4*>(a + (chunk * C::kTileM + mm) * kInt8Chunk) = words;
  }

  // S: a thread owns one pixel column n and kBRows consecutive rows k (16, 8
  // or 4 by tile: one 16-, 8- or 4-byte store), walking (channel, tap) with
  // the float16 kernel's SampleWalk; a sample costs two shared loads, four gathers
  // of one byte and the fixed-order float32 sum of int8_sample.
  int8_t* b = layout.b[stage];
  const int n = tid % C::kTileN;
  const int first_row = (tid / C::kTileN) * C::kBRows;
  const bool pixel_inside = block.pixel_tile * C::kTileN + n < p.out_pixels;
  const int32_t first_k = k0 + first_row;
  SampleWalk<C, int8_t> walk(p, t.input, layout.corner_index, layout.corner_weight, image, group, first_k, n);
  uint32_t words[C::kBRows / 4] = {};
#if defined(__CUDA_ARCH__)
#pragma unroll 4
#endif
  for (int row = 0; row < C::kBRows; ++row) {
    if (first_k + row < k_end && pixel_inside) {
      words[row / 4] |= word_byte(int8_sample(walk.plane, walk.corners()), row % 4);
    }
    walk.next();
  }
  for (int part = 0; part < C::kBRows / C::kBStoreBytes; ++part) {
    const int row = first_row + part * C::kBStoreBytes;
    int8_t* target = b + ((row / kInt8Chunk) * C::kTileN + n) * kInt8Chunk + row % kInt8Chunk;
    const uint32_t* w = words + part * (C::kBStoreBytes / 4);
    if constexpr (C::kBStoreBytes == 16) {
      *reinterpret_cast<uint4*>(target) = make_uint4(w[0], w[1], w[2], w[3]);
    } else if constexpr (C::kBStoreBytes == 8) {
      *reinterpret_cast<uint2*>(target) = make_uint2(w[0], w[1]);
    } else {
      *reinterpret_cast<uint32_t*>(target) = w[0];
    }
  }
}

// One warp's 64 x 32 int32 accumulators. GPU: IMMA fragments, or with dp4a
// one column (pixel col0 + lane) of 64 rows per lane. Emulator: the whole
// warp tile, indexed [column][row] like the dp4a lanes.
template <bool TensorCores>
struct Int8WarpAccumulator {
#if defined(__CUDA_ARCH__)
#if DCN_DEPLOY_HAS_IMMA
  static constexpr bool kImma = TensorCores;
#else
  static constexpr bool kImma = false;  // sm_70: no integer tensor cores; dp4a instead
#endif
  struct Fragments {
#if DCN_DEPLOY_HAS_IMMA
    nvcuda::wmma::fragment<nvcuda::wmma::accumulator, kFragment, kFragment, kFragment, int> fragment[kFragmentsM]
                                                                                                  [kFragmentsN];
#endif
  };
  struct Lane {
    int32_t value[kWarpTileM];
  };
  std::conditional_t<kImma, Fragments, Lane> tile;
#else
  int32_t value[kWarpTileN][kWarpTileM];
#endif
};

template <bool TensorCores>
DCN_HOST_DEVICE inline void clear_int8_accumulator(Int8WarpAccumulator<TensorCores>& acc) {
#if defined(__CUDA_ARCH__)
  if constexpr (Int8WarpAccumulator<TensorCores>::kImma) {
#if DCN_DEPLOY_HAS_IMMA
    for (int i = 0; i < kFragmentsM; ++i) {
      for (int j = 0; j < kFragmentsN; ++j) nvcuda::wmma::fill_fragment(acc.tile.fragment[i][j], 0);
    }
#endif
  } else {
    for (int32_t& value : acc.tile.value) value = 0;
  }
#else
  for (auto& column : acc.value) {
    for (int32_t& value : column) value = 0;
  }
#endif
}

// sum_j a.byte[j] * b.byte[j] + c over the four signed bytes of two words.
DCN_HOST_DEVICE inline int32_t dot4(uint32_t a, uint32_t b, int32_t c) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 610
  return __dp4a(static_cast<int>(a), static_cast<int>(b), c);
#else
  for (int j = 0; j < 4; ++j) c += static_cast<int32_t>(byte_of_word(a, j)) * byte_of_word(b, j);
  return c;
#endif
}

// The dp4a multiply of one lane: column col0 + lane of the warp tile, all 64
// rows. The S chunk of the column is one 16-byte shared load (consecutive
// lanes, consecutive chunks); each W chunk is a load every lane shares.
template <class C>
DCN_HOST_DEVICE inline void dp4a_lane_slice(const Int8Layout& layout, int stage, int row0, int col0, int lane,
                                            int32_t (&column)[kWarpTileM]) {
  const int8_t* a = layout.a[stage];
  const int8_t* b = layout.b[stage];
  for (int chunk = 0; chunk < kInt8Chunks; ++chunk) {
    const uint4 s = *reinterpret_cast<const uint4*>(b + (chunk * C::kTileN + col0 + lane) * kInt8Chunk);
#if defined(__CUDA_ARCH__)
#pragma unroll 8
#endif
    for (int i = 0; i < kWarpTileM; ++i) {
      const uint4 w = *reinterpret_cast<const uint4*>(a + (chunk * C::kTileM + row0 + i) * kInt8Chunk);
      column[i] = dot4(w.w, s.w, dot4(w.z, s.z, dot4(w.y, s.y, dot4(w.x, s.x, column[i]))));
    }
  }
}

// Phase 3 (per warp): acc += W slice rows of the warp x S slice columns of the warp.
template <class C, bool TensorCores>
DCN_HOST_DEVICE inline void int8_mma_slice(const Int8Layout& layout, int stage, int warp,
                                           Int8WarpAccumulator<TensorCores>& acc) {
  const int row0 = (warp / C::kWarpsN) * kWarpTileM;
  const int col0 = (warp % C::kWarpsN) * kWarpTileN;
#if defined(__CUDA_ARCH__)
  if constexpr (Int8WarpAccumulator<TensorCores>::kImma) {
#if DCN_DEPLOY_HAS_IMMA
    using namespace nvcuda;
#pragma unroll 1
    for (int chunk = 0; chunk < kInt8Chunks; ++chunk) {
      const signed char* a = reinterpret_cast<const signed char*>(layout.a[stage]) + chunk * C::kTileM * kInt8Chunk;
      const signed char* b = reinterpret_cast<const signed char*>(layout.b[stage]) + chunk * C::kTileN * kInt8Chunk;
      wmma::fragment<wmma::matrix_b, kFragment, kFragment, kFragment, signed char, wmma::col_major> b_frag[kFragmentsN];
#pragma unroll
      for (int j = 0; j < kFragmentsN; ++j) {
        wmma::load_matrix_sync(b_frag[j], b + (col0 + j * kFragment) * kInt8Chunk, kInt8Chunk);
      }
#pragma unroll
      for (int i = 0; i < kFragmentsM; ++i) {
        wmma::fragment<wmma::matrix_a, kFragment, kFragment, kFragment, signed char, wmma::row_major> a_frag;
        wmma::load_matrix_sync(a_frag, a + (row0 + i * kFragment) * kInt8Chunk, kInt8Chunk);
#pragma unroll
        for (int j = 0; j < kFragmentsN; ++j) {
          wmma::mma_sync(acc.tile.fragment[i][j], a_frag, b_frag[j], acc.tile.fragment[i][j]);
        }
      }
    }
#endif
  } else {
    dp4a_lane_slice<C>(layout, stage, row0, col0, static_cast<int>(threadIdx.x) % kWarpSize, acc.tile.value);
  }
#else
  if constexpr (TensorCores) {
    // The IMMA product is the exact integer sum; the emulator forms it directly.
    for (int j = 0; j < kWarpTileN; ++j) {
      for (int i = 0; i < kWarpTileM; ++i) {
        int32_t sum = acc.value[j][i];
        for (int kk = 0; kk < kTileK; ++kk) {
          const int chunk = kk / kInt8Chunk;
          const int byte = kk % kInt8Chunk;
          sum += static_cast<int32_t>(layout.a[stage][(chunk * C::kTileM + row0 + i) * kInt8Chunk + byte]) *
                 layout.b[stage][(chunk * C::kTileN + col0 + j) * kInt8Chunk + byte];
        }
        acc.value[j][i] = sum;
      }
    }
  } else {
    for (int lane = 0; lane < kWarpSize; ++lane) dp4a_lane_slice<C>(layout, stage, row0, col0, lane, acc.value[lane]);
  }
#endif
}

// Phase 4 (per warp): the warp's accumulators into the block's int32 tile.
template <class C, bool TensorCores>
DCN_HOST_DEVICE inline void store_int8_accumulators(const Int8Layout& layout, int warp,
                                                    const Int8WarpAccumulator<TensorCores>& acc) {
  const int row0 = (warp / C::kWarpsN) * kWarpTileM;
  const int col0 = (warp % C::kWarpsN) * kWarpTileN;
#if defined(__CUDA_ARCH__)
  if constexpr (Int8WarpAccumulator<TensorCores>::kImma) {
#if DCN_DEPLOY_HAS_IMMA
#pragma unroll
    for (int i = 0; i < kFragmentsM; ++i) {
#pragma unroll
      for (int j = 0; j < kFragmentsN; ++j) {
        nvcuda::wmma::store_matrix_sync(layout.c + (row0 + i * kFragment) * C::kPitchC + col0 + j * kFragment,
                                        acc.tile.fragment[i][j], C::kPitchC, nvcuda::wmma::mem_row_major);
      }
    }
#endif
  } else {
    const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
#pragma unroll
    for (int i = 0; i < kWarpTileM; ++i) layout.c[(row0 + i) * C::kPitchC + col0 + lane] = acc.tile.value[i];
  }
#else
  for (int j = 0; j < kWarpTileN; ++j) {
    for (int i = 0; i < kWarpTileM; ++i) layout.c[(row0 + i) * C::kPitchC + col0 + j] = acc.value[j][i];
  }
#endif
}

// Phase 5: rows [row_begin, row_end) of the output tile: the exact sum of the
// `ranks` partial tiles (one without split-K), then Y = int8_output(acc,
// output_scale, bias) and, for int8 output, Yq = int8_requantize(Y, y_scale).
template <class C>
DCN_HOST_DEVICE inline void store_int8_outputs(const MmaProblem& mp, const Int8Pointers& t, MmaBlockIndex block,
                                               int tid, const int32_t* const* partial_tiles, int ranks,
                                               int row_begin, int row_end) {
  const bool has_bias = mp.base.has_bias;
  reduce_tile_outputs<C>(mp, block, tid, partial_tiles, ranks, row_begin, row_end,
                         [&](int32_t channel, int64_t index, int32_t sum) {
                           const float y = int8_output(sum, t.output_scale[channel], has_bias ? t.bias[channel] : 0.0f);
                           if (t.y_scale > 0.0f) {
                             static_cast<int8_t*>(t.output)[index] = int8_requantize(y, t.y_scale);
                           } else {
                             static_cast<float*>(t.output)[index] = y;
                           }
                         });
  zero_padding_outputs<C>(mp, block, tid, row_begin, [&](int64_t index) {
    if (t.y_scale > 0.0f) {
      static_cast<int8_t*>(t.output)[index] = 0;
    } else {
      static_cast<float*>(t.output)[index] = 0.0f;
    }
  });
}

}  // namespace cuda_mma
}  // namespace dcn_deploy
