// Per-element math: sampling coordinates, the inside test, bilinear corners.
#include <cmath>
#include <limits>

#include "core/math.h"
#include "test_harness.h"

using namespace dcn_deploy;

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// 3 x 4 plane with value 10*row + column.
struct Plane {
  static constexpr int32_t kHeight = 3;
  static constexpr int32_t kWidth = 4;
  float values[kHeight * kWidth];
  Plane() {
    for (int32_t y = 0; y < kHeight; ++y)
      for (int32_t x = 0; x < kWidth; ++x) values[y * kWidth + x] = static_cast<float>(10 * y + x);
  }
  float sample(float y, float x) const { return bilinear_sample(values, kHeight, kWidth, y, x); }
};

float weight_sum(const BilinearCorners& corners) {
  return corners.weight[0] + corners.weight[1] + corners.weight[2] + corners.weight[3];
}

}  // namespace

TEST(sampling_coordinate_combines_stride_pad_dilation_and_offset) {
  // oy=3, stride 2, pad 1, tap 2, dilation 3: 6 - 1 + 6 = 11, plus offset.
  CHECK_EQ(sampling_coordinate(3, 2, 1, 2, 3, 0.25f), 11.25f);
  CHECK_EQ(sampling_coordinate(0, 1, 2, 0, 1, 0.0f), -2.0f);
  CHECK_EQ(sampling_coordinate(0, 1, 0, 0, 1, -1.5f), -1.5f);
  CHECK(std::isnan(sampling_coordinate(1, 1, 0, 0, 1, kNaN)));
}

TEST(inside_test_is_open_interval_minus_one_to_size) {
  CHECK(sample_is_inside(0.0f, 0.0f, 3, 4));
  CHECK(sample_is_inside(-0.999f, -0.999f, 3, 4));
  CHECK(sample_is_inside(2.999f, 3.999f, 3, 4));
  CHECK(!sample_is_inside(-1.0f, 0.0f, 3, 4));
  CHECK(!sample_is_inside(0.0f, -1.0f, 3, 4));
  CHECK(!sample_is_inside(3.0f, 0.0f, 3, 4));
  CHECK(!sample_is_inside(0.0f, 4.0f, 3, 4));
}

TEST(inside_test_rejects_nan_and_inf) {
  CHECK(!sample_is_inside(kNaN, 0.0f, 3, 4));
  CHECK(!sample_is_inside(0.0f, kNaN, 3, 4));
  CHECK(!sample_is_inside(kInf, 0.0f, 3, 4));
  CHECK(!sample_is_inside(-kInf, 0.0f, 3, 4));
  CHECK(!sample_is_inside(0.0f, kInf, 3, 4));
  CHECK(!sample_is_inside(0.0f, -kInf, 3, 4));
  CHECK(!sample_is_inside(1e30f, 0.0f, 3, 4));
}

TEST(nan_and_inf_coordinates_sample_zero) {
  const Plane plane;
  CHECK_EQ(plane.sample(kNaN, 1.0f), 0.0f);
  CHECK_EQ(plane.sample(1.0f, kNaN), 0.0f);
  CHECK_EQ(plane.sample(kInf, 1.0f), 0.0f);
  CHECK_EQ(plane.sample(1.0f, -kInf), 0.0f);
  const BilinearCorners corners = sample_corners(kNaN, kInf, 3, 4);
  for (int q = 0; q < 4; ++q) {
    CHECK_EQ(corners.index[q], kOutsideCorner);
    CHECK_EQ(corners.weight[q], 0.0f);
  }
}

TEST(integer_coordinates_hit_one_corner_exactly) {
  const Plane plane;
  for (int32_t y = 0; y < Plane::kHeight; ++y) {
    for (int32_t x = 0; x < Plane::kWidth; ++x) {
      const BilinearCorners corners = bilinear_corners(static_cast<float>(y), static_cast<float>(x), 3, 4);
      CHECK_EQ(corners.index[0], y * Plane::kWidth + x);
      CHECK_EQ(corners.weight[0], 1.0f);
      CHECK_EQ(corners.weight[1], 0.0f);
      CHECK_EQ(corners.weight[2], 0.0f);
      CHECK_EQ(corners.weight[3], 0.0f);
      CHECK_EQ(plane.sample(static_cast<float>(y), static_cast<float>(x)), plane.values[y * Plane::kWidth + x]);
    }
  }
}

TEST(corners_are_ordered_and_weighted_bilinearly) {
  const BilinearCorners corners = bilinear_corners(1.25f, 2.5f, 3, 4);
  CHECK_EQ(corners.index[0], 1 * 4 + 2);
  CHECK_EQ(corners.index[1], 1 * 4 + 3);
  CHECK_EQ(corners.index[2], 2 * 4 + 2);
  CHECK_EQ(corners.index[3], 2 * 4 + 3);
  CHECK_NEAR(corners.weight[0], 0.75 * 0.5, 1e-7);
  CHECK_NEAR(corners.weight[1], 0.75 * 0.5, 1e-7);
  CHECK_NEAR(corners.weight[2], 0.25 * 0.5, 1e-7);
  CHECK_NEAR(corners.weight[3], 0.25 * 0.5, 1e-7);
  CHECK_NEAR(weight_sum(corners), 1.0, 1e-7);
  const Plane plane;
  // Bilinear interpolation of a linear function is exact: 10*y + x.
  CHECK_NEAR(plane.sample(1.25f, 2.5f), 15.0, 1e-5);
}

TEST(corners_outside_the_plane_count_as_zero) {
  const Plane plane;
  // Above the top row: only the bottom corners (row 0) are inside.
  const BilinearCorners above = sample_corners(-0.5f, 1.0f, 3, 4);
  CHECK_EQ(above.index[0], kOutsideCorner);
  CHECK_EQ(above.index[1], kOutsideCorner);
  CHECK_EQ(above.index[2], 1);
  CHECK_NEAR(plane.sample(-0.5f, 1.0f), 0.5 * plane.values[1], 1e-6);
  // Left of column 0.
  CHECK_NEAR(plane.sample(2.0f, -0.25f), 0.75 * plane.values[2 * 4 + 0], 1e-6);
  // Past the last row/column: only the top-left corner is inside.
  CHECK_NEAR(plane.sample(2.5f, 3.5f), 0.25 * plane.values[2 * 4 + 3], 1e-6);
  // Exactly on the last row and column: corner (2, 3) with weight 1.
  CHECK_EQ(plane.sample(2.0f, 3.0f), plane.values[2 * 4 + 3]);
  const BilinearCorners last = sample_corners(2.0f, 3.0f, 3, 4);
  CHECK_EQ(last.index[1], kOutsideCorner);
  CHECK_EQ(last.index[2], kOutsideCorner);
  CHECK_EQ(last.index[3], kOutsideCorner);
}

TEST(outside_corners_ignore_non_finite_plane_values) {
  // Corner (0, 0) is used as the dummy read for outside corners; an Inf there
  // must not leak into samples that do not touch it.
  float plane[4] = {kInf, 1.0f, 2.0f, 3.0f};
  CHECK_EQ(bilinear_sample(plane, 2, 2, 1.0f, 1.5f), 3.0f * 0.5f);
  CHECK_EQ(corner_value(plane, kOutsideCorner), 0.0f);
  CHECK_EQ(corner_value(plane, 3), 3.0f);
}

TEST(samples_entirely_outside_are_zero) {
  const Plane plane;
  CHECK_EQ(plane.sample(-1.0f, 0.0f), 0.0f);
  CHECK_EQ(plane.sample(-5.0f, -5.0f), 0.0f);
  CHECK_EQ(plane.sample(3.0f, 1.0f), 0.0f);
  CHECK_EQ(plane.sample(1.0f, 4.0f), 0.0f);
  CHECK_EQ(plane.sample(1e30f, -1e30f), 0.0f);
}

TEST(single_pixel_plane) {
  float plane[1] = {7.0f};
  CHECK_EQ(bilinear_sample(plane, 1, 1, 0.0f, 0.0f), 7.0f);
  CHECK_NEAR(bilinear_sample(plane, 1, 1, 0.5f, -0.5f), 7.0 * 0.5 * 0.5, 1e-6);
  CHECK_EQ(bilinear_sample(plane, 1, 1, 1.0f, 0.0f), 0.0f);
}

TEST_MAIN()
