#include "cpu/kernels/float_kernels.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DCN_HAVE_AVX2_KERNELS 1
#include <immintrin.h>
#define DCN_AVX2 __attribute__((target("avx2,fma")))
#else
#define DCN_HAVE_AVX2_KERNELS 0
#endif

namespace dcn_deploy {
namespace cpu {
namespace {

// ---------------------------------------------------------------- portable

void store_pair_corner(int64_t p, int32_t base_value, const float weight[4], int32_t* base, float* weights) {
  base[p] = base_value;
  float* w = weights + (p / 8) * kWeightsPerOctet + pair_weight_slot(p % 8);
  w[0] = weight[0];
  w[1] = weight[1];
  w[16] = weight[2];
  w[17] = weight[3];
}

// Pixels [first, padded) one at a time; the pixels from `count` on are padding (weight 0).
void pair_corners_from(int64_t first, const int32_t* row_start, const int32_t* col_start, int32_t tap_y,
                       int32_t tap_x, const float* offset_y, const float* offset_x, const float* mask, int64_t count,
                       int64_t padded, int32_t height, int32_t width, int32_t* base, float* weights) {
  for (int64_t p = first; p < padded; ++p) {
    int32_t base_value = 0;
    float weight[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    if (p < count) {
      pair_corner(row_start[p], col_start[p], tap_y, tap_x, offset_y[p], offset_x[p], mask ? mask[p] : 1.0f,
                  height, width, &base_value, weight);
    }
    store_pair_corner(p, base_value, weight, base, weights);
  }
}

void pair_corners_portable(const int32_t* row_start, const int32_t* col_start, int32_t tap_y, int32_t tap_x,
                           const float* offset_y, const float* offset_x, const float* mask, int64_t count,
                           int64_t padded, int32_t height, int32_t width, int32_t* base, float* weights) {
  pair_corners_from(0, row_start, col_start, tap_y, tap_x, offset_y, offset_x, mask, count, padded, height, width,
                    base, weights);
}

void gather_pairs_portable(const float* planes, int64_t plane_size, int64_t channels, int32_t width,
                           const int32_t* base, const float* weights, int64_t pixels, float* panels, int64_t rows,
                           int64_t row_begin, int64_t row_step) {
  const int64_t stride = panel_stride(rows);
  for (int64_t c = 0; c < channels; ++c) {
    const float* plane = planes + c * plane_size;
    float* row = panels + (row_begin + c * row_step) * kPanelPixels;
    for (int64_t p = 0; p < pixels; ++p) {
      const float* w = weights + (p / 8) * kWeightsPerOctet + pair_weight_slot(p % 8);
      const float* top = plane + base[p];
      const float* bottom = top + width;
      row[(p / kPanelPixels) * stride + p % kPanelPixels] =
          (w[0] * top[0] + w[1] * top[1]) + (w[16] * bottom[0] + w[17] * bottom[1]);
    }
  }
}

// C rows [0, R) x pixels [0, count) of one panel; the q loops have a constant
// trip count so the compiler vectorises them for the baseline ISA.
template <int R>
void micro_portable(int64_t depth, const float* a, int64_t lda, const float* b, float* c, int64_t ldc, int64_t count,
                    const float* bias, bool first) {
  float acc[R][kPanelPixels];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    for (int64_t q = 0; q < kPanelPixels; ++q) {
      acc[r][q] = first ? (bias ? bias[r] : 0.0f) : (q < count ? c[r * ldc + q] : 0.0f);
    }
  }
  for (int64_t k = 0; k < depth; ++k) {
    const float* bk = b + k * kPanelPixels;
  #pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
      const float ar = a[r * lda + k];
      for (int64_t q = 0; q < kPanelPixels; ++q) acc[r][q] += ar * bk[q];
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    for (int64_t q = 0; q < count; ++q) c[r * ldc + q] = acc[r][q];
  }
}

template <template <int> class Micro>
void gemm_blocked(int64_t out_rows, int64_t depth, const float* a, int64_t lda, const float* panels, int64_t pixels,
                  float* c, int64_t ldc, const float* bias, bool first) {
  const int64_t stride = panel_stride(depth);
  for (int64_t m = 0; m < out_rows; m += kPanelRows) {
    const int64_t rows = std::min(kPanelRows, out_rows - m);
    const float* am = a + m * lda;
    const float* bias_m = bias ? bias + m : nullptr;
    for (int64_t p = 0; p * kPanelPixels < pixels; ++p) {
      const float* b = panels + p * stride;
      float* cp = c + m * ldc + p * kPanelPixels;
      const int64_t count = std::min(kPanelPixels, pixels - p * kPanelPixels);
      switch (rows) {
        case 6: Micro<6>::run(depth, am, lda, b, cp, ldc, count, bias_m, first); break;
        case 5: Micro<5>::run(depth, am, lda, b, cp, ldc, count, bias_m, first); break;
        case 4: Micro<4>::run(depth, am, lda, b, cp, ldc, count, bias_m, first); break;
        case 3: Micro<3>::run(depth, am, lda, b, cp, ldc, count, bias_m, first); break;
        case 2: Micro<2>::run(depth, am, lda, b, cp, ldc, count, bias_m, first); break;
        default: Micro<1>::run(depth, am, lda, b, cp, ldc, count, bias_m, first); break;
      }
    }
  }
}

template <int R>
struct PortableMicro {
  static void run(int64_t depth, const float* a, int64_t lda, const float* b, float* c, int64_t ldc, int64_t count,
                  const float* bias, bool first) {
    micro_portable<R>(depth, a, lda, b, c, ldc, count, bias, first);
  }
};

void gemm_portable(int64_t out_rows, int64_t depth, const float* a, int64_t lda, const float* panels, int64_t pixels,
                   float* c, int64_t ldc, const float* bias, bool first) {
  gemm_blocked<PortableMicro>(out_rows, depth, a, lda, panels, pixels, c, ldc, bias, first);
}

void int8_pair_gemm_portable(const int16_t* pairs, int64_t pair_count, int64_t pixels, const int32_t* weight_pairs,
                             int64_t block, int32_t* acc) {
  std::fill(acc, acc + block * pixels, 0);
  for (int64_t b = 0; b < block; ++b) {
    int32_t* out = acc + b * pixels;
    for (int64_t j = 0; j < pair_count; ++j) {
      const int32_t packed = weight_pairs[b * pair_count + j];
      const int32_t low = static_cast<int16_t>(static_cast<uint32_t>(packed) & 0xffffu);
      const int32_t high = static_cast<int16_t>(static_cast<uint32_t>(packed) >> 16);
      const int16_t* row = pairs + j * pixels * 2;
      for (int64_t q = 0; q < pixels; ++q) out[q] += low * row[2 * q] + high * row[2 * q + 1];
    }
  }
}

const KernelSet kPortable = {"portable", pair_corners_portable, gather_pairs_portable, nullptr, nullptr, nullptr,
                             nullptr, gemm_portable, int8_pair_gemm_portable};

// -------------------------------------------------------------- AVX2 + FMA
#if DCN_HAVE_AVX2_KERNELS

// Samples of 8 pixels of one plane from their pair corners: two 8-byte loads
// per pixel (top pair, bottom pair), weighted, then each pixel's pair summed.
DCN_AVX2 inline __m256 sample_octet(const float* plane, int32_t width, const int32_t* base, const __m256* w) {
  const float* t = plane;
  const float* u = plane + width;
  // Two unaligned 8-byte loads combined into one vector (_mm_loadl_epi64 reads
  // through an unaligned type: no alignment assumption).
  auto pairs = [](const float* p, const float* q) {
    return _mm_castsi128_ps(_mm_unpacklo_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)),
                                               _mm_loadl_epi64(reinterpret_cast<const __m128i*>(q))));
  };
  const __m128 t01 = pairs(t + base[0], t + base[1]);
  const __m128 t45 = pairs(t + base[4], t + base[5]);
  const __m128 t23 = pairs(t + base[2], t + base[3]);
  const __m128 t67 = pairs(t + base[6], t + base[7]);
  const __m128 u01 = pairs(u + base[0], u + base[1]);
  const __m128 u45 = pairs(u + base[4], u + base[5]);
  const __m128 u23 = pairs(u + base[2], u + base[3]);
  const __m128 u67 = pairs(u + base[6], u + base[7]);
  // Lanes: [p0 pair, p1 pair | p4 pair, p5 pair] and [p2, p3 | p6, p7].
  const __m256 r0 = _mm256_fmadd_ps(w[2], _mm256_set_m128(u45, u01), _mm256_mul_ps(w[0], _mm256_set_m128(t45, t01)));
  const __m256 r1 = _mm256_fmadd_ps(w[3], _mm256_set_m128(u67, u23), _mm256_mul_ps(w[1], _mm256_set_m128(t67, t23)));
  // Pairwise sums: [p0 p1 p2 p3 | p4 p5 p6 p7].
  return _mm256_hadd_ps(r0, r1);
}

DCN_AVX2 void gather_pairs_avx2(const float* planes, int64_t plane_size, int64_t channels, int32_t width,
                                const int32_t* base, const float* weights, int64_t pixels, float* panels,
                                int64_t rows, int64_t row_begin, int64_t row_step) {
  const int64_t stride = panel_stride(rows);
  // A few planes at a time, so their neighbourhoods of the tile stay in L1
  // while the corner weights of each group of 8 pixels are loaded once.
  constexpr int64_t kChannelBlock = 4;
  for (int64_t c0 = 0; c0 < channels; c0 += kChannelBlock) {
    const int64_t c1 = std::min(channels, c0 + kChannelBlock);
    for (int64_t p = 0; p < pixels; p += 8) {
      const float* wp = weights + (p / 8) * kWeightsPerOctet;
      const __m256 w[4] = {_mm256_loadu_ps(wp), _mm256_loadu_ps(wp + 8), _mm256_loadu_ps(wp + 16),
                           _mm256_loadu_ps(wp + 24)};
      float* out = panels + (p / kPanelPixels) * stride + p % kPanelPixels;
      for (int64_t c = c0; c < c1; ++c) {
        _mm256_storeu_ps(out + (row_begin + c * row_step) * kPanelPixels,
                         sample_octet(planes + c * plane_size, width, base + p, w));
      }
    }
  }
}

// acc{0,1}[r] += rows[r][k] * panel[k][0..16) for k < depth: the inner loop
// shared by both micro-kernels (R broadcast rows against one 16-wide panel).
template <int R>
DCN_AVX2 inline void fma_rows_by_panel(int64_t depth, const float* const* rows, const float* panel, __m256* acc0,
                                       __m256* acc1) {
#pragma GCC unroll 2
  for (int64_t k = 0; k < depth; ++k) {
    const __m256 b0 = _mm256_loadu_ps(panel + k * kPanelPixels);
    const __m256 b1 = _mm256_loadu_ps(panel + k * kPanelPixels + 8);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m256 av = _mm256_broadcast_ss(rows[r] + k);
      acc0[r] = _mm256_fmadd_ps(av, b0, acc0[r]);
      acc1[r] = _mm256_fmadd_ps(av, b1, acc1[r]);
    }
  }
}

template <int R>
struct Avx2Micro {
  DCN_AVX2 static void run(int64_t depth, const float* a, int64_t lda, const float* b, float* c, int64_t ldc,
                           int64_t count, const float* bias, bool first) {
    __m256 acc0[R], acc1[R];
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i mask0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(count)), lane);
    const __m256i mask1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(count) - 8), lane);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      if (first) {
        acc0[r] = acc1[r] = bias ? _mm256_broadcast_ss(bias + r) : _mm256_setzero_ps();
      } else if (count == kPanelPixels) {
        acc0[r] = _mm256_loadu_ps(c + r * ldc);
        acc1[r] = _mm256_loadu_ps(c + r * ldc + 8);
      } else {
        acc0[r] = _mm256_maskload_ps(c + r * ldc, mask0);
        acc1[r] = _mm256_maskload_ps(c + r * ldc + 8, mask1);
      }
    }
    const float* ar[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) ar[r] = a + r * lda;
    fma_rows_by_panel<R>(depth, ar, b, acc0, acc1);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      if (count == kPanelPixels) {
        _mm256_storeu_ps(c + r * ldc, acc0[r]);
        _mm256_storeu_ps(c + r * ldc + 8, acc1[r]);
      } else {
        _mm256_maskstore_ps(c + r * ldc, mask0, acc0[r]);
        _mm256_maskstore_ps(c + r * ldc + 8, mask1, acc1[r]);
      }
    }
  }
};

DCN_AVX2 void gemm_avx2(int64_t out_rows, int64_t depth, const float* a, int64_t lda, const float* panels,
                        int64_t pixels, float* c, int64_t ldc, const float* bias, bool first) {
  gemm_blocked<Avx2Micro>(out_rows, depth, a, lda, panels, pixels, c, ldc, bias, first);
}

// pair_corner() for 8 pixels at a time, same operations in the same order.
DCN_AVX2 void pair_corners_avx2(const int32_t* row_start, const int32_t* col_start, int32_t tap_y, int32_t tap_x,
                                const float* offset_y, const float* offset_x, const float* mask, int64_t count,
                                int64_t padded, int32_t height, int32_t width, int32_t* base, float* weights) {
  const __m256i tap_y8 = _mm256_set1_epi32(tap_y);
  const __m256i tap_x8 = _mm256_set1_epi32(tap_x);
  const __m256 minus_one = _mm256_set1_ps(-1.0f);
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 zero = _mm256_setzero_ps();
  const __m256 height8 = _mm256_set1_ps(static_cast<float>(height));
  const __m256 width8 = _mm256_set1_ps(static_cast<float>(width));
  const __m256i zero_i = _mm256_setzero_si256();
  const __m256i last_y = _mm256_set1_epi32(height - 2);
  const __m256i last_x = _mm256_set1_epi32(width - 2);
  const __m256i width_i = _mm256_set1_epi32(width);
  int64_t p = 0;
  for (; p + 8 <= count; p += 8) {
    const __m256 y = _mm256_add_ps(
        _mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row_start + p)), tap_y8)),
        _mm256_loadu_ps(offset_y + p));
    const __m256 x = _mm256_add_ps(
        _mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(col_start + p)), tap_x8)),
        _mm256_loadu_ps(offset_x + p));
    const __m256 inside = _mm256_and_ps(
        _mm256_and_ps(_mm256_cmp_ps(y, minus_one, _CMP_GT_OQ), _mm256_cmp_ps(y, height8, _CMP_LT_OQ)),
        _mm256_and_ps(_mm256_cmp_ps(x, minus_one, _CMP_GT_OQ), _mm256_cmp_ps(x, width8, _CMP_LT_OQ)));
    // Outside samples (NaN included) continue from coordinate 0; masked at the end.
    const __m256 ys = _mm256_and_ps(y, inside);
    const __m256 xs = _mm256_and_ps(x, inside);
    const __m256 y_floor = _mm256_floor_ps(ys);
    const __m256 x_floor = _mm256_floor_ps(xs);
    const __m256i y0 = _mm256_cvttps_epi32(y_floor);
    const __m256i x0 = _mm256_cvttps_epi32(x_floor);
    const __m256 ly = _mm256_sub_ps(ys, y_floor);
    const __m256 lx = _mm256_sub_ps(xs, x_floor);
    const __m256 hy = _mm256_sub_ps(one, ly);
    const __m256 hx = _mm256_sub_ps(one, lx);
    const __m256 y_low = _mm256_castsi256_ps(_mm256_cmpgt_epi32(zero_i, y0));   // y0 < 0
    const __m256 y_high = _mm256_castsi256_ps(_mm256_cmpgt_epi32(y0, last_y));  // y0 > H - 2
    const __m256 x_low = _mm256_castsi256_ps(_mm256_cmpgt_epi32(zero_i, x0));
    const __m256 x_high = _mm256_castsi256_ps(_mm256_cmpgt_epi32(x0, last_x));
    const __m256 top = _mm256_and_ps(_mm256_blendv_ps(_mm256_blendv_ps(hy, zero, y_high), ly, y_low), inside);
    const __m256 bottom = _mm256_and_ps(_mm256_blendv_ps(_mm256_blendv_ps(ly, hy, y_high), zero, y_low), inside);
    const __m256 left = _mm256_and_ps(_mm256_blendv_ps(_mm256_blendv_ps(hx, zero, x_high), lx, x_low), inside);
    const __m256 right = _mm256_and_ps(_mm256_blendv_ps(_mm256_blendv_ps(lx, hx, x_high), zero, x_low), inside);
    const __m256i block_y = _mm256_min_epi32(_mm256_max_epi32(y0, zero_i), last_y);
    const __m256i block_x = _mm256_min_epi32(_mm256_max_epi32(x0, zero_i), last_x);
    const __m256i base8 = _mm256_and_si256(
        _mm256_add_epi32(_mm256_mullo_epi32(block_y, width_i), block_x), _mm256_castps_si256(inside));
    const __m256 scale = mask ? _mm256_loadu_ps(mask + p) : one;
    const __m256 w00 = _mm256_mul_ps(_mm256_mul_ps(top, left), scale);
    const __m256 w01 = _mm256_mul_ps(_mm256_mul_ps(top, right), scale);
    const __m256 w10 = _mm256_mul_ps(_mm256_mul_ps(bottom, left), scale);
    const __m256 w11 = _mm256_mul_ps(_mm256_mul_ps(bottom, right), scale);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(base + p), base8);
    float* w = weights + (p / 8) * kWeightsPerOctet;
    // unpacklo: pixels 0, 1 | 4, 5 as (w00, w01) pairs; unpackhi: 2, 3 | 6, 7.
    _mm256_storeu_ps(w, _mm256_unpacklo_ps(w00, w01));
    _mm256_storeu_ps(w + 8, _mm256_unpackhi_ps(w00, w01));
    _mm256_storeu_ps(w + 16, _mm256_unpacklo_ps(w10, w11));
    _mm256_storeu_ps(w + 24, _mm256_unpackhi_ps(w10, w11));
  }
  pair_corners_from(p, row_start, col_start, tap_y, tap_x, offset_y, offset_x, mask, count, padded, height, width,
                    base, weights);
}

// 8 x 8 transpose: rows[i][j] -> rows[j][i].
DCN_AVX2 inline void transpose8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]);
  const __m256 t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]);
  const __m256 t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]);
  const __m256 t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]);
  const __m256 t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// Channels-last copy in 8 x 8 blocks (8 channels x 8 pixels, transposed in
// registers); pixels past the last full block of 8 one at a time. A value is
// Inf or NaN exactly when its exponent bits are all ones.
DCN_AVX2 bool to_channels_last_avx2(const float* source, int64_t plane_size, int64_t channels, int64_t first,
                                    int64_t end, float* target) {
  const __m256i exponent = _mm256_set1_epi32(0x7f800000);
  __m256i non_finite = _mm256_setzero_si256();
  int64_t p = first;
  for (; p + 8 <= end; p += 8) {
    for (int64_t c = 0; c < channels; c += 8) {
      __m256 v[8];
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) {
        v[i] = _mm256_loadu_ps(source + (c + i) * plane_size + p);
        const __m256i bits = _mm256_and_si256(_mm256_castps_si256(v[i]), exponent);
        non_finite = _mm256_or_si256(non_finite, _mm256_cmpeq_epi32(bits, exponent));
      }
      transpose8(v);
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) _mm256_storeu_ps(target + (p + i) * channels + c, v[i]);
    }
  }
  bool finite = _mm256_testz_si256(non_finite, non_finite) != 0;
  for (; p < end; ++p) {
    for (int64_t c = 0; c < channels; ++c) {
      const float value = source[c * plane_size + p];
      finite = finite && std::isfinite(value);
      target[p * channels + c] = value;
    }
  }
  return finite;
}

// Channels-last gather: per pixel and tap, 8 channels of each corner are one
// contiguous load, and the 8 samples one contiguous store into the pixel's row.
DCN_AVX2 void gather_channels_last_avx2(const float* image, int64_t pixel_stride, int64_t channels, int32_t width,
                                        const int32_t* base, const float* weights, int64_t taps,
                                        int64_t corner_stride, int64_t pixels, float* rows, int64_t row_stride,
                                        int64_t tap_step) {
  const int64_t below = static_cast<int64_t>(width) * pixel_stride;
  for (int64_t p = 0; p < pixels; ++p) {
    const int64_t slot = (p / 8) * kWeightsPerOctet + pair_weight_slot(p % 8);
    for (int64_t tap = 0; tap < taps; ++tap) {
      const float* w = weights + tap * 4 * corner_stride + slot;
      const __m256 w00 = _mm256_broadcast_ss(w);
      const __m256 w01 = _mm256_broadcast_ss(w + 1);
      const __m256 w10 = _mm256_broadcast_ss(w + 16);
      const __m256 w11 = _mm256_broadcast_ss(w + 17);
      const float* corner = image + base[tap * corner_stride + p] * pixel_stride;
      float* out = rows + p * row_stride + tap * tap_step;
      for (int64_t c = 0; c < channels; c += 8) {
        const __m256 top = _mm256_fmadd_ps(w01, _mm256_loadu_ps(corner + pixel_stride + c),
                                           _mm256_mul_ps(w00, _mm256_loadu_ps(corner + c)));
        const __m256 bottom = _mm256_fmadd_ps(w11, _mm256_loadu_ps(corner + below + pixel_stride + c),
                                              _mm256_mul_ps(w10, _mm256_loadu_ps(corner + below + c)));
        _mm256_storeu_ps(out + c, _mm256_add_ps(top, bottom));
      }
    }
  }
}

// R pixels x 16 output channels: the pixels' row values are broadcast, the
// packed weights loaded as two vectors per depth step.
template <int R>
struct Avx2PixelMicro {
  DCN_AVX2 static void run(int64_t depth, const float* packed, const float* rows, int64_t row_stride, float* acc,
                           bool first) {
    __m256 acc0[R], acc1[R];
    const float* g[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      acc0[r] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(acc + r * kPanelPixels);
      acc1[r] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(acc + r * kPanelPixels + 8);
      g[r] = rows + r * row_stride;
    }
    fma_rows_by_panel<R>(depth, g, packed, acc0, acc1);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      _mm256_storeu_ps(acc + r * kPanelPixels, acc0[r]);
      _mm256_storeu_ps(acc + r * kPanelPixels + 8, acc1[r]);
    }
  }
};


// Depth slice of the pixel-major GEMM: 256 * 16 floats (16 KiB) of weights
// stay in L1 (measured: 64 channels, depth 576 in 2 slices, about 8% faster
// than one pass; neutral on 128 and 512 channels).
constexpr int64_t kDepthSlice = 256;

DCN_AVX2 void gemm_pixel_major_avx2(int64_t panels, int64_t depth, const float* packed, const float* rows,
                                    int64_t row_stride, int64_t pixels, float* acc, int64_t acc_stride, bool first) {
  // Depth in slices of at most kDepthSlice (about equal), so the 16-channel
  // weight slice (kDepthSlice * 64 bytes) stays in L1 while every pixel
  // group of the tile is multiplied with it. The summation order over k is
  // unchanged (each slice continues the sums of the previous one).
  const int64_t slices = (depth + kDepthSlice - 1) / kDepthSlice;
  const int64_t slice = (depth + slices - 1) / slices;
  for (int64_t k0 = 0; k0 < depth; k0 += slice) {
    const int64_t kc = std::min(slice, depth - k0);
    const bool start = first && k0 == 0;
    for (int64_t j = 0; j < panels; ++j) {
      const float* w = packed + (j * depth + k0) * kPanelPixels;
      float* a = acc + j * acc_stride;
      for (int64_t q = 0; q < pixels; q += kPanelRows) {
        const float* g = rows + q * row_stride + k0;
        float* aq = a + q * kPanelPixels;
        switch (std::min(kPanelRows, pixels - q)) {
          case 6: Avx2PixelMicro<6>::run(kc, w, g, row_stride, aq, start); break;
          case 5: Avx2PixelMicro<5>::run(kc, w, g, row_stride, aq, start); break;
          case 4: Avx2PixelMicro<4>::run(kc, w, g, row_stride, aq, start); break;
          case 3: Avx2PixelMicro<3>::run(kc, w, g, row_stride, aq, start); break;
          case 2: Avx2PixelMicro<2>::run(kc, w, g, row_stride, aq, start); break;
          default: Avx2PixelMicro<1>::run(kc, w, g, row_stride, aq, start); break;
        }
      }
    }
  }
}

DCN_AVX2 void store_pixel_major_avx2(const float* acc, int64_t acc_stride, int64_t out_rows, int64_t pixels,
                                     const float* bias, float* y, int64_t ldy) {
  for (int64_t m0 = 0; m0 < out_rows; m0 += 8) {
    const float* source = acc + (m0 / kPanelPixels) * acc_stride + m0 % kPanelPixels;
    const int64_t count = std::min<int64_t>(8, out_rows - m0);
    __m256 b[8];
    for (int64_t r = 0; r < 8; ++r) b[r] = _mm256_set1_ps(bias != nullptr && r < count ? bias[m0 + r] : 0.0f);
    int64_t q = 0;
    for (; q + 8 <= pixels; q += 8) {
      __m256 v[8];
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) v[i] = _mm256_loadu_ps(source + (q + i) * kPanelPixels);
      transpose8(v);
      for (int64_t r = 0; r < count; ++r) _mm256_storeu_ps(y + (m0 + r) * ldy + q, _mm256_add_ps(v[r], b[r]));
    }
    for (; q < pixels; ++q) {
      for (int64_t r = 0; r < count; ++r) {
        y[(m0 + r) * ldy + q] = source[q * kPanelPixels + r] + (bias != nullptr ? bias[m0 + r] : 0.0f);
      }
    }
  }
}

// 4 output channels x 16 pixels in 8 accumulators; vpmaddwd multiplies one
// row pair of 8 pixels by a broadcast weight pair (exact: |products| < 2^15 * 2^8).
DCN_AVX2 void int8_pair_gemm_avx2(const int16_t* pairs, int64_t pair_count, int64_t pixels,
                                  const int32_t* weight_pairs, int64_t block, int32_t* acc) {
  for (int64_t q = 0; q < pixels; q += 16) {
    const bool two = q + 16 <= pixels;
    __m256i sums[kInt8ChannelBlock][2];
    for (auto& row : sums) row[0] = row[1] = _mm256_setzero_si256();
    for (int64_t j = 0; j < pair_count; ++j) {
      const int16_t* row = pairs + (j * pixels + q) * 2;
      const __m256i s0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row));
      const __m256i s1 = two ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 16)) : _mm256_setzero_si256();
      for (int64_t b = 0; b < kInt8ChannelBlock; ++b) {
        if (b >= block) break;
        const __m256i w = _mm256_set1_epi32(weight_pairs[b * pair_count + j]);
        sums[b][0] = _mm256_add_epi32(sums[b][0], _mm256_madd_epi16(s0, w));
        sums[b][1] = _mm256_add_epi32(sums[b][1], _mm256_madd_epi16(s1, w));
      }
    }
    for (int64_t b = 0; b < block; ++b) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + b * pixels + q), sums[b][0]);
      if (two) _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + b * pixels + q + 8), sums[b][1]);
    }
  }
}

const KernelSet kAvx2 = {"avx2",           pair_corners_avx2,      gather_pairs_avx2, gather_channels_last_avx2,
                         to_channels_last_avx2, gemm_pixel_major_avx2, store_pixel_major_avx2, gemm_avx2,
                         int8_pair_gemm_avx2};

bool cpu_has_avx2_fma() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif  // DCN_HAVE_AVX2_KERNELS

}  // namespace

const KernelSet& portable_kernels() { return kPortable; }

const KernelSet* avx2_kernels() {
#if DCN_HAVE_AVX2_KERNELS
  static const bool supported = cpu_has_avx2_fma();
  return supported ? &kAvx2 : nullptr;
#else
  return nullptr;
#endif
}

bool portable_kernels_forced() {
  const char* choice = std::getenv("DCN_DEPLOY_CPU_KERNELS");
  return choice != nullptr && std::strcmp(choice, "portable") == 0;
}

const KernelSet& cpu_kernels() {
  const KernelSet* avx2 = portable_kernels_forced() ? nullptr : avx2_kernels();
  return avx2 ? *avx2 : portable_kernels();
}

bool all_finite(const float* data, int64_t count) {
  // Exponent bits all ones <=> Inf or NaN. Blocks keep the loop vectorisable
  // while still stopping early.
  constexpr int64_t kBlock = 4096;
  for (int64_t begin = 0; begin < count; begin += kBlock) {
    const int64_t end = std::min(count, begin + kBlock);
    uint32_t non_finite = 0;
    for (int64_t i = begin; i < end; ++i) {
      uint32_t bits;
      std::memcpy(&bits, data + i, sizeof bits);
      non_finite |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
    }
    if (non_finite != 0) return false;
  }
  return true;
}

}  // namespace cpu
}  // namespace dcn_deploy
