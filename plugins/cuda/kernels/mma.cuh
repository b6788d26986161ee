// The tensor-core deformable-convolution kernel (float16 X/W/B/Y), written
// like kernels/tile.cuh as block phases in __host__ __device__ functions
// so that the CPU emulator runs the kernel's own tiling and indexing:
//
//   build_corner_table (every thread)                        -> barrier
//   load_slice (first K slice, stage 0)                      -> barrier
//   per K slice:  mma_slice (this slice, this stage)      }  (warps run ahead
//                 load_slice (next slice, other stage)    }   of each other)
//                                                            -> barrier
//   store_accumulators (per warp)                            -> barrier
//   store_outputs (every thread; with split-K, each block of a thread-block
//                  cluster reduces its share of rows over the cluster's
//                  shared memories)
//
// GEMM per (image, weight group): Y[m][p] = sum_k W[m][k] * S[k][p] + B[m],
// k = c * kh*kw + tap, as in the SIMT kernel. What differs:
//   * A block owns all output channels of its pixels (up to 512; tiles of
//     kTileM x kTileN = 128x128, 256x64 or 512x32, one float32 accumulator
//     set of 64 values per thread), so each deformed sample S[k][p] is
//     computed once, not once per channel tile.
//   * The bilinear corners (4 plane indices, 4 weights with the mask folded
//     in) of every (offset group, tap, pixel) of the block are computed once
//     into shared memory: sampling S costs two 16-byte shared loads, four
//     read-only gathers and four FMAs; offsets and mask are read once per block.
//   * S slices are rounded to float16 once and multiplied on tensor cores
//     (WMMA 16x16x16, float32 accumulation). Coordinates, bilinear weights, the
//     mask product and the accumulation stay float32; the sample is rounded to
//     float16 once, where a float16 im2col buffer (TensorRT's built-in plugin,
//     torchvision in half) rounds it too.
//   * Two shared-memory stages, one barrier per K slice.
//   * Split-K for small grids (batch 1) without a workspace: on sm_90 the K
//     range is split over the blocks of a thread-block cluster and the partial
//     tiles are summed through distributed shared memory.
#pragma once

#include <cuda_fp16.h>
#include <vector_types.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

#if defined(__CUDA_ARCH__)
#include <mma.h>
#if __CUDA_ARCH__ >= 900
#include <cooperative_groups.h>
#endif
#endif

#include "core/math.h"
#include "cuda/kernels/tile.cuh"

namespace dcn_deploy {
namespace cuda_mma {

using cuda_tile::TilePointers;
using cuda_tile::TileProblem;

constexpr int kThreads = 256;
constexpr int kWarpSize = 32;
constexpr int kWarps = kThreads / kWarpSize;
constexpr int kMinBlocksPerSm = 2;  // caps registers at 128 per thread
constexpr int kTileK = 32;          // reduction slice per stage
constexpr int kFragment = 16;       // WMMA m16n16k16
constexpr int kWarpTileM = 64;      // each warp: 64 channels x 32 pixels, 4 x 2 fragments
constexpr int kWarpTileN = 32;
constexpr int kFragmentsM = kWarpTileM / kFragment;
constexpr int kFragmentsN = kWarpTileN / kFragment;
constexpr int kAccumulators = kWarpTileM * kWarpTileN / kWarpSize;  // per thread
constexpr int kMaxSplits = 8;       // portable thread-block cluster size
constexpr int kPitchA = kTileK + 8;   // halves; padding against bank conflicts
constexpr int kPitchBT = kTileK + 8;  // halves: row pitch of the column-major S slice (channels-last variant)
constexpr int kChannelVector = 8;     // channels-last variant: channels per 16-byte gather
constexpr int kMaxTileM = 512;

// How the float16 block kernel gathers X (LaunchPlan::gather):
//   kPlanar          one channel per gather, K = c * kh*kw + tap, from X in any
//                    layout (SampleWalk; bitwise the planar result)
//   kWorkspaceNhwc   8 channels per 16-byte gather from the workspace's NHWC
//                    copy of a planar X, W from its tap-major copy
//   kNhwc            8 channels per 16-byte gather from an NHWC X in place,
//                    W read from the caller's planar W; no workspace
enum class Gather { kPlanar, kWorkspaceNhwc, kNhwc };

inline DCN_HOST_DEVICE constexpr size_t max_size(size_t a, size_t b) { return a > b ? a : b; }
inline DCN_HOST_DEVICE constexpr size_t round_up(size_t value, size_t to) { return (value + to - 1) / to * to; }

// Block tile kTileM x kTileN with the same 64 accumulators per thread.
template <int TileM>
struct Config {
  static constexpr int kTileM = TileM;
  static constexpr int kTileN = kWarps * kWarpTileM * kWarpTileN / TileM;
  static constexpr int kWarpsN = kTileN / kWarpTileN;
  static_assert((TileM / kWarpTileM) * kWarpsN == kWarps, "warp grid");
  static constexpr int kPitchB = kTileN + 8;  // halves
  static constexpr int kPitchC = kTileN + 4;  // floats
  static_assert((kFragment * kPitchA * 2) % 32 == 0 && (kFragment * kPitchB * 2) % 32 == 0 &&
                    (kFragment * kPitchC * 4) % 32 == 0,
                "WMMA tile pointers must stay 32-byte aligned");
  static constexpr size_t kSliceABytes = round_up(size_t{kTileM} * kPitchA * 2, 128);
  // S slice as [kTileK][kPitchB] (planar variant) or [kTileN][kPitchBT] (channels-last variant).
  static constexpr size_t kSliceBBytes =
      round_up(max_size(size_t{kTileK} * kPitchB * 2, size_t{kTileN} * (kTileK + 8) * 2), 128);
  static constexpr size_t kStageBytes = kSliceABytes + kSliceBBytes;
  static constexpr size_t kEpilogueBytes = size_t{kTileM} * kPitchC * 4;
  static constexpr int kBRows = kTileK * kTileN / kThreads;            // S rows a thread samples
  static constexpr int kAVectors = kTileM * kTileK / 8 / kThreads;     // 16-byte W loads per thread
  static constexpr int kAScalars = kTileM * kTileK / kThreads;         // 2-byte W loads (fallback)
  static_assert(kBRows >= 1 && kAVectors >= 1, "thread shares");

  // Shared memory of a block: two stages and the corner table of
  // offset_group_taps * kTileN entries; the epilogue's float tile reuses it.
  static DCN_HOST_DEVICE size_t shared_bytes(int32_t offset_group_taps) {
    const size_t table = static_cast<size_t>(offset_group_taps) * kTileN * (sizeof(int4) + sizeof(float4));
    return max_size(2 * kStageBytes + table, kEpilogueBytes);
  }
};

// Problem constants: the SIMT kernel's, plus the split of K.
struct MmaProblem {
  TileProblem base;
  int32_t offset_group_taps;  // offset_group * kh*kw
  int32_t splits;             // blocks (cluster ranks) sharing one output tile
  int32_t k_per_split;        // multiple of kTileK
};

// Grid: x = pixel tile * splits + split, y = output-channel tile, z = image * group + g (g: the weight group).
struct MmaBlockIndex {
  int32_t pixel_tile, split, channel_tile, image_group;
};

// Shared memory of a block: two stages of W and S slices (elements of type
// TElement), the corner table, and the epilogue's tile of partial sums
// (TPartial) over all of it. The INT8 kernel (kernels/int8.cuh) uses
// SharedLayoutOf<int8_t, int32_t> with its own slice layouts.
template <typename TElement, typename TPartial>
struct SharedLayoutOf {
  using Element = TElement;
  using Partial = TPartial;
  TElement* a[2];  // float16: [kTileM][kPitchA]: W slice, row m, column kk
  TElement* b[2];  // float16: S slice [kTileK][kPitchB] (row kk, column n); channels-last variant [kTileN][kPitchBT]
  TPartial* c;     // [kTileM][kPitchC]: accumulators for the epilogue (aliases everything)
  int4* corner_index;     // [offset_group_taps][kTileN]
  float4* corner_weight;  // [offset_group_taps][kTileN]
};
using SharedLayout = SharedLayoutOf<__half, float>;

// C gives kStageBytes and kSliceABytes (the stage layout) and kTileN.
template <class C, class Layout = SharedLayout>
DCN_HOST_DEVICE inline Layout shared_layout(unsigned char* base, int32_t offset_group_taps) {
  using Element = typename Layout::Element;
  using Partial = typename Layout::Partial;
  Layout layout;
  for (int stage = 0; stage < 2; ++stage) {
    layout.a[stage] = reinterpret_cast<Element*>(base + stage * C::kStageBytes);
    layout.b[stage] = reinterpret_cast<Element*>(base + stage * C::kStageBytes + C::kSliceABytes);
  }
  layout.c = reinterpret_cast<Partial*>(base);
  const size_t entries = static_cast<size_t>(offset_group_taps) * C::kTileN;
  layout.corner_index = reinterpret_cast<int4*>(base + 2 * C::kStageBytes);
  layout.corner_weight = reinterpret_cast<float4*>(base + 2 * C::kStageBytes + entries * sizeof(int4));
  return layout;
}

// Phase 1: corners of every (offset group, tap, pixel) of the block, with
// the mask folded into the weights (fold_mask: the INT8 definition's product,
// one rounding, so the INT8 kernel shares this table). Pixels past the image
// get outside corners. Reads only `offset` and `mask` of the tensors and the
// corner arrays of the layout, so every variant (float16, INT8) uses it.
template <class C, class Tensors, class Layout>
DCN_HOST_DEVICE inline void build_corner_table(const MmaProblem& mp, const Tensors& t, MmaBlockIndex block, int tid,
                                               const Layout& layout) {
  const TileProblem& p = mp.base;
  const int32_t image = block.image_group / p.group;
  const int32_t entries = mp.offset_group_taps * C::kTileN;
  for (int32_t e = tid; e < entries; e += kThreads) {
    const int32_t group_tap = e / C::kTileN;
    const int32_t n = e - group_tap * C::kTileN;
    const int32_t pixel = block.pixel_tile * C::kTileN + n;
    BilinearCorners corners = outside_corners();
    if (pixel < p.out_pixels) {
      const int32_t tap = group_tap % p.kernel_area;
      const int32_t tap_row = tap / p.kernel_w;
      const int32_t tap_col = tap - tap_row * p.kernel_w;
      const int32_t out_y = pixel / p.out_width;
      const int32_t out_x = pixel - out_y * p.out_width;
      // Offsets hold (dy, dx) of (image, offset group, tap) in channels 2i, 2i + 1.
      const int64_t tap_channel = static_cast<int64_t>(image) * mp.offset_group_taps + group_tap;
      const float dy = load_as_float(t.offset[(2 * tap_channel) * p.out_pixels + pixel]);
      const float dx = load_as_float(t.offset[(2 * tap_channel + 1) * p.out_pixels + pixel]);
      const float y = sampling_coordinate(out_y, p.stride_h, p.pad_top, tap_row, p.dilation_h, dy);
      const float x = sampling_coordinate(out_x, p.stride_w, p.pad_left, tap_col, p.dilation_w, dx);
      corners = sample_corners(y, x, p.height, p.width);
      if (p.has_mask) corners = fold_mask(corners, load_as_float(t.mask[tap_channel * p.out_pixels + pixel]));
      // Plane index to element step in X's layout (input_block: 1 for planar X).
      for (int q = 0; q < 4; ++q) {
        if (corners.index[q] >= 0) corners.index[q] *= p.input_block;
      }
    }
    layout.corner_index[e] = make_int4(corners.index[0], corners.index[1], corners.index[2], corners.index[3]);
    layout.corner_weight[e] = make_float4(corners.weight[0], corners.weight[1], corners.weight[2], corners.weight[3]);
  }
}

// True when every W row starts 16-byte aligned (K % 8 == 0, aligned base):
// then a K slice of a row is 4 aligned 16-byte chunks.
template <typename TOffset>
DCN_HOST_DEVICE inline bool vector_weights(const MmaProblem& mp, const TilePointers<__half, TOffset>& t) {
  return mp.base.reduction % 8 == 0 && reinterpret_cast<uintptr_t>(t.weight) % 16 == 0;
}

// W slice rows of the block's channels, K range [k0, min(k0 + kTileK, k_end)),
// zero outside the problem; consecutive threads read consecutive chunks of a
// row (coalesced). `vector`: rows start 16-byte aligned and K % 8 == 0.
template <class C>
DCN_HOST_DEVICE inline void load_weight_slice(const MmaProblem& mp, const __half* weight, bool vector,
                                              MmaBlockIndex block, int32_t k0, int32_t k_end, int tid, __half* a) {
  const TileProblem& p = mp.base;
  const int32_t group = block.image_group % p.group;
  const int64_t first_w_row = static_cast<int64_t>(group) * p.out_channels_per_group;
  if (vector) {
#if defined(__CUDA_ARCH__)
#pragma unroll 2
#endif
    for (int load = 0; load < C::kAVectors; ++load) {
      const int element = tid + load * kThreads;
      const int kk = (element % (kTileK / 8)) * 8;
      const int mm = element / (kTileK / 8);
      const int32_t m = block.channel_tile * C::kTileM + mm;
      uint4 chunk = make_uint4(0, 0, 0, 0);
      if (k0 + kk < k_end && m < p.out_channels_per_group) {  // k_end % 8 == 0: whole chunks
        chunk = load_readonly(reinterpret_cast<const uint4*>(weight + (first_w_row + m) * p.reduction + k0 + kk));
      }
      *reinterpret_cast<uint4*>(a + mm * kPitchA + kk) = chunk;
    }
  } else {
    for (int load = 0; load < C::kAScalars; ++load) {
      const int element = tid + load * kThreads;
      const int kk = element % kTileK;
      const int mm = element / kTileK;
      const int32_t m = block.channel_tile * C::kTileM + mm;
      a[mm * kPitchA + kk] = (k0 + kk < k_end && m < p.out_channels_per_group)
                                 ? load_readonly(weight + (first_w_row + m) * p.reduction + k0 + kk)
                                 : __float2half_rn(0.0f);
    }
  }
}

// The S rows k = c * kh*kw + tap, k = first_k, first_k + 1, ..., of one
// pixel column n of a block: the input plane of channel c and the corner-table
// entry of (offset group, tap, n), advanced incrementally (one division per
// slice, none per row). Shared by the float16 and INT8 slice loads. `plane`
// is channel c's first element in X's layout (corner indices are scaled by
// input_block): planar X steps a plane per channel, blocked layouts one
// element within a block and a block plane after the last.
template <class C, typename T>
struct SampleWalk {
  const T* plane;
  const int4* group_index;    // corner_index entry of (offset group, tap 0, n)
  const float4* group_weight;
  int32_t tap, channel, next_group_channel, group_stride, kernel_area, channels_per_offset_group;
  int32_t block, in_block;
  int64_t block_step;  // from the last channel of a block to the first of the next

  DCN_HOST_DEVICE SampleWalk(const TileProblem& p, const T* input, const int4* corner_index,
                             const float4* corner_weight, int32_t image, int32_t group, int32_t first_k, int n) {
    const int32_t c = first_k / p.kernel_area;
    tap = first_k - c * p.kernel_area;
    kernel_area = p.kernel_area;
    channels_per_offset_group = p.channels_per_offset_group;
    const int64_t pixels = static_cast<int64_t>(p.height) * p.width;
    channel = group * p.channels_per_group + c;
    block = p.input_block;
    in_block = channel % block;
    block_step = pixels * block - (block - 1);
    plane = input + layout_offset(image, channel, 0, pixels, p.input_padded, block);
    const int32_t offset_group = channel / p.channels_per_offset_group;
    next_group_channel = (offset_group + 1) * p.channels_per_offset_group;
    group_stride = p.kernel_area * C::kTileN;
    group_index = corner_index + offset_group * group_stride + n;
    group_weight = corner_weight + offset_group * group_stride + n;
  }

  // Corners (mask folded in) of the current row.
  DCN_HOST_DEVICE BilinearCorners corners() const {
    const int4 index = group_index[tap * C::kTileN];
    const float4 weight = group_weight[tap * C::kTileN];
    return BilinearCorners{{index.x, index.y, index.z, index.w}, {weight.x, weight.y, weight.z, weight.w}};
  }

  DCN_HOST_DEVICE void next() {
    if (++tap < kernel_area) return;
    tap = 0;
    ++channel;
    if (++in_block == block) {
      in_block = 0;
      plane += block_step;
    } else {
      ++plane;
    }
    if (channel == next_group_channel) {
      next_group_channel += channels_per_offset_group;
      group_index += group_stride;
      group_weight += group_stride;
    }
  }
};

// Phase 2: thread `tid` writes its share of the W and S slices of K range
// [k0, min(k0 + kTileK, k_end)) into `stage`; rows and columns outside the
// problem are zero, so the multiply needs no bounds checks.
template <class C, typename TOffset>
DCN_HOST_DEVICE inline void load_slice(const MmaProblem& mp, const TilePointers<__half, TOffset>& t,
                                       MmaBlockIndex block, int32_t k0, int32_t k_end, int tid,
                                       const SharedLayout& layout, int stage) {
  const TileProblem& p = mp.base;
  const int32_t image = block.image_group / p.group;
  const int32_t group = block.image_group - image * p.group;

  load_weight_slice<C>(mp, t.weight, vector_weights(mp, t), block, k0, k_end, tid, layout.a[stage]);

  // S: a thread owns one pixel column n and kBRows consecutive rows k; it
  // walks (channel, tap) incrementally (one division per slice), so a sample
  // costs two shared loads, four gathers and four FMAs. A warp covers 32
  // consecutive pixels: offset-free shared reads and nearby gathers.
  __half* b = layout.b[stage];
  const int n = tid % C::kTileN;
  const int first_row = (tid / C::kTileN) * C::kBRows;
  const bool pixel_inside = block.pixel_tile * C::kTileN + n < p.out_pixels;
  const int32_t first_k = k0 + first_row;
  SampleWalk<C, __half> walk(p, t.input, layout.corner_index, layout.corner_weight, image, group, first_k, n);
#if defined(__CUDA_ARCH__)
#pragma unroll 4
#endif
  for (int row = 0; row < C::kBRows; ++row) {
    const float value = first_k + row < k_end && pixel_inside ? interpolate(walk.plane, walk.corners()) : 0.0f;
    b[(first_row + row) * C::kPitchB + n] = __float2half_rn(value);
    walk.next();
  }
}

// ---- channels-last gathers (DCN_ALGORITHM_TENSOR_CORE_NHWC) -----------------------------
// X in NHWC (C padded to a multiple of 8) is read in place; for planar X, two
// passes first fill the workspace: X as [N][H][W][C] and
// W as [M][kh*kw][C/group], i.e. K ordered k = tap * C/group + c. Then eight
// consecutive k are eight channels of one tap, and a thread samples them with
// one 16-byte gather per corner (the planar kernel gathers one 2-byte value
// per corner and channel, which on NCHW planes spreads a warp's gathers over
// many sectors). The eight channels of a vector must share a weight group and
// an offset group and start 16-byte aligned: group == 1 or C/group % 8 == 0,
// offset_group == 1 or C/offset_group % 8 == 0 (a planar X copied to the
// workspace: both multiples of 8). K is ordered by tap_channels = C/group
// rounded up to 8; the padding lanes are zero.

// Element `element` of X in [N][H][W][C], from X in [N][C][H][W].
DCN_HOST_DEVICE inline void to_channels_last(const __half* x, __half* x_nhwc, int64_t element, int32_t channels,
                                             int64_t plane_size) {
  const int64_t c = element % channels;
  const int64_t rest = element / channels;
  const int64_t pixel = rest % plane_size;
  const int64_t image = rest / plane_size;
  x_nhwc[element] = x[(image * channels + c) * plane_size + pixel];
}

// Element `element` of W in [M][kh*kw][C/group], from W in [M][C/group][kh*kw].
DCN_HOST_DEVICE inline void to_tap_major(const __half* w, __half* w_taps, int64_t element, int32_t channels_per_group,
                                         int32_t kernel_area) {
  const int64_t c = element % channels_per_group;
  const int64_t rest = element / channels_per_group;
  const int64_t tap = rest % kernel_area;
  const int64_t m = rest / kernel_area;
  w_taps[element] = w[(m * channels_per_group + c) * kernel_area + tap];
}

// Float16 element `which` (0: low half) of a 32-bit word, and the word of two
// floats rounded to float16: through the raw bits, never a pointer cast (the
// host compiler's aliasing rules would let it drop such reads).
DCN_HOST_DEVICE inline __half half_of_word(uint32_t word, int which) {
  __half_raw raw;
  raw.x = static_cast<unsigned short>(which ? word >> 16 : word & 0xffffu);
  return __half(raw);
}

DCN_HOST_DEVICE inline uint32_t word_of_halves(float low, float high) {
  const __half_raw low_raw = __float2half_rn(low);
  const __half_raw high_raw = __float2half_rn(high);
  return static_cast<uint32_t>(low_raw.x) | (static_cast<uint32_t>(high_raw.x) << 16);
}

// W slice of the channels-last gathers read straight from planar W
// [M][C/group][kh*kw]: column k = tap * tap_channels + c holds W[m][c][tap],
// zero for the padding channels c >= C/group. 2-byte loads (W is small and
// stays in L2); the workspace variant reads its tap-major copy with 16-byte loads.
template <class C>
DCN_HOST_DEVICE inline void load_planar_weight_tap_major(const MmaProblem& mp, const __half* weight,
                                                         MmaBlockIndex block, int32_t k0, int32_t k_end, int tid,
                                                         __half* a) {
  const TileProblem& p = mp.base;
  const int32_t group = block.image_group % p.group;
  const int64_t first_w_row = static_cast<int64_t>(group) * p.out_channels_per_group;
  for (int load = 0; load < C::kAScalars; ++load) {
    const int element = tid + load * kThreads;
    const int kk = element % kTileK;
    const int mm = element / kTileK;
    const int32_t m = block.channel_tile * C::kTileM + mm;
    const int32_t k = k0 + kk;
    const int32_t tap = k / p.tap_channels;
    const int32_t c = k - tap * p.tap_channels;
    a[mm * kPitchA + kk] = (k < k_end && m < p.out_channels_per_group && c < p.channels_per_group)
                               ? load_readonly(weight + ((first_w_row + m) * p.channels_per_group + c) * p.kernel_area + tap)
                               : __float2half_rn(0.0f);
  }
}

// Phase 2 of the channels-last gathers. `t.input` is X in a layout whose
// blocks hold whole 8-channel vectors 16-byte aligned (the workspace's NHWC
// copy, or an NHWC X with Cp % 8 == 0 read in place), corner indices scaled
// by input_block; K runs k = tap * tap_channels + c. PlanarWeights: W is the
// caller's planar W (load_planar_weight_tap_major), else the workspace's
// tap-major copy. Lanes of padding channels (c >= C/group) are zero, whatever
// X holds there. S is stored column-major ([n][kk]) so that a thread's 8
// channels are one 16-byte shared store; four consecutive threads take the
// four channel vectors of one pixel (a 64-byte gather run in NHWC).
template <class C, bool PlanarWeights, typename TOffset>
DCN_HOST_DEVICE inline void load_slice_channels_last(const MmaProblem& mp, const TilePointers<__half, TOffset>& t,
                                                     MmaBlockIndex block, int32_t k0, int32_t k_end, int tid,
                                                     const SharedLayout& layout, int stage) {
  const TileProblem& p = mp.base;
  const int32_t image = block.image_group / p.group;
  const int32_t group = block.image_group - image * p.group;
  if constexpr (PlanarWeights) {
    load_planar_weight_tap_major<C>(mp, t.weight, block, k0, k_end, tid, layout.a[stage]);
  } else {
    load_weight_slice<C>(mp, t.weight, true, block, k0, k_end, tid, layout.a[stage]);
  }

  __half* b = layout.b[stage];
  constexpr int kVectorsPerPixel = kTileK / kChannelVector;
  const int64_t pixels = static_cast<int64_t>(p.height) * p.width;
  for (int e = tid; e < kVectorsPerPixel * C::kTileN; e += kThreads) {
    const int vector = e % kVectorsPerPixel;
    const int n = e / kVectorsPerPixel;
    const int32_t k = k0 + vector * kChannelVector;
    float value[kChannelVector] = {};
    if (k < k_end && block.pixel_tile * C::kTileN + n < p.out_pixels) {
      const int32_t tap = k / p.tap_channels;
      const int32_t c = k - tap * p.tap_channels;
      const int32_t channel = group * p.channels_per_group + c;
      const int32_t offset_group = channel / p.channels_per_offset_group;
      const int32_t entry = (offset_group * p.kernel_area + tap) * C::kTileN + n;
      const int4 index = layout.corner_index[entry];
      const float4 weight = layout.corner_weight[entry];
      const int32_t corner_index[4] = {index.x, index.y, index.z, index.w};
      const float corner_weight[4] = {weight.x, weight.y, weight.z, weight.w};
      const __half* vector_base = t.input + layout_offset(image, channel, 0, pixels, p.input_padded, p.input_block);
      for (int q = 0; q < 4; ++q) {
        if (corner_index[q] < 0) continue;  // outside: contributes 0, never read
        const uint4 raw = load_readonly(reinterpret_cast<const uint4*>(vector_base + corner_index[q]));
        const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
        for (int j = 0; j < kChannelVector; ++j) {
          value[j] = fmaf(corner_weight[q], __half2float(half_of_word(words[j / 2], j % 2)), value[j]);
        }
      }
      // Padding channels (C/group not a multiple of 8): zero lanes, never X's padding values.
      for (int j = p.channels_per_group - c; j < kChannelVector; ++j) value[j] = 0.0f;
    }
    uint32_t words[4];
    for (int j = 0; j < 4; ++j) words[j] = word_of_halves(value[2 * j], value[2 * j + 1]);
    *reinterpret_cast<uint4*>(b + n * kPitchBT + vector * kChannelVector) = make_uint4(words[0], words[1], words[2], words[3]);
  }
}

// One warp's 64 x 32 float32 accumulators: WMMA fragments on the GPU, a
// plain matrix in the emulator (whose multiply is the same sum over the
// same float16 operands, in a fixed order).
struct WarpAccumulator {
#if defined(__CUDA_ARCH__)
  nvcuda::wmma::fragment<nvcuda::wmma::accumulator, kFragment, kFragment, kFragment, float> fragment[kFragmentsM]
                                                                                                    [kFragmentsN];
#else
  float value[kWarpTileM][kWarpTileN];
#endif
};

DCN_HOST_DEVICE inline void clear_accumulator(WarpAccumulator& acc) {
#if defined(__CUDA_ARCH__)
  for (int i = 0; i < kFragmentsM; ++i) {
    for (int j = 0; j < kFragmentsN; ++j) nvcuda::wmma::fill_fragment(acc.fragment[i][j], 0.0f);
  }
#else
  for (auto& row : acc.value) {
    for (float& value : row) value = 0.0f;
  }
#endif
}

// Phase 3 (per warp): acc += W slice rows of the warp x S slice columns of the warp.
// ChannelsLast: the S slice is column-major ([n][kk], pitch kPitchBT).
template <class C, bool ChannelsLast = false>
DCN_HOST_DEVICE inline void mma_slice(const SharedLayout& layout, int stage, int warp, WarpAccumulator& acc) {
  const int row0 = (warp / C::kWarpsN) * kWarpTileM;
  const int col0 = (warp % C::kWarpsN) * kWarpTileN;
  const __half* a = layout.a[stage];
  const __half* b = layout.b[stage];
#if defined(__CUDA_ARCH__)
  using namespace nvcuda;
  // One 16-wide K step at a time: unrolling both would keep every fragment of
  // the slice live next to the 64 accumulators.
#pragma unroll 1
  for (int kk = 0; kk < kTileK; kk += kFragment) {
    using BLayout = std::conditional_t<ChannelsLast, wmma::col_major, wmma::row_major>;
    wmma::fragment<wmma::matrix_b, kFragment, kFragment, kFragment, __half, BLayout> b_frag[kFragmentsN];
#pragma unroll
    for (int j = 0; j < kFragmentsN; ++j) {
      if constexpr (ChannelsLast) {
        wmma::load_matrix_sync(b_frag[j], b + (col0 + j * kFragment) * kPitchBT + kk, kPitchBT);
      } else {
        wmma::load_matrix_sync(b_frag[j], b + kk * C::kPitchB + col0 + j * kFragment, C::kPitchB);
      }
    }
#pragma unroll
    for (int i = 0; i < kFragmentsM; ++i) {
      wmma::fragment<wmma::matrix_a, kFragment, kFragment, kFragment, __half, wmma::row_major> a_frag;
      wmma::load_matrix_sync(a_frag, a + (row0 + i * kFragment) * kPitchA + kk, kPitchA);
#pragma unroll
      for (int j = 0; j < kFragmentsN; ++j) wmma::mma_sync(acc.fragment[i][j], a_frag, b_frag[j], acc.fragment[i][j]);
    }
  }
#else
  for (int i = 0; i < kWarpTileM; ++i) {
    for (int j = 0; j < kWarpTileN; ++j) {
      float sum = acc.value[i][j];
      for (int kk = 0; kk < kTileK; ++kk) {
        const __half b_value = ChannelsLast ? b[(col0 + j) * kPitchBT + kk] : b[kk * C::kPitchB + col0 + j];
        sum = fmaf(__half2float(a[(row0 + i) * kPitchA + kk]), __half2float(b_value), sum);
      }
      acc.value[i][j] = sum;
    }
  }
#endif
}

// Phase 4 (per warp): the warp's accumulators into the block's float tile.
template <class C>
DCN_HOST_DEVICE inline void store_accumulators(const SharedLayout& layout, int warp, const WarpAccumulator& acc) {
  const int row0 = (warp / C::kWarpsN) * kWarpTileM;
  const int col0 = (warp % C::kWarpsN) * kWarpTileN;
#if defined(__CUDA_ARCH__)
#pragma unroll
  for (int i = 0; i < kFragmentsM; ++i) {
#pragma unroll
    for (int j = 0; j < kFragmentsN; ++j) {
      nvcuda::wmma::store_matrix_sync(layout.c + (row0 + i * kFragment) * C::kPitchC + col0 + j * kFragment,
                                      acc.fragment[i][j], C::kPitchC, nvcuda::wmma::mem_row_major);
    }
  }
#else
  for (int i = 0; i < kWarpTileM; ++i) {
    for (int j = 0; j < kWarpTileN; ++j) layout.c[(row0 + i) * C::kPitchC + col0 + j] = acc.value[i][j];
  }
#endif
}

// The loop of phase 5, shared by the variants: for every output of rows
// [row_begin, row_end) of the tile that lies inside the problem, the sum of
// the `ranks` partial tiles (one without split-K), handed to
// store(output channel, index into Y, sum). Consecutive threads take
// consecutive pixels.
template <class C, typename Partial, class Store>
DCN_HOST_DEVICE inline void reduce_tile_outputs(const MmaProblem& mp, MmaBlockIndex block, int tid,
                                                const Partial* const* partial_tiles, int ranks, int row_begin,
                                                int row_end, Store&& store) {
  const TileProblem& p = mp.base;
  const int32_t image = block.image_group / p.group;
  const int32_t group = block.image_group - image * p.group;
  const int elements = (row_end - row_begin) * C::kTileN;
  for (int e = tid; e < elements; e += kThreads) {
    const int mm = row_begin + e / C::kTileN;
    const int n = e % C::kTileN;
    const int32_t m = block.channel_tile * C::kTileM + mm;
    const int32_t pixel = block.pixel_tile * C::kTileN + n;
    if (m >= p.out_channels_per_group || pixel >= p.out_pixels) continue;
    Partial sum = 0;
    for (int rank = 0; rank < ranks; ++rank) sum += partial_tiles[rank][mm * C::kPitchC + n];
    const int32_t channel = group * p.out_channels_per_group + m;
    store(channel, layout_offset(image, channel, pixel, p.out_pixels, p.output_padded, p.output_block), sum);
  }
}

// Y's padding channels [M, output_padded) of the tile's pixels, as zeros
// (store_zero(index into Y)): written by the block of the last weight group's
// last channel tile (its first cluster rank), so every pixel's padding is written once.
template <class C, class StoreZero>
DCN_HOST_DEVICE inline void zero_padding_outputs(const MmaProblem& mp, MmaBlockIndex block, int tid, int row_begin,
                                                 StoreZero&& store_zero) {
  const TileProblem& p = mp.base;
  const int32_t padding = p.output_padded - p.out_channels;
  const int32_t last_tile = (p.out_channels_per_group - 1) / C::kTileM;
  if (padding <= 0 || row_begin != 0 || block.channel_tile != last_tile || block.image_group % p.group != p.group - 1) {
    return;
  }
  const int32_t image = block.image_group / p.group;
  for (int e = tid; e < padding * C::kTileN; e += kThreads) {
    const int32_t channel = p.out_channels + e / C::kTileN;
    const int32_t pixel = block.pixel_tile * C::kTileN + e % C::kTileN;
    if (pixel < p.out_pixels) {
      store_zero(layout_offset(image, channel, pixel, p.out_pixels, p.output_padded, p.output_block));
    }
  }
}

// Phase 5: rows [row_begin, row_end) of the output tile, plus bias, rounded to float16.
template <class C, typename TOffset>
DCN_HOST_DEVICE inline void store_outputs(const MmaProblem& mp, const TilePointers<__half, TOffset>& t,
                                          MmaBlockIndex block, int tid, const float* const* partial_tiles,
                                          int ranks, int row_begin, int row_end) {
  const bool has_bias = mp.base.has_bias;
  reduce_tile_outputs<C>(mp, block, tid, partial_tiles, ranks, row_begin, row_end,
                         [&](int32_t channel, int64_t index, float sum) {
                           if (has_bias) sum += __half2float(t.bias[channel]);
                           t.output[index] = __float2half_rn(sum);
                         });
  zero_padding_outputs<C>(mp, block, tid, row_begin, [&](int64_t index) { t.output[index] = __float2half_rn(0.0f); });
}

// Rows of the output tile that cluster rank `rank` of `ranks` reduces and stores.
DCN_HOST_DEVICE inline void rows_of_rank(int tile_m, int rank, int ranks, int* row_begin, int* row_end) {
  const int rows = (tile_m + ranks - 1) / ranks;
  *row_begin = rank * rows < tile_m ? rank * rows : tile_m;
  *row_end = (rank + 1) * rows < tile_m ? (rank + 1) * rows : tile_m;
}

// K range [*begin, *end) of one split.
DCN_HOST_DEVICE inline void k_range_of_split(const MmaProblem& mp, int32_t split, int32_t* begin, int32_t* end) {
  const int64_t first = static_cast<int64_t>(split) * mp.k_per_split;
  const int64_t last = first + mp.k_per_split;
  *begin = static_cast<int32_t>(first < mp.base.reduction ? first : mp.base.reduction);
  *end = static_cast<int32_t>(last < mp.base.reduction ? last : mp.base.reduction);
}

}  // namespace cuda_mma
}  // namespace dcn_deploy
