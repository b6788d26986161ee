// The INT8 forms of DcnDeformConv (DcnDeformConvInt8 / DcnDeformConvInt8Requantized;
// definition in dcn_deploy/op/int8.py): X and W int8 with zero point 0, offset,
// mask and bias float, the scales as node attributes.
//
// Backend-independent on purpose: the CPU op, the TensorRT plugin and the
// CUDA C API all check the same scales and derive the same per-channel
// output scales from them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/params.h"

namespace dcn_deploy {

constexpr const char* kInt8OpType = "DcnDeformConvInt8";
constexpr const char* kInt8RequantizedOpType = "DcnDeformConvInt8Requantized";

// Largest C/group*kh*kw whose int32 accumulator cannot overflow: 128*128*n < 2^31
// (|vq| and |Wq| are at most 128: a graph may carry a -128 weight).
constexpr int64_t kMaxInt8ProductsPerOutput = 2147483647 / (128 * 128);

struct DeformConvInt8Scales {
  float x_scale = 0.0f;          // attribute x_scale: X ~ x_scale * Xq
  std::vector<float> w_scale;    // attribute w_scale: W[o] ~ w_scale[o] * Wq[o]; length M (or 1: every channel)
  float y_scale = 0.0f;          // attribute y_scale (Requantized form only): Yq = Y / y_scale; 0: float Y
};

// Checks that every scale is finite and positive and, when out_channels >= 0,
// that w_scale has M (or 1) values. Returns an error message, or "".
std::string check_int8_scales(const std::string& node_name, const DeformConvInt8Scales& scales,
                              int64_t out_channels);

// Checks that the int32 accumulator of a validated shape cannot overflow.
std::string check_int8_shape(const std::string& node_name, const DeformConvAttributes& attributes,
                             const DeformConvShape& shape);

// output_scale[o] = float32(double(x_scale) * double(w_scale[o])), w_scale of
// length M or 1 (broadcast). Expects scales already checked by check_int8_scales.
// Computed once in double so that no kernel needs double arithmetic.
std::vector<float> int8_output_scales(float x_scale, const std::vector<float>& w_scale, int64_t out_channels);

}  // namespace dcn_deploy
