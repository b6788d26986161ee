#include "cpu/kernels/int8_kernels.h"

#include <algorithm>
#include <cstring>

#include "core/math.h"
#include "cpu/kernels/float_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DCN_HAVE_AVX2_INT8_KERNELS 1
#include <immintrin.h>
#define DCN_AVX2 __attribute__((target("avx2")))
#else
#define DCN_HAVE_AVX2_INT8_KERNELS 0
#endif

namespace dcn_deploy {
namespace cpu {
namespace {

// Depth slice of the GEMM: 256 pairs * 64 bytes of one panel's weights stay in L1.
constexpr int64_t kPairSlice = 256;

// ---------------------------------------------------------------- portable

void to_channels_last_portable(const int8_t* source, int64_t plane_size, int64_t channels, int64_t first, int64_t end,
                               int8_t* target) {
  constexpr int64_t kBlock = 32;
  for (int64_t p0 = first; p0 < end; p0 += kBlock) {
    const int64_t p1 = std::min(end, p0 + kBlock);
    for (int64_t c = 0; c < channels; ++c) {
      const int8_t* from = source + c * plane_size;
      for (int64_t p = p0; p < p1; ++p) target[p * channels + c] = from[p];
    }
  }
}

// vq of one channel from its four pair corners: int8_sample()'s operations in its order.
inline int16_t pair_sample(const float w[4], int8_t top_left, int8_t top_right, int8_t bottom_left,
                           int8_t bottom_right) {
  float sum = mul_rn(w[0], static_cast<float>(top_left));
  sum = add_rn(sum, mul_rn(w[1], static_cast<float>(top_right)));
  sum = add_rn(sum, mul_rn(w[2], static_cast<float>(bottom_left)));
  sum = add_rn(sum, mul_rn(w[3], static_cast<float>(bottom_right)));
  return saturate_int8(sum);
}

void gather_portable(const int8_t* image, int64_t pixel_stride, int64_t channels, int32_t width, const int32_t* base,
                     const float* weights, int64_t taps, int64_t corner_stride, int64_t pixels, int16_t* rows,
                     int64_t row_stride, int64_t tap_step) {
  const int64_t below = static_cast<int64_t>(width) * pixel_stride;
  for (int64_t p = 0; p < pixels; ++p) {
    const int64_t slot = (p / 8) * kWeightsPerOctet + pair_weight_slot(p % 8);
    for (int64_t tap = 0; tap < taps; ++tap) {
      const float* w = weights + tap * 4 * corner_stride + slot;
      const float corner_weights[4] = {w[0], w[1], w[16], w[17]};
      const int8_t* corner = image + base[tap * corner_stride + p] * pixel_stride;
      int16_t* out = rows + p * row_stride + tap * tap_step;
      for (int64_t c = 0; c < channels; ++c) {
        out[c] = pair_sample(corner_weights, corner[c], corner[pixel_stride + c], corner[below + c],
                             corner[below + pixel_stride + c]);
      }
    }
  }
}

void gemm_portable(int64_t panels, int64_t pairs, const int32_t* packed, const int16_t* rows, int64_t row_stride,
                   int64_t pixels, int32_t* acc, int64_t acc_stride, bool first) {
  for (int64_t j = 0; j < panels; ++j) {
    for (int64_t q = 0; q < pixels; ++q) {
      int32_t* sums = acc + j * acc_stride + q * kInt8PanelChannels;
      int32_t local[kInt8PanelChannels];
      for (int64_t l = 0; l < kInt8PanelChannels; ++l) local[l] = first ? 0 : sums[l];
      const int16_t* row = rows + q * row_stride;
      for (int64_t i = 0; i < pairs; ++i) {
        const int32_t even = row[2 * i];
        const int32_t odd = row[2 * i + 1];
        const int32_t* w = packed + (j * pairs + i) * kInt8PanelChannels;
        for (int64_t l = 0; l < kInt8PanelChannels; ++l) {
          const uint32_t bits = static_cast<uint32_t>(w[l]);
          local[l] += even * static_cast<int16_t>(bits & 0xffffu) + odd * static_cast<int16_t>(bits >> 16);
        }
      }
      std::memcpy(sums, local, sizeof local);
    }
  }
}

const Int8KernelSet kPortable = {"portable", to_channels_last_portable, gather_portable, gemm_portable};

// -------------------------------------------------------------------- AVX2
#if DCN_HAVE_AVX2_INT8_KERNELS

// Channels-last copy in blocks of 8 channels x 8 pixels: eight 8-byte loads
// (one per channel), a byte transpose by three rounds of unpacks, eight 8-byte
// stores (one per pixel); the pixels past the last full block one at a time.
DCN_AVX2 void to_channels_last_avx2(const int8_t* source, int64_t plane_size, int64_t channels, int64_t first,
                                    int64_t end, int8_t* target) {
  int64_t p = first;
  for (; p + 8 <= end && channels % 8 == 0; p += 8) {
    for (int64_t c = 0; c < channels; c += 8) {
      __m128i row[8];
      for (int i = 0; i < 8; ++i) {
        row[i] = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(source + (c + i) * plane_size + p));
      }
      // Bytes of channel pairs, then quads, then all eight, per pixel.
      const __m128i pair01 = _mm_unpacklo_epi8(row[0], row[1]);
      const __m128i pair23 = _mm_unpacklo_epi8(row[2], row[3]);
      const __m128i pair45 = _mm_unpacklo_epi8(row[4], row[5]);
      const __m128i pair67 = _mm_unpacklo_epi8(row[6], row[7]);
      const __m128i quad_low03 = _mm_unpacklo_epi16(pair01, pair23);   // pixels 0-3, channels 0-3
      const __m128i quad_high03 = _mm_unpackhi_epi16(pair01, pair23);  // pixels 4-7, channels 0-3
      const __m128i quad_low47 = _mm_unpacklo_epi16(pair45, pair67);   // pixels 0-3, channels 4-7
      const __m128i quad_high47 = _mm_unpackhi_epi16(pair45, pair67);  // pixels 4-7, channels 4-7
      const __m128i pixels[4] = {_mm_unpacklo_epi32(quad_low03, quad_low47), _mm_unpackhi_epi32(quad_low03, quad_low47),
                                 _mm_unpacklo_epi32(quad_high03, quad_high47),
                                 _mm_unpackhi_epi32(quad_high03, quad_high47)};
      for (int i = 0; i < 4; ++i) {
        _mm_storel_epi64(reinterpret_cast<__m128i*>(target + (p + 2 * i) * channels + c), pixels[i]);
        _mm_storel_epi64(reinterpret_cast<__m128i*>(target + (p + 2 * i + 1) * channels + c),
                         _mm_unpackhi_epi64(pixels[i], pixels[i]));
      }
    }
  }
  to_channels_last_portable(source, plane_size, channels, p, end, target);
}

// 8 int8 of one corner widened to float32.
DCN_AVX2 inline __m256 load8_as_float(const int8_t* source) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(source))));
}

// 8 channels per step; the same operations as pair_sample() lane by lane
// (mul and add separately, file compiled without FMA contraction), then
// saturate_int8: NaN -> 0, clamp to [-128, 127], round half to even
// (cvtps2dq in the default rounding mode).
DCN_AVX2 void gather_avx2(const int8_t* image, int64_t pixel_stride, int64_t channels, int32_t width,
                          const int32_t* base, const float* weights, int64_t taps, int64_t corner_stride,
                          int64_t pixels, int16_t* rows, int64_t row_stride, int64_t tap_step) {
  const int64_t below = static_cast<int64_t>(width) * pixel_stride;
  const __m256 low = _mm256_set1_ps(-128.0f);
  const __m256 high = _mm256_set1_ps(127.0f);
  for (int64_t p = 0; p < pixels; ++p) {
    const int64_t slot = (p / 8) * kWeightsPerOctet + pair_weight_slot(p % 8);
    for (int64_t tap = 0; tap < taps; ++tap) {
      const float* w = weights + tap * 4 * corner_stride + slot;
      const __m256 w00 = _mm256_broadcast_ss(w);
      const __m256 w01 = _mm256_broadcast_ss(w + 1);
      const __m256 w10 = _mm256_broadcast_ss(w + 16);
      const __m256 w11 = _mm256_broadcast_ss(w + 17);
      const int8_t* corner = image + base[tap * corner_stride + p] * pixel_stride;
      int16_t* out = rows + p * row_stride + tap * tap_step;
      for (int64_t c = 0; c < channels; c += 8) {
        __m256 sum = _mm256_mul_ps(w00, load8_as_float(corner + c));
        sum = _mm256_add_ps(sum, _mm256_mul_ps(w01, load8_as_float(corner + pixel_stride + c)));
        sum = _mm256_add_ps(sum, _mm256_mul_ps(w10, load8_as_float(corner + below + c)));
        sum = _mm256_add_ps(sum, _mm256_mul_ps(w11, load8_as_float(corner + below + pixel_stride + c)));
        sum = _mm256_and_ps(sum, _mm256_cmp_ps(sum, sum, _CMP_ORD_Q));
        sum = _mm256_min_ps(_mm256_max_ps(sum, low), high);
        const __m256i rounded = _mm256_cvtps_epi32(sum);
        const __m128i packed =
            _mm_packs_epi32(_mm256_castsi256_si128(rounded), _mm256_extracti128_si256(rounded, 1));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + c), packed);
      }
    }
  }
}

// R pixels x 16 output channels: one vpmaddwd multiplies a broadcast pair of
// a pixel's samples by the weight pairs of 8 channels (exact: |sum| <= 2^15).
template <int R>
DCN_AVX2 void gemm_micro_avx2(int64_t pairs, const int32_t* packed, const int16_t* rows, int64_t row_stride,
                              int32_t* acc, bool first) {
  __m256i sum0[R], sum1[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    sum0[r] = first ? _mm256_setzero_si256()
                    : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + r * kInt8PanelChannels));
    sum1[r] = first ? _mm256_setzero_si256()
                    : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + r * kInt8PanelChannels + 8));
  }
  for (int64_t i = 0; i < pairs; ++i) {
    const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(packed + i * kInt8PanelChannels));
    const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(packed + i * kInt8PanelChannels + 8));
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      int32_t pair;
      std::memcpy(&pair, rows + r * row_stride + 2 * i, sizeof pair);
      const __m256i b = _mm256_set1_epi32(pair);
      sum0[r] = _mm256_add_epi32(sum0[r], _mm256_madd_epi16(b, w0));
      sum1[r] = _mm256_add_epi32(sum1[r], _mm256_madd_epi16(b, w1));
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + r * kInt8PanelChannels), sum0[r]);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + r * kInt8PanelChannels + 8), sum1[r]);
  }
}

constexpr int64_t kInt8MicroPixels = 4;

DCN_AVX2 void gemm_avx2(int64_t panels, int64_t pairs, const int32_t* packed, const int16_t* rows,
                        int64_t row_stride, int64_t pixels, int32_t* acc, int64_t acc_stride, bool first) {
  // Pairs in slices so one panel's slice of weights stays in L1 while every
  // pixel of the tile passes over it; each slice continues the exact sums.
  const int64_t slices = (pairs + kPairSlice - 1) / kPairSlice;
  const int64_t slice = slices > 0 ? (pairs + slices - 1) / slices : 0;
  for (int64_t i0 = 0; i0 < pairs; i0 += slice) {
    const int64_t count = std::min(slice, pairs - i0);
    const bool start = first && i0 == 0;
    for (int64_t j = 0; j < panels; ++j) {
      const int32_t* w = packed + (j * pairs + i0) * kInt8PanelChannels;
      int32_t* a = acc + j * acc_stride;
      for (int64_t q = 0; q < pixels; q += kInt8MicroPixels) {
        const int16_t* g = rows + q * row_stride + 2 * i0;
        int32_t* aq = a + q * kInt8PanelChannels;
        switch (std::min(kInt8MicroPixels, pixels - q)) {
          case 4: gemm_micro_avx2<4>(count, w, g, row_stride, aq, start); break;
          case 3: gemm_micro_avx2<3>(count, w, g, row_stride, aq, start); break;
          case 2: gemm_micro_avx2<2>(count, w, g, row_stride, aq, start); break;
          default: gemm_micro_avx2<1>(count, w, g, row_stride, aq, start); break;
        }
      }
    }
  }
}

const Int8KernelSet kAvx2 = {"avx2", to_channels_last_avx2, gather_avx2, gemm_avx2};

bool cpu_has_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2");
}
#endif  // DCN_HAVE_AVX2_INT8_KERNELS

}  // namespace

const Int8KernelSet& portable_int8_kernels() { return kPortable; }

const Int8KernelSet* avx2_int8_kernels() {
#if DCN_HAVE_AVX2_INT8_KERNELS
  static const bool supported = cpu_has_avx2();
  return supported ? &kAvx2 : nullptr;
#else
  return nullptr;
#endif
}

const Int8KernelSet& int8_kernels() {
  const Int8KernelSet* avx2 = portable_kernels_forced() ? nullptr : avx2_int8_kernels();
  return avx2 ? *avx2 : portable_int8_kernels();
}

}  // namespace cpu
}  // namespace dcn_deploy
