// The tiled CPU kernel against a direct per-output evaluation of the formula.
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cpu/kernels/int8_kernels.h"
#include "cpu/float_driver.h"
#include "core/math.h"
#include "test_harness.h"

using namespace dcn_deploy;

namespace {

struct Problem {
  DeformConvAttributes attributes;
  DeformConvShape shape;
  std::vector<float> input, weight, offset, bias, mask;
};

std::vector<float> random_values(std::mt19937& rng, int64_t count, float low, float high) {
  std::uniform_real_distribution<float> distribution(low, high);
  std::vector<float> values(static_cast<size_t>(count));
  for (float& value : values) value = distribution(rng);
  return values;
}

Problem make_problem(std::mt19937& rng, int64_t batch, int64_t channels, int64_t height, int64_t width,
                     int64_t out_channels, const DeformConvAttributes& attributes, bool with_bias, bool with_mask,
                     float offset_scale) {
  Problem problem;
  problem.attributes = attributes;
  const int64_t kh = attributes.kernel[0];
  const int64_t kw = attributes.kernel[1];
  const int64_t out_height =
      output_extent(height, attributes.pads[0], attributes.pads[2], kh, attributes.stride[0], attributes.dilation[0]);
  const int64_t out_width =
      output_extent(width, attributes.pads[1], attributes.pads[3], kw, attributes.stride[1], attributes.dilation[1]);
  const int64_t taps = attributes.offset_group * kh * kw;
  DeformConvInputDims dims;
  dims.input = {batch, channels, height, width};
  dims.weight = {out_channels, channels / attributes.group, kh, kw};
  dims.offset = {batch, 2 * taps, out_height, out_width};
  if (with_bias) dims.bias = std::vector<int64_t>{out_channels};
  if (with_mask) dims.mask = std::vector<int64_t>{batch, taps, out_height, out_width};
  const std::string error = infer_shape("test", attributes, dims, &problem.shape);
  CHECK_EQ(error, std::string());

  problem.input = random_values(rng, batch * channels * height * width, -1.0f, 1.0f);
  problem.weight = random_values(rng, out_channels * (channels / attributes.group) * kh * kw, -1.0f, 1.0f);
  problem.offset = random_values(rng, batch * 2 * taps * out_height * out_width, -offset_scale, offset_scale);
  if (with_bias) problem.bias = random_values(rng, out_channels, -1.0f, 1.0f);
  if (with_mask) problem.mask = random_values(rng, batch * taps * out_height * out_width, 0.0f, 1.0f);
  return problem;
}

// Y[n, o, oy, ox] straight from the operator definition.
std::vector<float> reference_output(const Problem& p) {
  const DeformConvShape& s = p.shape;
  const DeformConvAttributes& a = p.attributes;
  const int64_t cin_per_group = s.in_channels / a.group;
  const int64_t cout_per_group = s.out_channels / a.group;
  const int64_t channels_per_offset_group = s.in_channels / a.offset_group;
  const int64_t taps = s.kernel_h * s.kernel_w;
  const int64_t out_pixels = s.out_height * s.out_width;
  std::vector<float> output(static_cast<size_t>(s.batch * s.out_channels * out_pixels));
  for (int64_t n = 0; n < s.batch; ++n)
    for (int64_t o = 0; o < s.out_channels; ++o)
      for (int64_t oy = 0; oy < s.out_height; ++oy)
        for (int64_t ox = 0; ox < s.out_width; ++ox) {
          double sum = s.has_bias ? p.bias[o] : 0.0;
          const int64_t weight_group = o / cout_per_group;
          for (int64_t c = 0; c < cin_per_group; ++c) {
            const int64_t channel = weight_group * cin_per_group + c;
            const int64_t og = channel / channels_per_offset_group;
            const float* plane = &p.input[(n * s.in_channels + channel) * s.in_height * s.in_width];
            for (int64_t i = 0; i < s.kernel_h; ++i)
              for (int64_t j = 0; j < s.kernel_w; ++j) {
                const int64_t tap = i * s.kernel_w + j;
                const int64_t pixel = oy * s.out_width + ox;
                const int64_t dy_channel = og * 2 * taps + 2 * tap;
                const float dy = p.offset[(n * 2 * a.offset_group * taps + dy_channel) * out_pixels + pixel];
                const float dx = p.offset[(n * 2 * a.offset_group * taps + dy_channel + 1) * out_pixels + pixel];
                const float y = sampling_coordinate(static_cast<int32_t>(oy), static_cast<int32_t>(a.stride[0]),
                                                    static_cast<int32_t>(a.pads[0]), static_cast<int32_t>(i),
                                                    static_cast<int32_t>(a.dilation[0]), dy);
                const float x = sampling_coordinate(static_cast<int32_t>(ox), static_cast<int32_t>(a.stride[1]),
                                                    static_cast<int32_t>(a.pads[1]), static_cast<int32_t>(j),
                                                    static_cast<int32_t>(a.dilation[1]), dx);
                float value = bilinear_sample(plane, static_cast<int32_t>(s.in_height),
                                              static_cast<int32_t>(s.in_width), y, x);
                if (s.has_mask) value *= p.mask[(n * a.offset_group * taps + og * taps + tap) * out_pixels + pixel];
                sum += static_cast<double>(p.weight[(o * cin_per_group + c) * taps + tap]) * value;
              }
          }
          output[((n * s.out_channels + o) * s.out_height + oy) * s.out_width + ox] = static_cast<float>(sum);
        }
  return output;
}

// One way of running the kernel: inner loops and whether X is declared finite
// (kNo forces the exact per-corner path).
struct Variant {
  const cpu::KernelSet* kernels;
  DeformConvCpuOptions::Finite finite;
};

// Every variant this CPU can run: portable and AVX2+FMA loops, fast and exact paths.
std::vector<Variant> all_variants() {
  std::vector<Variant> variants;
  std::vector<const cpu::KernelSet*> sets = {&cpu::portable_kernels()};
  if (cpu::avx2_kernels() != nullptr) sets.push_back(cpu::avx2_kernels());
  for (const cpu::KernelSet* set : sets) {
    variants.push_back({set, DeformConvCpuOptions::Finite::kUnknown});
    variants.push_back({set, DeformConvCpuOptions::Finite::kNo});
    variants.push_back({set, DeformConvCpuOptions::Finite::kCheckWhilePreparing});
  }
  return variants;
}

// The problem's tensors (bias and mask where the shape has them), writing into `output`.
DeformConvTensors tensors_of(const Problem& p, std::vector<float>& output) {
  DeformConvTensors tensors;
  tensors.input = p.input.data();
  tensors.weight = p.weight.data();
  tensors.offset = p.offset.data();
  tensors.bias = p.shape.has_bias ? p.bias.data() : nullptr;
  tensors.mask = p.shape.has_mask ? p.mask.data() : nullptr;
  tensors.output = output.data();
  return tensors;
}

std::vector<float> kernel_output(const Problem& p, int64_t min_work_items, const Variant* variant = nullptr) {
  const DeformConvShape& s = p.shape;
  std::vector<float> output(static_cast<size_t>(s.batch * s.out_channels * s.out_height * s.out_width),
                            std::numeric_limits<float>::quiet_NaN());
  const DeformConvTensors tensors = tensors_of(p, output);
  DeformConvCpuOptions options;
  options.min_work_items = min_work_items;
  if (variant != nullptr) {
    options.kernels = variant->kernels;
    options.input_finite = variant->finite;
  }
  DeformConvCpu(p.attributes, s, tensors, options).run_all();
  return output;
}

double max_abs_difference(const std::vector<float>& a, const std::vector<float>& b) {
  double worst = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double difference = std::fabs(static_cast<double>(a[i]) - b[i]);
    if (!(difference <= worst)) worst = difference;  // Also catches NaN.
  }
  return worst;
}

DeformConvAttributes make_attributes_for(int64_t kh, int64_t kw) {
  DeformConvAttributes attributes;
  attributes.kernel[0] = kh;
  attributes.kernel[1] = kw;
  return attributes;
}

void check_against_reference(const Problem& problem, int64_t min_work_items) {
  const std::vector<float> expected = reference_output(problem);
  const std::vector<float> actual = kernel_output(problem, min_work_items);
  CHECK_EQ(expected.size(), actual.size());
  CHECK_NEAR(max_abs_difference(expected, actual), 0.0, 1e-4);
  for (const Variant& variant : all_variants()) {
    const std::vector<float> other = kernel_output(problem, min_work_items, &variant);
    CHECK_NEAR(max_abs_difference(expected, other), 0.0, 1e-4);
  }
}

}  // namespace

TEST(matches_reference_3x3_with_bias_and_mask) {
  std::mt19937 rng(1);
  const Problem problem = make_problem(rng, 2, 4, 9, 7, 6, make_attributes_for(3, 3), true, true, 2.0f);
  check_against_reference(problem, 1);
  check_against_reference(problem, 64);
}

TEST(matches_reference_groups_strides_dilation_asymmetric_pads) {
  std::mt19937 rng(2);
  DeformConvAttributes attributes = make_attributes_for(3, 2);
  attributes.stride[0] = 2;
  attributes.pads[0] = 1;
  attributes.pads[1] = 0;
  attributes.pads[2] = 2;
  attributes.pads[3] = 1;
  attributes.dilation[0] = 2;
  attributes.group = 2;
  attributes.offset_group = 3;
  const Problem problem = make_problem(rng, 3, 6, 11, 8, 10, attributes, false, true, 4.0f);
  check_against_reference(problem, 1);
  check_against_reference(problem, 100);
}

TEST(matches_reference_many_pixels_and_remainder_channels) {
  // Several tiles per image, a short last tile, and M/group not a multiple of 4.
  std::mt19937 rng(3);
  DeformConvAttributes attributes = make_attributes_for(1, 1);
  const Problem problem = make_problem(rng, 1, 3, 23, 29, 7, attributes, true, false, 1.5f);
  check_against_reference(problem, 1);
  check_against_reference(problem, 7);
}

TEST(matches_reference_large_kernel_single_pixel_input) {
  std::mt19937 rng(4);
  DeformConvAttributes attributes = make_attributes_for(5, 5);
  attributes.pads[0] = attributes.pads[1] = attributes.pads[2] = attributes.pads[3] = 2;
  const Problem problem = make_problem(rng, 2, 2, 1, 1, 3, attributes, true, true, 1.0f);
  CHECK_EQ(problem.shape.out_height, 1);
  CHECK_EQ(problem.shape.out_width, 1);
  check_against_reference(problem, 1);
}

TEST(channels_last_path_with_offset_groups_matches_reference) {
  std::mt19937 rng(8);
  DeformConvAttributes attributes = make_attributes_for(3, 3);
  attributes.offset_group = 2;
  for (int64_t& pad : attributes.pads) pad = 1;
  for (const int64_t batch : {1, 2}) {
    const Problem problem = make_problem(rng, batch, 32, 21, 23, 13, attributes, true, true, 3.0f);
    check_against_reference(problem, 1);
    check_against_reference(problem, 8);
  }
  if (cpu::avx2_kernels() != nullptr) {
    const Problem problem = make_problem(rng, 1, 16, 9, 9, 8, attributes, true, true, 3.0f);
    DeformConvTensors tensors;
    tensors.input = problem.input.data();
    DeformConvCpuOptions options;
    options.kernels = cpu::avx2_kernels();
    const DeformConvCpu convolution(problem.attributes, problem.shape, tensors, options);
    CHECK(convolution.uses_pair_corners());
    CHECK(convolution.workspace_floats() > 0);  // The channels-last gather applies.
  }
  if (cpu::avx2_kernels() != nullptr) {
    // Weights packed ahead (as the ORT kernel caches them for a constant W).
    const Problem problem = make_problem(rng, 2, 32, 13, 11, 20, attributes, true, true, 3.0f);
    const std::vector<float> expected = reference_output(problem);
    std::vector<float> output(expected.size(), std::numeric_limits<float>::quiet_NaN());
    const DeformConvTensors tensors = tensors_of(problem, output);
    DeformConvCpuOptions options;
    options.kernels = cpu::avx2_kernels();
    DeformConvCpu convolution(problem.attributes, problem.shape, tensors, options);
    CHECK(convolution.packed_weight_floats() > 0);
    std::vector<float> packed(static_cast<size_t>(convolution.packed_weight_floats()));
    for (int64_t panel = 0; panel < convolution.packed_panel_count(); ++panel) {
      convolution.pack_weight_panel(panel, packed.data());
    }
    const int64_t unpacked_workspace = convolution.workspace_floats();
    convolution.set_packed_weights(packed.data());
    CHECK_EQ(convolution.workspace_floats(), unpacked_workspace - convolution.packed_weight_floats());
    convolution.run_all();
    CHECK(!convolution.uses_channels_last());  // run_all's own workspace is released.
    CHECK_NEAR(max_abs_difference(expected, output), 0.0, 1e-4);
  }
}

TEST(channels_last_copy_is_exact) {
  const cpu::KernelSet* avx2 = cpu::avx2_kernels();
  if (avx2 == nullptr || avx2->to_channels_last == nullptr) return;
  const int64_t channels = 24;
  const int64_t plane_size = 37;  // Full blocks of 8 pixels and a tail.
  std::vector<float> source(static_cast<size_t>(channels * plane_size));
  for (size_t i = 0; i < source.size(); ++i) source[i] = static_cast<float>(i) * 0.5f - 100.0f;
  for (const int64_t first : {int64_t{0}, int64_t{3}, int64_t{16}}) {
    std::vector<float> target(source.size(), std::numeric_limits<float>::quiet_NaN());
    CHECK(avx2->to_channels_last(source.data(), plane_size, channels, first, plane_size, target.data()));
    for (int64_t p = 0; p < plane_size; ++p) {
      for (int64_t c = 0; c < channels; ++c) {
        const float value = target[static_cast<size_t>(p * channels + c)];
        if (p < first) {
          CHECK(std::isnan(value));
        } else {
          CHECK_EQ(value, source[static_cast<size_t>(c * plane_size + p)]);
        }
      }
    }
  }
}

TEST(int8_channels_last_copy_is_exact) {
  for (const cpu::Int8KernelSet* set : {&cpu::portable_int8_kernels(), cpu::avx2_int8_kernels()}) {
    if (set == nullptr) continue;
    for (const int64_t channels : {int64_t{8}, int64_t{24}, int64_t{5}}) {
      const int64_t plane_size = 37;  // Full blocks of 8 pixels and a tail.
      std::vector<int8_t> source(static_cast<size_t>(channels * plane_size));
      for (size_t i = 0; i < source.size(); ++i) source[i] = static_cast<int8_t>(static_cast<int>(i * 37 % 256) - 128);
      for (const int64_t first : {int64_t{0}, int64_t{3}, int64_t{16}}) {
        std::vector<int8_t> target(source.size(), 99);
        set->to_channels_last(source.data(), plane_size, channels, first, plane_size, target.data());
        for (int64_t p = 0; p < plane_size; ++p) {
          for (int64_t c = 0; c < channels; ++c) {
            const int8_t value = target[static_cast<size_t>(p * channels + c)];
            CHECK_EQ(static_cast<int>(value), p < first ? 99 : static_cast<int>(source[static_cast<size_t>(c * plane_size + p)]));
          }
        }
      }
    }
  }
}

TEST(channels_last_copy_reports_non_finite_values) {
  const cpu::KernelSet* avx2 = cpu::avx2_kernels();
  if (avx2 == nullptr || avx2->to_channels_last == nullptr) return;
  const int64_t channels = 16;
  const int64_t plane_size = 21;  // Two blocks of 8 pixels and a tail of 5.
  const float specials[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity()};
  // In a full block (pixel 9) and in the tail (pixel 19), in the copied range or before it.
  for (const int64_t pixel : {int64_t{9}, int64_t{19}}) {
    for (const float special : specials) {
      std::vector<float> source(static_cast<size_t>(channels * plane_size), 1.0f);
      source[static_cast<size_t>(11 * plane_size + pixel)] = special;
      std::vector<float> target(source.size());
      CHECK(!avx2->to_channels_last(source.data(), plane_size, channels, 0, plane_size, target.data()));
      CHECK(avx2->to_channels_last(source.data(), plane_size, channels, pixel + 1, plane_size, target.data()));
    }
  }
  // The largest finite value is finite.
  std::vector<float> source(static_cast<size_t>(channels * plane_size), std::numeric_limits<float>::max());
  std::vector<float> target(source.size());
  CHECK(avx2->to_channels_last(source.data(), plane_size, channels, 0, plane_size, target.data()));
}

TEST(finite_check_while_preparing_settles_the_path) {
  const cpu::KernelSet* avx2 = cpu::avx2_kernels();
  if (avx2 == nullptr) return;
  std::mt19937 rng(10);
  DeformConvAttributes attributes = make_attributes_for(3, 3);
  for (int64_t& pad : attributes.pads) pad = 1;
  for (const bool poisoned : {false, true}) {
    // A workspace; set_workspace(nullptr); no set_workspace call at all.
    for (const int workspace_mode : {0, 1, 2}) {
      const bool with_workspace = workspace_mode == 0;
      Problem problem = make_problem(rng, 2, 8, 7, 9, 4, attributes, true, true, 1.5f);
      // An Inf in a corner pixel of image 1, channel 5: read only by outside corners of the fast path.
      if (poisoned) problem.input[(1 * 8 + 5) * 63] = std::numeric_limits<float>::infinity();
      const std::vector<float> expected = reference_output(problem);
      std::vector<float> output(expected.size(), std::numeric_limits<float>::quiet_NaN());
      const DeformConvTensors tensors = tensors_of(problem, output);
      DeformConvCpuOptions options;
      options.kernels = avx2;
      options.input_finite = DeformConvCpuOptions::Finite::kCheckWhilePreparing;
      DeformConvCpu convolution(problem.attributes, problem.shape, tensors, options);
      CHECK(convolution.uses_pair_corners());  // Assumed until checked.
      std::vector<float> workspace(static_cast<size_t>(convolution.workspace_floats()));
      CHECK(!workspace.empty());
      if (workspace_mode < 2) convolution.set_workspace(with_workspace ? workspace.data() : nullptr);
      for (int64_t item = 0; item < convolution.prepare_item_count(); ++item) convolution.run_prepare_item(item);
      convolution.finish_prepare();
      CHECK_EQ(convolution.uses_pair_corners(), !poisoned);
      CHECK_EQ(convolution.uses_channels_last(), with_workspace && !poisoned);
      DeformConvCpuScratch scratch;
      for (int64_t item = 0; item < convolution.work_item_count(); ++item) convolution.run_work_item(item, scratch);
      for (size_t i = 0; i < output.size(); ++i) {
        CHECK_EQ(std::isnan(output[i]), std::isnan(expected[i]));
        if (std::isfinite(expected[i])) CHECK_NEAR(output[i], expected[i], 1e-4);
      }
    }
  }
}

TEST(non_finite_input_next_to_border_is_never_read_by_outside_corners) {
  std::mt19937 rng(9);
  DeformConvAttributes attributes = make_attributes_for(3, 3);
  for (int64_t& pad : attributes.pads) pad = 1;
  Problem problem = make_problem(rng, 1, 8, 7, 9, 4, attributes, true, true, 1.5f);
  // Inf in every border pixel of channel 3: a fast path reading it with weight 0 would give NaN.
  const int64_t plane = 7 * 9;
  for (int64_t y = 0; y < 7; ++y)
    for (int64_t x = 0; x < 9; ++x)
      if (y == 0 || x == 0 || y == 6 || x == 8) problem.input[3 * plane + y * 9 + x] = std::numeric_limits<float>::infinity();
  const std::vector<float> expected = reference_output(problem);
  for (const Variant& variant : all_variants()) {
    const std::vector<float> actual = kernel_output(problem, 1, &variant);
    for (size_t i = 0; i < actual.size(); ++i) {
      CHECK_EQ(std::isnan(actual[i]), std::isnan(expected[i]));
      if (std::isfinite(expected[i])) CHECK_NEAR(actual[i], expected[i], 1e-4);
    }
  }
}

TEST(offsets_far_outside_give_bias_only) {
  std::mt19937 rng(5);
  Problem problem = make_problem(rng, 1, 2, 5, 5, 2, make_attributes_for(3, 3), true, false, 1.0f);
  for (float& offset : problem.offset) offset = 100.0f;
  const std::vector<float> output = kernel_output(problem, 1);
  const int64_t pixels = problem.shape.out_height * problem.shape.out_width;
  for (int64_t o = 0; o < 2; ++o)
    for (int64_t p = 0; p < pixels; ++p) CHECK_EQ(output[o * pixels + p], problem.bias[o]);
}

TEST(non_finite_offsets_sample_zero) {
  std::mt19937 rng(6);
  Problem problem = make_problem(rng, 1, 2, 6, 6, 4, make_attributes_for(3, 3), true, true, 1.0f);
  const float specials[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity()};
  for (size_t k = 0; k < problem.offset.size(); k += 5) problem.offset[k] = specials[k % 3];
  const std::vector<float> expected = reference_output(problem);
  const std::vector<float> actual = kernel_output(problem, 1);
  for (float value : actual) CHECK(std::isfinite(value));
  CHECK_NEAR(max_abs_difference(expected, actual), 0.0, 1e-4);
}

TEST(balanced_tiles_split_small_images_evenly) {
  // 7x7 on a pool: two tiles of 25 + 24 pixels, not 48 + 1 or one tile of 49.
  CHECK_EQ(balanced_tile_pixels(49, 1, 16, 64, 6, 4), 25);
  // One thread: the largest tile.
  CHECK_EQ(balanced_tile_pixels(49, 1, 1, 64, 6, 4), 49);
  CHECK_EQ(balanced_tile_pixels(4096, 8, 1, 64, 6, 4), 64);
  // Many items anyway: full 64-pixel tiles.
  CHECK_EQ(balanced_tile_pixels(4096, 8, 16, 64, 6, 4), 64);
  CHECK_EQ(balanced_tile_pixels(0, 1, 16, 64), 0);
  for (const int64_t pixels : {int64_t{1}, int64_t{7}, int64_t{49}, int64_t{196}, int64_t{784}, int64_t{3400}}) {
    for (const int64_t units : {int64_t{1}, int64_t{2}, int64_t{8}}) {
      for (const int64_t min_items : {int64_t{1}, int64_t{16}}) {
        const int64_t tile = balanced_tile_pixels(pixels, units, min_items, 64, 6, 4);
        CHECK(tile >= 1 && tile <= std::min<int64_t>(pixels, 64));
        // Nearly equal tiles: no smaller tile gives the same number of them.
        const int64_t tiles = (pixels + tile - 1) / tile;
        CHECK_EQ(tile, (pixels + tiles - 1) / tiles);
      }
    }
  }
}

TEST(work_items_cover_every_output_once) {
  std::mt19937 rng(7);
  const Problem problem = make_problem(rng, 3, 2, 17, 13, 4, make_attributes_for(3, 3), false, false, 1.0f);
  std::vector<float> output(static_cast<size_t>(3 * 4 * 15 * 11), std::numeric_limits<float>::quiet_NaN());
  const DeformConvCpu convolution(problem.attributes, problem.shape, tensors_of(problem, output), 12);
  CHECK(convolution.work_item_count() >= 12);
  DeformConvCpuScratch scratch;
  // Any order, one shared scratch: each item writes only its own pixels.
  for (int64_t item = convolution.work_item_count() - 1; item >= 0; --item) {
    convolution.run_work_item(item, scratch);
  }
  CHECK_NEAR(max_abs_difference(reference_output(problem), output), 0.0, 1e-4);
}

TEST_MAIN()
