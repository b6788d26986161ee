// Unit tests of core/int8_scales.h: scale checks and the per-channel output scales.
#include <string>
#include <vector>

#include "core/int8_scales.h"
#include "test_harness.h"

using namespace dcn_deploy;

namespace {

const std::string kNode = "int8/dcn";

DeformConvInt8Scales valid_scales() {
  DeformConvInt8Scales scales;
  scales.x_scale = 0.5f;
  scales.w_scale = {0.25f, 0.125f};
  return scales;
}

}  // namespace

TEST(valid_scales_pass) {
  CHECK_EQ(check_int8_scales(kNode, valid_scales(), 2), std::string());
  CHECK_EQ(check_int8_scales(kNode, valid_scales(), -1), std::string());  // M not known yet
}

TEST(invalid_scales_are_named) {
  DeformConvInt8Scales scales = valid_scales();
  scales.x_scale = 0.0f;
  CHECK_CONTAINS(check_int8_scales(kNode, scales, 2), "attribute 'x_scale' must be a finite positive scale");
  scales = valid_scales();
  scales.w_scale[1] = -1.0f;
  CHECK_CONTAINS(check_int8_scales(kNode, scales, 2), "w_scale[1]");
  scales = valid_scales();
  CHECK_CONTAINS(check_int8_scales(kNode, scales, 3), "expected one per output channel (M = 3) or 1");
  scales.w_scale.clear();
  CHECK_CONTAINS(check_int8_scales(kNode, scales, 3), "got none");
}

TEST(output_scales_are_products_rounded_once) {
  const std::vector<float> per_channel = int8_output_scales(0.1f, {0.3f, 0.7f}, 2);
  CHECK_EQ(per_channel.size(), size_t{2});
  CHECK_EQ(per_channel[0], static_cast<float>(double{0.1f} * double{0.3f}));
  CHECK_EQ(per_channel[1], static_cast<float>(double{0.1f} * double{0.7f}));
  const std::vector<float> broadcast = int8_output_scales(0.1f, {0.3f}, 3);  // one w_scale for every channel
  CHECK_EQ(broadcast.size(), size_t{3});
  CHECK_EQ(broadcast[2], per_channel[0]);
}

TEST(accumulator_limit) {
  DeformConvAttributes attributes;
  DeformConvShape shape;
  shape.in_channels = kMaxInt8ProductsPerOutput;
  shape.kernel_h = shape.kernel_w = 1;
  CHECK_EQ(check_int8_shape(kNode, attributes, shape), std::string());
  shape.kernel_w = 2;
  CHECK_CONTAINS(check_int8_shape(kNode, attributes, shape), "could overflow the int32 accumulator");
}

TEST_MAIN()
