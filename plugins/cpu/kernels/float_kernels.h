// Inner loops of the float32 CPU deformable convolution: the bilinear gather
// into packed column panels and the GEMM of a weight block with them.
//
// Each loop exists twice: portable C++ (any CPU) and AVX2+FMA (x86-64 only,
// compiled with function target attributes, so the library needs no special
// compiler flags and still runs on CPUs without AVX2). cpu_kernels() picks one
// set once per call from the CPU's features; DCN_DEPLOY_CPU_KERNELS=portable
// forces the portable set (tests run both).
#pragma once

#include <cmath>
#include <cstdint>

namespace dcn_deploy {
namespace cpu {

// Output pixels per column panel and per GEMM micro-kernel step.
constexpr int64_t kPanelPixels = 16;
// Output channels per GEMM micro-kernel step.
constexpr int64_t kPanelRows = 6;
// Floats of corner weights per group of 8 pixels (4 weights per pixel).
constexpr int64_t kWeightsPerOctet = 32;

// Column panels: a column block of `rows` rows (row r = input channel r / taps,
// tap r % taps) over `pixels` pixels is stored as ceil(pixels / 16) panels of
// [rows][16] floats, panel p holding pixels 16p .. 16p+15.
inline int64_t panel_stride(int64_t rows) { return rows * kPanelPixels; }

// "Pair" corners of one (offset group, tap) for a tile of pixels: the sample of
// pixel p is
//   w[0] * plane[b] + w[1] * plane[b + 1] + w[2] * plane[b + W] + w[3] * plane[b + W + 1]
// with b = base[p] a valid top-left corner of a 2x2 block inside the plane
// (so H, W >= 2), corners outside the plane moved onto block positions with
// weight 0. This reads only in-plane values, so it equals the definition only
// when the plane is finite (0 * Inf would be NaN); callers check that.
// Weights are stored per group of 8 pixels in the order the AVX2 loop consumes
// them: pair_weight_slot() gives the position of pixel j's weights w[0], w[1]
// (top pair); w[2], w[3] (bottom pair) sit 16 floats further.
inline int64_t pair_weight_slot(int64_t j) {
  // Pixels 0,1,4,5 fill the first 8 floats, 2,3,6,7 the next 8.
  return ((j & 2) >> 1) * 8 + ((j & 4) >> 2) * 4 + (j & 1) * 2;
}

// Pair corners of one pixel (see above): sampling coordinate
// (row_start + tap_y) + offset_y, likewise for x, with row_start =
// oy * stride_h - pad_top and tap_y = i * dilation_h. Equal to
// bilinear_corners() of core/math.h, weights times `scale`, with the
// corners outside the plane moved to weight-0 slots; a sample entirely
// outside gets base 0 and weights 0 * scale. Needs height, width >= 2.
inline void pair_corner(int32_t row_start, int32_t col_start, int32_t tap_y, int32_t tap_x, float offset_y,
                        float offset_x, float scale, int32_t height, int32_t width, int32_t* base, float weight[4]) {
  const float y = static_cast<float>(row_start + tap_y) + offset_y;
  const float x = static_cast<float>(col_start + tap_x) + offset_x;
  float top = 0.0f, bottom = 0.0f, left = 0.0f, right = 0.0f;
  *base = 0;
  if (y > -1.0f && y < static_cast<float>(height) && x > -1.0f && x < static_cast<float>(width)) {
    const float y_floor = floorf(y);
    const float x_floor = floorf(x);
    const int32_t y0 = static_cast<int32_t>(y_floor);
    const int32_t x0 = static_cast<int32_t>(x_floor);
    const float ly = y - y_floor;
    const float lx = x - x_floor;
    const float hy = 1.0f - ly;
    const float hx = 1.0f - lx;
    // Row y0 = -1 is outside: the block starts at row 0 = y0 + 1. Row
    // y0 + 1 = H is outside: the block ends at row H - 1 = y0.
    top = y0 < 0 ? ly : (y0 > height - 2 ? 0.0f : hy);
    bottom = y0 < 0 ? 0.0f : (y0 > height - 2 ? hy : ly);
    left = x0 < 0 ? lx : (x0 > width - 2 ? 0.0f : hx);
    right = x0 < 0 ? 0.0f : (x0 > width - 2 ? hx : lx);
    const int32_t block_y = y0 < 0 ? 0 : (y0 > height - 2 ? height - 2 : y0);
    const int32_t block_x = x0 < 0 ? 0 : (x0 > width - 2 ? width - 2 : x0);
    *base = block_y * width + block_x;
  }
  weight[0] = top * left * scale;
  weight[1] = top * right * scale;
  weight[2] = bottom * left * scale;
  weight[3] = bottom * right * scale;
}

struct KernelSet {
  const char* name;

  // Pair corners of pixels [0, padded) of one tap (pair_corner() per pixel;
  // pixels from `count` on get base 0 and weight 0): base[p] and weights in
  // pair_weight_slot order. mask may be nullptr (scale 1).
  void (*pair_corners)(const int32_t* row_start, const int32_t* col_start, int32_t tap_y, int32_t tap_x,
                       const float* offset_y, const float* offset_x, const float* mask, int64_t count,
                       int64_t padded, int32_t height, int32_t width, int32_t* base, float* weights);

  // Gathers the samples of one tap for `channels` consecutive input planes
  // (plane c at planes + c * plane_size) into column rows
  // row_begin + c * row_step of the panels at `panels` (`rows` rows each).
  // `base`/`weights` hold the pair corners of the tile; pixels is a multiple
  // of 8 (padding pixels carry weight 0 and a valid base).
  void (*gather_pairs)(const float* planes, int64_t plane_size, int64_t channels, int32_t width,
                       const int32_t* base, const float* weights, int64_t pixels, float* panels, int64_t rows,
                       int64_t row_begin, int64_t row_step);

  // Channels-last gather of every tap, nullptr where not implemented: `image`
  // points at channel c0 of pixel 0 of a [H*W][pixel_stride] copy of the
  // input; for pixel p < pixels and tap t < taps, `channels` (a multiple of 8)
  // consecutive channels of the sample go to rows[p * row_stride + t * tap_step + c]
  // (pixel-major rows, see gemm_pixel_major). Tap t's pair corners start at
  // base + t * corner_stride and weights + t * 4 * corner_stride. Pixels run
  // outermost: the taps of one pixel and of its neighbours sample one small
  // window of the image, which then stays in L1 (tap-outer order sweeps the
  // whole tile's band once per tap: measured about 5% slower on 64 channels).
  void (*gather_channels_last)(const float* image, int64_t pixel_stride, int64_t channels, int32_t width,
                               const int32_t* base, const float* weights, int64_t taps, int64_t corner_stride,
                               int64_t pixels, float* rows, int64_t row_stride, int64_t tap_step);

  // Channels-last copy, nullptr where not implemented: for p in [first, end),
  // c < channels (a multiple of 8): target[p * channels + c] = source[c * plane_size + p].
  // Returns whether every copied value is finite (checked on the way: X is
  // then read once, not once for the check and once for the copy).
  bool (*to_channels_last)(const float* source, int64_t plane_size, int64_t channels, int64_t first, int64_t end,
                           float* target);

  // Pixel-major GEMM, nullptr where not implemented (then so are the two
  // neighbours): for each of `panels` blocks of 16 output channels j,
  //   acc[j * acc_stride + q * 16 + l] (+)= sum_k packed[(j * depth + k) * 16 + l] * rows[q * row_stride + k]
  // for q < pixels; `first`: acc starts from 0.
  void (*gemm_pixel_major)(int64_t panels, int64_t depth, const float* packed, const float* rows,
                           int64_t row_stride, int64_t pixels, float* acc, int64_t acc_stride, bool first);

  // y[m * ldy + q] = acc[(m / 16) * acc_stride + q * 16 + m % 16] + bias[m]
  // (bias may be nullptr) for m < out_rows, q < pixels.
  void (*store_pixel_major)(const float* acc, int64_t acc_stride, int64_t out_rows, int64_t pixels,
                            const float* bias, float* y, int64_t ldy);

  // C[m][q] (+)= sum_r A[m][r] * B[r][q] for m < out_rows, q < pixels, with B
  // in column panels of `depth` rows, A row-major with row stride lda, C with
  // row stride ldc. When `first` is true C starts from bias[m] (0 without
  // bias), else from its current contents.
  void (*gemm)(int64_t out_rows, int64_t depth, const float* a, int64_t lda, const float* panels, int64_t pixels,
               float* c, int64_t ldc, const float* bias, bool first);

  // INT8, exact int32: for b < block (<= kInt8ChannelBlock), q < pixels (a multiple of 8),
  //   acc[b * pixels + q] = sum_j pairs[(j * pixels + q) * 2] * low16(weight_pairs[b * pair_count + j])
  //                             + pairs[(j * pixels + q) * 2 + 1] * high16(weight_pairs[b * pair_count + j])
  // (pairs of consecutive rows interleaved per pixel: one madd per pair).
  void (*int8_pair_gemm)(const int16_t* pairs, int64_t pair_count, int64_t pixels, const int32_t* weight_pairs,
                         int64_t block, int32_t* acc);
};

// Output channels int8_pair_gemm accumulates together.
constexpr int64_t kInt8ChannelBlock = 4;

// Two int16 weights in one int32 (low: even row, high: odd row), as int8_pair_gemm reads them.
inline int32_t pack_int16_pair(int16_t low, int16_t high) {
  return static_cast<int32_t>(static_cast<uint32_t>(static_cast<uint16_t>(low)) |
                              (static_cast<uint32_t>(static_cast<uint16_t>(high)) << 16));
}

// True when DCN_DEPLOY_CPU_KERNELS=portable asks for the portable loops (tests; also the INT8 set).
bool portable_kernels_forced();

const KernelSet& portable_kernels();
// The AVX2+FMA set, or nullptr where the CPU (or the build target) lacks it.
const KernelSet* avx2_kernels();
// avx2_kernels() when available and DCN_DEPLOY_CPU_KERNELS is not "portable".
const KernelSet& cpu_kernels();

// True when no element of data[0, count) is Inf or NaN.
bool all_finite(const float* data, int64_t count);

}  // namespace cpu
}  // namespace dcn_deploy
