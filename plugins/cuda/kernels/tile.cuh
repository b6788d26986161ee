// The CUDA deformable-convolution kernel, written as three block-level phases
// that are plain __host__ __device__ functions of (block index, thread index):
//
//   for each K slice:  load_tiles   (every thread)   -> barrier
//                      accumulate   (every thread)   -> barrier
//   then:              store_outputs (every thread)
//
// The GPU kernel runs them with __syncthreads() as the barriers; the CPU
// emulator (emulate.cu) runs each phase for all 256 threads of a
// block in turn, which is the same computation because a phase reads only
// what earlier phases wrote. So CI, which has no GPU, executes the kernel's
// actual tiling, indexing, bounds handling and float16 conversions.
//
// Per (image, weight group) the convolution is a GEMM:
//   Y[m][p] = sum_k W[m][k] * S[k][p] + B[m],   k = c * kh*kw + tap,
// where S[k][p] is the mask-scaled bilinear sample of input channel c at the
// deformed position of tap `tap` for output pixel p. S is never stored in
// global memory: each block samples a kTileK x kTileN slice straight into
// shared memory (implicit GEMM, zero workspace), multiplies it with a
// kTileK x kTileM slice of W, and accumulates in float32 registers.
#pragma once

#include <cmath>
#include <cstdint>

#include "core/math.h"

namespace dcn_deploy {
namespace cuda_tile {

constexpr int kTileM = 64;    // output channels per block
constexpr int kTileN = 64;    // output pixels per block
constexpr int kTileK = 16;    // reduction slice per step
constexpr int kThreads = 256;  // threads per block, as a 16 x 16 grid
constexpr int kThreadM = 4;   // output channels per thread
constexpr int kThreadN = 4;   // output pixels per thread (strided by 16 for conflict-free shared reads)
constexpr int kThreadGrid = 16;
static_assert(kThreadGrid * kThreadGrid == kThreads, "thread grid");
static_assert(kThreadGrid * kThreadM == kTileM && kThreadGrid * kThreadN == kTileN, "thread tile");
static_assert((kTileK * kTileM) % kThreads == 0 && (kTileK * kTileN) % kThreads == 0, "tile loads");
constexpr int kLoadsPerThread = kTileK * kTileN / kThreads;

// Problem constants in the integer widths the kernel uses. Built and checked
// on the host (emulate.cu): every per-plane, per-image-pixel and
// reduction index fits int32; only whole-tensor offsets need int64.
struct TileProblem {
  int32_t in_channels, height, width;
  int32_t out_channels, out_height, out_width, out_pixels;
  int32_t kernel_w, kernel_area;
  int32_t stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w;
  int32_t group, channels_per_group, out_channels_per_group;
  int32_t offset_group, channels_per_offset_group;
  int32_t reduction;  // K = channels_per_group * kernel_area (channels-last gathers: tap_channels * kernel_area)
  // Layouts of X and Y as the block kernels read and write them (core/params.h
  // TensorLayout): padded channels and channels per block; planar: C, 1 and M, 1.
  // The SIMT kernel reads planar tensors only.
  int32_t input_padded, input_block, output_padded, output_block;
  int32_t tap_channels;  // channels-last gathers: k = tap * tap_channels + c (C/group rounded up to 8)
  bool has_mask, has_bias;
};

// T: X, W, B, Y storage; TOffset: offset and mask storage.
template <typename T, typename TOffset>
struct TilePointers {
  const T* input;
  const T* weight;
  const TOffset* offset;
  const TOffset* mask;
  const T* bias;
  T* output;
};

// Grid: x = pixel tile, y = output-channel tile, z = image * group + g (g: the weight group).
struct BlockIndex {
  int32_t pixel_tile, channel_tile, image_group;
};

struct SharedTiles {
  float weight[kTileK][kTileM];  // W slice, transposed so a thread's 4 channels are adjacent
  float column[kTileK][kTileN];  // S slice
};

// One thread's float32 accumulators.
struct Accumulator {
  float value[kThreadM][kThreadN];
};

// Mask-scaled bilinear sample S[k][pixel] of one image and weight group.
template <typename T, typename TOffset>
DCN_HOST_DEVICE inline float deformed_sample(const TileProblem& p, const TilePointers<T, TOffset>& t, int32_t image,
                                             int32_t group, int32_t k, int32_t pixel) {
  const int32_t c = k / p.kernel_area;
  const int32_t tap = k - c * p.kernel_area;
  const int32_t tap_row = tap / p.kernel_w;
  const int32_t tap_col = tap - tap_row * p.kernel_w;
  const int32_t channel = group * p.channels_per_group + c;
  const int32_t offset_group = channel / p.channels_per_offset_group;
  const int32_t out_y = pixel / p.out_width;
  const int32_t out_x = pixel - out_y * p.out_width;

  // (image, offset group, tap) indexes the mask channel; offsets hold (dy, dx)
  // for it in channels 2*i and 2*i + 1 of the same image.
  const int64_t tap_channel = (static_cast<int64_t>(image) * p.offset_group + offset_group) * p.kernel_area + tap;
  const float dy = load_as_float(t.offset[(2 * tap_channel) * p.out_pixels + pixel]);
  const float dx = load_as_float(t.offset[(2 * tap_channel + 1) * p.out_pixels + pixel]);
  const float y = sampling_coordinate(out_y, p.stride_h, p.pad_top, tap_row, p.dilation_h, dy);
  const float x = sampling_coordinate(out_x, p.stride_w, p.pad_left, tap_col, p.dilation_w, dx);

  const int64_t plane_size = static_cast<int64_t>(p.height) * p.width;
  const T* plane = t.input + (static_cast<int64_t>(image) * p.in_channels + channel) * plane_size;
  float value = bilinear_sample(plane, p.height, p.width, y, x);
  if (p.has_mask) value *= load_as_float(t.mask[tap_channel * p.out_pixels + pixel]);
  return value;
}

// Phase 1: thread `tid` fills its share of both shared tiles for the K slice
// starting at k0. Out-of-range rows and columns are zero, so phase 2 needs no
// bounds checks.
template <typename T, typename TOffset>
DCN_HOST_DEVICE inline void load_tiles(const TileProblem& p, const TilePointers<T, TOffset>& t, BlockIndex block,
                                       int32_t k0, int tid, SharedTiles& tiles) {
  const int32_t image = block.image_group / p.group;
  const int32_t group = block.image_group - image * p.group;
  // Weight: consecutive threads read consecutive k of one row (coalesced).
  for (int load = 0; load < kLoadsPerThread; ++load) {
    const int element = tid + load * kThreads;
    const int kk = element % kTileK;
    const int mm = element / kTileK;
    const int32_t k = k0 + kk;
    const int32_t m = block.channel_tile * kTileM + mm;
    float value = 0.0f;
    if (k < p.reduction && m < p.out_channels_per_group) {
      const int64_t row = static_cast<int64_t>(group) * p.out_channels_per_group + m;
      value = load_as_float(t.weight[row * p.reduction + k]);
    }
    tiles.weight[kk][mm] = value;
  }
  // Samples: consecutive threads take consecutive pixels, so offset and mask
  // reads are coalesced.
  for (int load = 0; load < kLoadsPerThread; ++load) {
    const int element = tid + load * kThreads;
    const int nn = element % kTileN;
    const int kk = element / kTileN;
    const int32_t k = k0 + kk;
    const int32_t pixel = block.pixel_tile * kTileN + nn;
    tiles.column[kk][nn] =
        (k < p.reduction && pixel < p.out_pixels) ? deformed_sample(p, t, image, group, k, pixel) : 0.0f;
  }
}

// Phase 2: thread (ty, tx) adds the slice's contribution to its 4 x 4
// outputs: channels ty*4 + i, pixels tx + 16*j. float32 fused multiply-add.
DCN_HOST_DEVICE inline void accumulate(const SharedTiles& tiles, int tid, Accumulator& acc) {
  const int ty = tid / kThreadGrid;
  const int tx = tid % kThreadGrid;
  for (int kk = 0; kk < kTileK; ++kk) {
    float a[kThreadM];
    float b[kThreadN];
    for (int i = 0; i < kThreadM; ++i) a[i] = tiles.weight[kk][ty * kThreadM + i];
    for (int j = 0; j < kThreadN; ++j) b[j] = tiles.column[kk][tx + kThreadGrid * j];
    for (int i = 0; i < kThreadM; ++i) {
      for (int j = 0; j < kThreadN; ++j) acc.value[i][j] = fmaf(a[i], b[j], acc.value[i][j]);
    }
  }
}

// Phase 3: bias, conversion to T and the store of the thread's outputs.
template <typename T, typename TOffset>
DCN_HOST_DEVICE inline void store_outputs(const TileProblem& p, const TilePointers<T, TOffset>& t, BlockIndex block,
                                          int tid, const Accumulator& acc) {
  const int32_t image = block.image_group / p.group;
  const int32_t group = block.image_group - image * p.group;
  const int ty = tid / kThreadGrid;
  const int tx = tid % kThreadGrid;
  for (int i = 0; i < kThreadM; ++i) {
    const int32_t m = block.channel_tile * kTileM + ty * kThreadM + i;
    if (m >= p.out_channels_per_group) continue;
    const int32_t channel = group * p.out_channels_per_group + m;
    const float bias = p.has_bias ? load_as_float(t.bias[channel]) : 0.0f;
    T* out_plane = t.output + (static_cast<int64_t>(image) * p.out_channels + channel) * p.out_pixels;
    for (int j = 0; j < kThreadN; ++j) {
      const int32_t pixel = block.pixel_tile * kTileN + tx + kThreadGrid * j;
      if (pixel < p.out_pixels) out_plane[pixel] = store_from_float<T>(acc.value[i][j] + bias);
    }
  }
}

}  // namespace cuda_tile
}  // namespace dcn_deploy
