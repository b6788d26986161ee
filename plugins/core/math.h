// Per-element math of deformable convolution (ONNX DeformConv-19 semantics,
// identical to torchvision.ops.deform_conv2d), shared by every backend.
//
// Everything here is a small inline function usable from host code and from
// CUDA device code, so the CPU kernel, the CUDA kernel and the TensorRT plugin
// cannot drift apart on border handling or weight order.
#pragma once

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#include <cuda_fp16.h>
#define DCN_HOST_DEVICE __host__ __device__
#else
#define DCN_HOST_DEVICE
#endif

namespace dcn_deploy {

// Index value of a bilinear corner that lies outside the input plane.
constexpr int32_t kOutsideCorner = -1;

// The four bilinear neighbours of a sampling point, in the order
// (y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1).
// `index` is the row-major offset into one H x W plane, or kOutsideCorner
// for a corner outside [0, H) x [0, W) (such a corner contributes 0).
struct BilinearCorners {
  int32_t index[4];
  float weight[4];
};

// Sampling coordinate along one axis for output position `out_pos` and kernel
// tap `tap`: out_pos * stride - pad_begin + tap * dilation + offset.
DCN_HOST_DEVICE inline float sampling_coordinate(int32_t out_pos, int32_t stride, int32_t pad_begin,
                                                 int32_t tap, int32_t dilation, float offset) {
  return static_cast<float>(out_pos * stride - pad_begin + tap * dilation) + offset;
}

// True when the point (y, x) has at least one bilinear corner inside an
// H x W plane. Written as a positive range test so that NaN and +-Inf
// coordinates fail it and are never converted to an index.
DCN_HOST_DEVICE inline bool sample_is_inside(float y, float x, int32_t height, int32_t width) {
  return y > -1.0f && y < static_cast<float>(height) && x > -1.0f && x < static_cast<float>(width);
}

// Corners of a sample that is entirely outside the plane: all contribute 0.
DCN_HOST_DEVICE inline BilinearCorners outside_corners() {
  BilinearCorners corners;
  for (int q = 0; q < 4; ++q) {
    corners.index[q] = kOutsideCorner;
    corners.weight[q] = 0.0f;
  }
  return corners;
}

// Bilinear corners and weights of (y, x). Precondition:
// sample_is_inside(y, x, height, width), which keeps floor() in int32 range.
DCN_HOST_DEVICE inline BilinearCorners bilinear_corners(float y, float x, int32_t height, int32_t width) {
  const float y_floor = floorf(y);
  const float x_floor = floorf(x);
  const int32_t y0 = static_cast<int32_t>(y_floor);
  const int32_t x0 = static_cast<int32_t>(x_floor);
  const int32_t y1 = y0 + 1;
  const int32_t x1 = x0 + 1;
  const float ly = y - y_floor;
  const float lx = x - x_floor;
  const float hy = 1.0f - ly;
  const float hx = 1.0f - lx;

  const bool y0_in = y0 >= 0;
  const bool y1_in = y1 < height;
  const bool x0_in = x0 >= 0;
  const bool x1_in = x1 < width;

  BilinearCorners corners;
  corners.index[0] = (y0_in && x0_in) ? y0 * width + x0 : kOutsideCorner;
  corners.index[1] = (y0_in && x1_in) ? y0 * width + x1 : kOutsideCorner;
  corners.index[2] = (y1_in && x0_in) ? y1 * width + x0 : kOutsideCorner;
  corners.index[3] = (y1_in && x1_in) ? y1 * width + x1 : kOutsideCorner;
  corners.weight[0] = hy * hx;
  corners.weight[1] = hy * lx;
  corners.weight[2] = ly * hx;
  corners.weight[3] = ly * lx;
  return corners;
}

// Corners of (y, x), whether or not it is inside the plane.
DCN_HOST_DEVICE inline BilinearCorners sample_corners(float y, float x, int32_t height, int32_t width) {
  return sample_is_inside(y, x, height, width) ? bilinear_corners(y, x, height, width) : outside_corners();
}

// Index of element (image, channel, pixel) of X or Y in a layout of
// core/params.h (TensorLayout): `padded` channels Cp, `block` channels per
// block B, `pixels` = H*W. Planar: padded = C, block = 1.
DCN_HOST_DEVICE inline int64_t layout_offset(int64_t image, int64_t channel, int64_t pixel, int64_t pixels,
                                             int64_t padded, int64_t block) {
  return (image * padded + channel - channel % block) * pixels + pixel * block + channel % block;
}

// Storage types are widened to float32 on load and narrowed (round to nearest
// even) on store: all arithmetic is float32 whatever the tensors hold.
DCN_HOST_DEVICE inline float load_as_float(float value) { return value; }
DCN_HOST_DEVICE inline float load_as_float(int8_t value) { return static_cast<float>(value); }
template <typename T>
DCN_HOST_DEVICE inline T store_from_float(float value);
template <>
DCN_HOST_DEVICE inline float store_from_float<float>(float value) { return value; }
#ifdef __CUDACC__
DCN_HOST_DEVICE inline float load_as_float(__half value) { return __half2float(value); }
template <>
DCN_HOST_DEVICE inline __half store_from_float<__half>(float value) { return __float2half_rn(value); }
#endif

// Load of data no kernel writes (X, W): ld.global.nc on the GPU, which the
// compiler may also move across shared-memory stores; a plain load on the host.
template <typename T>
DCN_HOST_DEVICE inline T load_readonly(const T* address) {
#if defined(__CUDA_ARCH__)
  return __ldg(address);
#else
  return *address;
#endif
}

// Value of one corner: plane[index], or 0 for an outside corner. Reads
// plane[0] for outside corners and discards it, so loops over many samples
// stay branch-free; `plane` must therefore hold at least one element
// (height, width >= 1; callers handle empty planes separately).
template <typename T>
DCN_HOST_DEVICE inline float corner_value(const T* plane, int32_t index) {
  const float value = load_as_float(load_readonly(plane + (index < 0 ? 0 : index)));
  return index < 0 ? 0.0f : value;
}

// Bilinear interpolation of one corner set. Outside corners contribute 0 even
// when the plane holds Inf/NaN, as in torchvision.
template <typename T>
DCN_HOST_DEVICE inline float interpolate(const T* plane, const BilinearCorners& corners) {
  return corners.weight[0] * corner_value(plane, corners.index[0]) +
         corners.weight[1] * corner_value(plane, corners.index[1]) +
         corners.weight[2] * corner_value(plane, corners.index[2]) +
         corners.weight[3] * corner_value(plane, corners.index[3]);
}

// Bilinear sample of an H x W plane at (y, x), zero outside the plane.
// Never reads memory for a sample that is entirely outside.
template <typename T>
DCN_HOST_DEVICE inline float bilinear_sample(const T* plane, int32_t height, int32_t width, float y, float x) {
  if (!sample_is_inside(y, x, height, width)) {
    return 0.0f;
  }
  return interpolate(plane, bilinear_corners(y, x, height, width));
}

// ---------------------------------------------------------------------------
// INT8 DeformConv (definition: dcn_deploy/op/int8.py). Every step is float32 with
// one rounding per operation in a fixed order: no FMA contraction (the
// __f*_rn intrinsics are never fused by nvcc; host code is compiled without
// -mfma), so every backend computes the reference's bits.

DCN_HOST_DEVICE inline float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

DCN_HOST_DEVICE inline float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

DCN_HOST_DEVICE inline float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

// saturate_int8(round_half_to_even(value)); NaN gives 0. Clamping first keeps
// the rounding in range and gives the same result as rounding first.
DCN_HOST_DEVICE inline int8_t saturate_int8(float value) {
  if (!(value == value)) return 0;
  const float clamped = value < -128.0f ? -128.0f : (value > 127.0f ? 127.0f : value);
#if defined(__CUDA_ARCH__)
  return static_cast<int8_t>(__float2int_rn(clamped));
#else
  // Adding and subtracting 1.5 * 2^23 rounds |v| < 2^22 to an integer, half to
  // even, in the default rounding mode, without a libm call.
  const float magic = 12582912.0f;
  return static_cast<int8_t>(static_cast<int32_t>((clamped + magic) - magic));
#endif
}

// Corners with the mask folded into each weight (weight * mask, as the
// reference computes it).
DCN_HOST_DEVICE inline BilinearCorners fold_mask(BilinearCorners corners, float mask) {
  for (int q = 0; q < 4; ++q) corners.weight[q] = mul_rn(corners.weight[q], mask);
  return corners;
}

// The requantized sample vq of one (channel, tap, pixel) from corners with the
// mask folded in: the four products of the int8 plane summed in corner order,
// saturated to int8.
DCN_HOST_DEVICE inline int8_t int8_sample(const int8_t* plane, const BilinearCorners& folded) {
  float sum = mul_rn(folded.weight[0], corner_value(plane, folded.index[0]));
  sum = add_rn(sum, mul_rn(folded.weight[1], corner_value(plane, folded.index[1])));
  sum = add_rn(sum, mul_rn(folded.weight[2], corner_value(plane, folded.index[2])));
  sum = add_rn(sum, mul_rn(folded.weight[3], corner_value(plane, folded.index[3])));
  return saturate_int8(sum);
}

// Y = float32(acc) * output_scale + bias (output_scale = float32(x_scale * w_scale[o])).
DCN_HOST_DEVICE inline float int8_output(int32_t acc, float output_scale, float bias) {
  return add_rn(mul_rn(static_cast<float>(acc), output_scale), bias);
}

// Yq = saturate_int8(round_half_to_even(Y / y_scale)).
DCN_HOST_DEVICE inline int8_t int8_requantize(float y, float y_scale) { return saturate_int8(div_rn(y, y_scale)); }

}  // namespace dcn_deploy
