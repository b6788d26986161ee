#include "core/int8_scales.h"

#include <cmath>
#include <limits>

#include "core/text.h"

namespace dcn_deploy {
namespace {

// Finite, positive and a normal float32 (1 / scale must not overflow).
bool valid_scale(float value) { return std::isfinite(value) && value >= std::numeric_limits<float>::min(); }

std::string scale_error(const std::string& node_name, const std::string& what, float value) {
  return node_error(node_name, concat("attribute '", what, "' must be a finite positive scale, got ", value));
}

}  // namespace

std::string check_int8_scales(const std::string& node_name, const DeformConvInt8Scales& scales,
                              int64_t out_channels) {
  if (!valid_scale(scales.x_scale)) return scale_error(node_name, "x_scale", scales.x_scale);
  if (scales.w_scale.empty()) {
    return node_error(node_name, "attribute 'w_scale' must list one scale per output channel, got none");
  }
  for (size_t index = 0; index < scales.w_scale.size(); ++index) {
    if (!valid_scale(scales.w_scale[index])) {
      return scale_error(node_name, concat("w_scale[", index, "]"), scales.w_scale[index]);
    }
  }
  if (out_channels >= 0 && scales.w_scale.size() != 1 &&
      static_cast<int64_t>(scales.w_scale.size()) != out_channels) {
    return node_error(node_name, concat("attribute 'w_scale' has ", scales.w_scale.size(),
                                        " values, expected one per output channel (M = ", out_channels, ") or 1"));
  }
  if (scales.y_scale != 0.0f && !valid_scale(scales.y_scale)) return scale_error(node_name, "y_scale", scales.y_scale);
  return "";
}

std::string check_int8_shape(const std::string& node_name, const DeformConvAttributes& attributes,
                             const DeformConvShape& shape) {
  const int64_t products = shape.in_channels / attributes.group * shape.kernel_h * shape.kernel_w;
  if (products > kMaxInt8ProductsPerOutput) {
    return node_error(node_name, concat("C/group*kh*kw = ", products,
                                        " products per output could overflow the int32 accumulator (at most ",
                                        kMaxInt8ProductsPerOutput, ")"));
  }
  return "";
}

std::vector<float> int8_output_scales(float x_scale, const std::vector<float>& w_scale, int64_t out_channels) {
  std::vector<float> scales(static_cast<size_t>(out_channels));
  for (int64_t o = 0; o < out_channels; ++o) {
    const float w = w_scale.size() == 1 ? w_scale[0] : w_scale[static_cast<size_t>(o)];
    scales[static_cast<size_t>(o)] = static_cast<float>(static_cast<double>(x_scale) * static_cast<double>(w));
  }
  return scales;
}

}  // namespace dcn_deploy
