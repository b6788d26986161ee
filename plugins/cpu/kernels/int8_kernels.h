// Inner loops of the INT8 CPU deformable convolution's channels-last path:
// the int8 channels-last copy of Xq, the gather of requantized samples and
// the exact int32 pixel-major GEMM.
//
// The sample vq of one (channel, tap, pixel) must equal the definition bit for
// bit (int8_sample() of core/math.h): four float32 products of the
// int8 corners summed in corner order, one rounding per operation, then
// saturate_int8. The corners come in the "pair" form of
// kernels/float_kernels.h (a 2x2 in-plane block, outside corners moved onto
// block positions with weight 0): an int8 plane is always finite, so a weight-0
// corner adds an exact 0 and the nonzero terms keep their order. This file is
// compiled with -ffp-contract=off so that no multiply and add fuse into an
// FMA (which would round once instead of twice).
//
// Portable C++ and AVX2 versions, picked like the float loops
// (DCN_DEPLOY_CPU_KERNELS=portable forces the portable ones).
#pragma once

#include <cstdint>

namespace dcn_deploy {
namespace cpu {

// Output channels per panel of the pixel-major INT8 GEMM.
constexpr int64_t kInt8PanelChannels = 16;

struct Int8KernelSet {
  const char* name;

  // target[p * channels + c] = source[c * plane_size + p] for p in [first, end), c < channels.
  void (*to_channels_last)(const int8_t* source, int64_t plane_size, int64_t channels, int64_t first, int64_t end,
                           int8_t* target);

  // Requantized samples of every tap: `image` points at channel c0 of pixel 0
  // of a [H*W][pixel_stride] int8 copy of Xq; for pixel p < pixels (a multiple
  // of 8) and tap t < taps, vq of `channels` (a multiple of 8) consecutive
  // channels goes to rows[p * row_stride + t * tap_step + c] as int16. Tap t's
  // pair corners (mask folded into the weights) start at base + t * corner_stride
  // and weights + t * 4 * corner_stride (pair_weight_slot order).
  void (*gather_channels_last)(const int8_t* image, int64_t pixel_stride, int64_t channels, int32_t width,
                               const int32_t* base, const float* weights, int64_t taps, int64_t corner_stride,
                               int64_t pixels, int16_t* rows, int64_t row_stride, int64_t tap_step);

  // Exact int32 sums, pixel-major: for each of `panels` panels j of 16 output
  // channels, pixel q < pixels and lane l < 16,
  //   acc[j * acc_stride + q * 16 + l] (+)= sum_i rows[q * row_stride + 2i]     * low16(packed[(j * pairs + i) * 16 + l])
  //                                           + rows[q * row_stride + 2i + 1] * high16(packed[(j * pairs + i) * 16 + l])
  // (pack_int16_pair order); `first`: acc starts from 0.
  void (*gemm_pixel_major)(int64_t panels, int64_t pairs, const int32_t* packed, const int16_t* rows,
                           int64_t row_stride, int64_t pixels, int32_t* acc, int64_t acc_stride, bool first);
};

const Int8KernelSet& portable_int8_kernels();
// The AVX2 set, or nullptr where the CPU (or the build target) lacks it.
const Int8KernelSet* avx2_int8_kernels();
// avx2_int8_kernels() when available and DCN_DEPLOY_CPU_KERNELS is not "portable".
const Int8KernelSet& int8_kernels();

}  // namespace cpu
}  // namespace dcn_deploy
