#include "deform_conv_cpu_int8.h"

#include <algorithm>

#include "deform_conv_math.h"

namespace dcn_deploy {
namespace {

constexpr int64_t kMaxTilePixels = 64;
constexpr int64_t kMinTilePixels = 16;
using cpu::kInt8ChannelBlock;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

std::vector<float> int8_output_scales(float x_scale, const std::vector<float>& w_scale, int64_t out_channels) {
  std::vector<float> scales(static_cast<size_t>(out_channels));
  for (int64_t o = 0; o < out_channels; ++o) {
    const float w = w_scale.size() == 1 ? w_scale[0] : w_scale[static_cast<size_t>(o)];
    scales[static_cast<size_t>(o)] = static_cast<float>(static_cast<double>(x_scale) * static_cast<double>(w));
  }
  return scales;
}

DeformConvCpuInt8::DeformConvCpuInt8(const DeformConvAttributes& attributes, const DeformConvShape& shape,
                                     const DeformConvInt8Tensors& tensors, int64_t min_work_items,
                                     const cpu::KernelSet* kernels)
    : attributes_(attributes), shape_(shape), tensors_(tensors), kernels_(kernels ? kernels : &cpu::cpu_kernels()) {
  kernel_area_ = shape.kernel_h * shape.kernel_w;
  in_channels_per_group_ = shape.in_channels / attributes.group;
  out_channels_per_group_ = shape.out_channels / attributes.group;
  channels_per_offset_group_ = shape.in_channels / attributes.offset_group;
  out_pixels_ = shape.out_height * shape.out_width;
  tile_pixels_ = std::min(kMaxTilePixels, out_pixels_);
  // Smaller tiles when the batch and groups alone give too few items for the thread pool.
  while (tile_pixels_ > kMinTilePixels &&
         shape.batch * attributes.group * ceil_div(out_pixels_, tile_pixels_) < min_work_items) {
    tile_pixels_ = std::max(kMinTilePixels, tile_pixels_ / 2);
  }
  tiles_per_image_ = tile_pixels_ > 0 ? ceil_div(out_pixels_, tile_pixels_) : 0;
  // W's rows in pairs, two int16 per int32, once per call (an odd last row pairs with 0).
  const int64_t rows = in_channels_per_group_ * kernel_area_;
  pair_count_ = (rows + 1) / 2;
  weight_pairs_.resize(static_cast<size_t>(shape.out_channels * pair_count_));
  for (int64_t o = 0; o < shape.out_channels; ++o) {
    const int8_t* row = tensors.weight + o * rows;
    for (int64_t j = 0; j < pair_count_; ++j) {
      const int16_t high = 2 * j + 1 < rows ? row[2 * j + 1] : 0;
      weight_pairs_[static_cast<size_t>(o * pair_count_ + j)] = cpu::pack_int16_pair(row[2 * j], high);
    }
  }
}

void DeformConvCpuInt8::run_work_item(int64_t item, DeformConvInt8Scratch& scratch) const {
  const int64_t group = attributes_.group;
  const int64_t tile = item % tiles_per_image_;
  const int64_t g = (item / tiles_per_image_) % group;
  const int64_t image = item / (tiles_per_image_ * group);
  const int64_t first_pixel = tile * tile_pixels_;
  const int64_t pixels = std::min(tile_pixels_, out_pixels_ - first_pixel);
  const int64_t taps = kernel_area_;
  const int64_t first_channel = g * in_channels_per_group_;
  const int64_t first_offset_group = first_channel / channels_per_offset_group_;
  const int64_t offset_groups =
      (first_channel + in_channels_per_group_ - 1) / channels_per_offset_group_ - first_offset_group + 1;
  const int32_t height = static_cast<int32_t>(shape_.in_height);
  const int32_t width = static_cast<int32_t>(shape_.in_width);

  // Corners of every (offset group, tap, pixel) of the tile, mask folded in.
  scratch.corners.resize(static_cast<size_t>(offset_groups * taps * pixels));
  for (int64_t og = 0; og < offset_groups; ++og) {
    const int64_t offset_group = first_offset_group + og;
    for (int64_t tap = 0; tap < taps; ++tap) {
      const int32_t tap_y = static_cast<int32_t>(tap / shape_.kernel_w);
      const int32_t tap_x = static_cast<int32_t>(tap % shape_.kernel_w);
      const int64_t offset_channel = (image * attributes_.offset_group + offset_group) * taps + tap;
      const float* offset_y = tensors_.offset + (2 * offset_channel) * out_pixels_;
      const float* offset_x = offset_y + out_pixels_;
      const float* mask = tensors_.mask ? tensors_.mask + offset_channel * out_pixels_ : nullptr;
      BilinearCorners* out = scratch.corners.data() + (og * taps + tap) * pixels;
      for (int64_t p = 0; p < pixels; ++p) {
        const int64_t pixel = first_pixel + p;
        const int32_t oy = static_cast<int32_t>(pixel / shape_.out_width);
        const int32_t ox = static_cast<int32_t>(pixel % shape_.out_width);
        const float y = sampling_coordinate(oy, static_cast<int32_t>(attributes_.stride[0]),
                                            static_cast<int32_t>(attributes_.pads[0]), tap_y,
                                            static_cast<int32_t>(attributes_.dilation[0]), offset_y[pixel]);
        const float x = sampling_coordinate(ox, static_cast<int32_t>(attributes_.stride[1]),
                                            static_cast<int32_t>(attributes_.pads[1]), tap_x,
                                            static_cast<int32_t>(attributes_.dilation[1]), offset_x[pixel]);
        const BilinearCorners corners = sample_corners(y, x, height, width);
        out[p] = mask ? fold_mask(corners, mask[pixel]) : corners;
      }
    }
  }

  // Requantized samples, rows in W's order (channel-major, then tap), paired:
  // row r of pixel p at ((r / 2) * padded + p) * 2 + r % 2; padding is 0.
  const int64_t rows = in_channels_per_group_ * taps;
  const int64_t padded = (pixels + 7) / 8 * 8;
  scratch.samples.assign(static_cast<size_t>(pair_count_ * padded * 2), 0);
  const int64_t plane_size = shape_.in_height * shape_.in_width;
  for (int64_t c = 0; c < in_channels_per_group_; ++c) {
    const int64_t channel = first_channel + c;
    const int8_t* plane = tensors_.input + (image * shape_.in_channels + channel) * plane_size;
    const int64_t og = channel / channels_per_offset_group_ - first_offset_group;
    for (int64_t tap = 0; tap < taps; ++tap) {
      const int64_t r = c * taps + tap;
      const BilinearCorners* corners = scratch.corners.data() + (og * taps + tap) * pixels;
      int16_t* target = scratch.samples.data() + (r / 2) * padded * 2 + r % 2;
      for (int64_t p = 0; p < pixels; ++p) target[2 * p] = int8_sample(plane, corners[p]);
    }
  }
  (void)rows;

  // Exact int32 sums, kInt8ChannelBlock output channels per pass over the samples.
  scratch.accumulator.resize(static_cast<size_t>(kInt8ChannelBlock * padded));
  int32_t* acc = scratch.accumulator.data();
  for (int64_t m0 = 0; m0 < out_channels_per_group_; m0 += kInt8ChannelBlock) {
    const int64_t block = std::min(kInt8ChannelBlock, out_channels_per_group_ - m0);
    const int64_t first_out = g * out_channels_per_group_ + m0;
    kernels_->int8_pair_gemm(scratch.samples.data(), pair_count_, padded,
                             weight_pairs_.data() + first_out * pair_count_, block, acc);
    for (int64_t b = 0; b < block; ++b) {
      const int64_t o = first_out + b;
      const float scale = tensors_.output_scale[o];
      const float bias = tensors_.bias ? tensors_.bias[o] : 0.0f;
      const int64_t base = (image * shape_.out_channels + o) * out_pixels_ + first_pixel;
      const int32_t* sums = acc + b * padded;
      if (tensors_.y_scale > 0.0f) {
        for (int64_t p = 0; p < pixels; ++p) {
          tensors_.output_int8[base + p] = int8_requantize(int8_output(sums[p], scale, bias), tensors_.y_scale);
        }
      } else {
        for (int64_t p = 0; p < pixels; ++p) tensors_.output[base + p] = int8_output(sums[p], scale, bias);
      }
    }
  }
}

void DeformConvCpuInt8::run_all() {
  DeformConvInt8Scratch scratch;
  for (int64_t item = 0; item < work_item_count(); ++item) run_work_item(item, scratch);
}

}  // namespace dcn_deploy
