#include "cpu/int8_driver.h"

#include <algorithm>

#include "cpu/float_driver.h"
#include "core/math.h"

namespace dcn_deploy {
namespace {

constexpr int64_t kMaxTilePixels = 64;
// Channels-last path: the int16 rows of one channel block stay in L2.
constexpr int64_t kRowBudgetBytes = 128 * 1024;
using cpu::kInt8ChannelBlock;
using cpu::kInt8PanelChannels;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t value, int64_t multiple) { return ceil_div(value, multiple) * multiple; }

}  // namespace

DeformConvCpuInt8::DeformConvCpuInt8(const DeformConvAttributes& attributes, const DeformConvShape& shape,
                                     const DeformConvInt8Tensors& tensors, int64_t min_work_items,
                                     const cpu::KernelSet* kernels, const cpu::Int8KernelSet* int8_kernels)
    : attributes_(attributes),
      shape_(shape),
      tensors_(tensors),
      kernels_(kernels ? kernels : &cpu::cpu_kernels()),
      int8_kernels_(int8_kernels ? int8_kernels : &cpu::int8_kernels()) {
  kernel_area_ = shape.kernel_h * shape.kernel_w;
  in_channels_per_group_ = shape.in_channels / attributes.group;
  out_channels_per_group_ = shape.out_channels / attributes.group;
  channels_per_offset_group_ = shape.in_channels / attributes.offset_group;
  out_pixels_ = shape.out_height * shape.out_width;
  // Nearly equal tiles (both paths pad a tile to 8 pixels themselves), balanced over the thread pool.
  tile_pixels_ = balanced_tile_pixels(out_pixels_, shape.batch * attributes.group, min_work_items, kMaxTilePixels);
  tiles_per_image_ = tile_pixels_ > 0 ? ceil_div(out_pixels_, tile_pixels_) : 0;
  const int64_t rows = in_channels_per_group_ * kernel_area_;
  pair_count_ = (rows + 1) / 2;
  // An int8 plane is always finite, so the pair corners need only a 2x2 block in the plane.
  channels_last_ = shape.in_height >= 2 && shape.in_width >= 2 && in_channels_per_group_ % 8 == 0 &&
                   channels_per_offset_group_ % 8 == 0 && tile_pixels_ > 0;
  if (channels_last_) {
    const int64_t row_bytes = round_up(tile_pixels_, 8) * kernel_area_ * static_cast<int64_t>(sizeof(int16_t));
    const int64_t blocks = std::max<int64_t>(1, ceil_div(in_channels_per_group_ * row_bytes, kRowBudgetBytes));
    channel_block_ = std::min(in_channels_per_group_, round_up(ceil_div(in_channels_per_group_, blocks), 8));
    panels_ = ceil_div(out_channels_per_group_, kInt8PanelChannels);
    // Uninitialised: the prepare items write every value before any work item reads it.
    own_packed_weights_.reset(new int32_t[static_cast<size_t>(packed_weight_count())]);
    packed_weights_ = own_packed_weights_.get();
    input_channels_last_.reset(
        new int8_t[static_cast<size_t>(shape.batch * shape.in_channels * shape.in_height * shape.in_width)]);
    return;
  }
  // Planar path: W's rows in pairs, two int16 per int32 (an odd last row pairs with 0).
  weight_pairs_.resize(static_cast<size_t>(shape.out_channels * pair_count_));
  for (int64_t o = 0; o < shape.out_channels; ++o) {
    const int8_t* row = tensors.weight + o * rows;
    for (int64_t j = 0; j < pair_count_; ++j) {
      const int16_t high = 2 * j + 1 < rows ? row[2 * j + 1] : 0;
      weight_pairs_[static_cast<size_t>(o * pair_count_ + j)] = cpu::pack_int16_pair(row[2 * j], high);
    }
  }
}

int64_t DeformConvCpuInt8::packed_weight_count() const {
  return channels_last_ ? attributes_.group * in_channels_per_group_ * kernel_area_ / 2 * panels_ * kInt8PanelChannels
                        : 0;
}

// Group g, block at c0 (cc channels), panel j, pair i, lane l at
//   ((g * C/group * taps / 2 + c0 * taps / 2) * panels + j * cc * taps / 2 + i) * 16 + l,
// pair i holding block rows 2i and 2i + 1, row k = tap * cc + c (W[o][c0 + c][tap]);
// lanes past M/group hold 0. cc is even, so both rows of a pair share the tap.
void DeformConvCpuInt8::pack_weight_panel(int64_t panel, int32_t* packed) const {
  const int64_t taps = kernel_area_;
  const int64_t group_pairs = in_channels_per_group_ * taps / 2;
  for (int64_t g = 0; g < attributes_.group; ++g) {
    for (int64_t c0 = 0; c0 < in_channels_per_group_; c0 += channel_block_) {
      const int64_t cc = std::min(channel_block_, in_channels_per_group_ - c0);
      const int64_t block_pairs = cc * taps / 2;
      int32_t* lanes = packed + ((g * group_pairs + c0 * taps / 2) * panels_ + panel * block_pairs) * kInt8PanelChannels;
      for (int64_t l = 0; l < kInt8PanelChannels; ++l) {
        const int64_t m = panel * kInt8PanelChannels + l;
        const int8_t* w = m < out_channels_per_group_
                              ? tensors_.weight + ((g * out_channels_per_group_ + m) * in_channels_per_group_ + c0) * taps
                              : nullptr;
        for (int64_t tap = 0; tap < taps; ++tap) {
          for (int64_t c = 0; c < cc; c += 2) {
            const int64_t pair = (tap * cc + c) / 2;
            lanes[pair * kInt8PanelChannels + l] = w ? cpu::pack_int16_pair(w[c * taps + tap], w[(c + 1) * taps + tap]) : 0;
          }
        }
      }
    }
  }
}

void DeformConvCpuInt8::pack_weights(int32_t* packed) const {
  for (int64_t panel = 0; panel < panels_; ++panel) pack_weight_panel(panel, packed);
}

void DeformConvCpuInt8::set_packed_weights(const int32_t* packed) {
  if (!channels_last_ || packed == nullptr) return;
  packed_weights_ = packed;
  own_packed_weights_.reset();
}

int64_t DeformConvCpuInt8::copy_item_count() const {
  return channels_last_ ? copy_chunk_count(shape_.batch, shape_.in_height * shape_.in_width) : 0;
}

int64_t DeformConvCpuInt8::prepare_item_count() const {
  return copy_item_count() + (own_packed_weights_ ? panels_ : 0);
}

// Items [0, copy_item_count()): one copy chunk of Xq to channels-last; the
// rest: one panel of W each.
void DeformConvCpuInt8::run_prepare_item(int64_t item) const {
  if (item >= copy_item_count()) {
    pack_weight_panel(item - copy_item_count(), own_packed_weights_.get());
    return;
  }
  const int64_t plane_size = shape_.in_height * shape_.in_width;
  const auto [image, first, end] = copy_chunk(item, plane_size);
  const int64_t image_size = shape_.in_channels * plane_size;
  int8_kernels_->to_channels_last(tensors_.input + image * image_size, plane_size, shape_.in_channels, first, end,
                                  input_channels_last_.get() + image * image_size);
}

void DeformConvCpuInt8::run_work_item(int64_t item, DeformConvInt8Scratch& scratch) const {
  const int64_t tile = item % tiles_per_image_;
  const int64_t g = (item / tiles_per_image_) % attributes_.group;
  const int64_t image = item / (tiles_per_image_ * attributes_.group);
  const int64_t first_pixel = tile * tile_pixels_;
  const int64_t pixels = std::min(tile_pixels_, out_pixels_ - first_pixel);
  if (channels_last_) {
    run_channels_last_item(image, g, first_pixel, pixels, scratch);
  } else {
    run_planar_item(image, g, first_pixel, pixels, scratch);
  }
}

void DeformConvCpuInt8::run_channels_last_item(int64_t image, int64_t g, int64_t first_pixel, int64_t pixels,
                                               DeformConvInt8Scratch& scratch) const {
  const int64_t taps = kernel_area_;
  const int64_t stride = round_up(tile_pixels_, 8);  // Corner and accumulator stride per pixel list.
  const int64_t padded = round_up(pixels, 8);
  const int64_t first_channel = g * in_channels_per_group_;
  const int64_t first_offset_group = first_channel / channels_per_offset_group_;
  const int64_t offset_groups =
      (first_channel + in_channels_per_group_ - 1) / channels_per_offset_group_ - first_offset_group + 1;
  scratch.corner_base.resize(static_cast<size_t>(offset_groups * taps * stride));
  scratch.corner_weight.resize(static_cast<size_t>(offset_groups * taps * 4 * stride));
  scratch.pixel_origin.resize(static_cast<size_t>(2 * stride));
  scratch.rows.resize(static_cast<size_t>(stride * taps * channel_block_));
  scratch.accumulator.resize(static_cast<size_t>(panels_ * stride * kInt8PanelChannels));

  // Pair corners of every (offset group, tap, pixel), mask folded in.
  int32_t* row_start = scratch.pixel_origin.data();
  int32_t* col_start = row_start + stride;
  for (int64_t p = 0; p < pixels; ++p) {
    const int64_t pixel = first_pixel + p;
    row_start[p] = static_cast<int32_t>((pixel / shape_.out_width) * attributes_.stride[0] - attributes_.pads[0]);
    col_start[p] = static_cast<int32_t>((pixel % shape_.out_width) * attributes_.stride[1] - attributes_.pads[1]);
  }
  const int32_t height = static_cast<int32_t>(shape_.in_height);
  const int32_t width = static_cast<int32_t>(shape_.in_width);
  for (int64_t og = 0; og < offset_groups; ++og) {
    for (int64_t tap = 0; tap < taps; ++tap) {
      const int64_t offset_channel = (image * attributes_.offset_group + first_offset_group + og) * taps + tap;
      const float* offset_y = tensors_.offset + 2 * offset_channel * out_pixels_ + first_pixel;
      const float* mask = tensors_.mask ? tensors_.mask + offset_channel * out_pixels_ + first_pixel : nullptr;
      const int64_t slot = og * taps + tap;
      kernels_->pair_corners(row_start, col_start, static_cast<int32_t>(tap / shape_.kernel_w * attributes_.dilation[0]),
                             static_cast<int32_t>(tap % shape_.kernel_w * attributes_.dilation[1]), offset_y,
                             offset_y + out_pixels_, mask, pixels, padded, height, width,
                             scratch.corner_base.data() + slot * stride,
                             scratch.corner_weight.data() + slot * 4 * stride);
    }
  }

  // Per channel block: requantized samples pixel-major, then the exact sums of every output channel.
  const int64_t plane_size = shape_.in_height * shape_.in_width;
  const int8_t* image_base = input_channels_last_.get() + image * shape_.in_channels * plane_size;
  const int64_t group_pairs = in_channels_per_group_ * taps / 2;
  const int64_t acc_stride = stride * kInt8PanelChannels;
  int32_t* acc = scratch.accumulator.data();
  for (int64_t c0 = 0; c0 < in_channels_per_group_; c0 += channel_block_) {
    const int64_t cc = std::min(channel_block_, in_channels_per_group_ - c0);
    for (int64_t c = 0; c < cc;) {
      const int64_t channel = first_channel + c0 + c;
      const int64_t offset_group = channel / channels_per_offset_group_;
      const int64_t run = std::min(cc - c, (offset_group + 1) * channels_per_offset_group_ - channel);
      const int64_t slot = (offset_group - first_offset_group) * taps;
      int8_kernels_->gather_channels_last(image_base + channel, shape_.in_channels, run, width,
                                          scratch.corner_base.data() + slot * stride,
                                          scratch.corner_weight.data() + slot * 4 * stride, taps, stride, padded,
                                          scratch.rows.data() + c, taps * cc, cc);
      c += run;
    }
    const int32_t* block = packed_weights_ + (g * group_pairs + c0 * taps / 2) * panels_ * kInt8PanelChannels;
    int8_kernels_->gemm_pixel_major(panels_, cc * taps / 2, block, scratch.rows.data(), taps * cc, pixels, acc,
                                    acc_stride, c0 == 0);
  }

  for (int64_t m = 0; m < out_channels_per_group_; ++m) {
    write_output(g * out_channels_per_group_ + m, image, first_pixel, pixels,
                 acc + (m / kInt8PanelChannels) * acc_stride + m % kInt8PanelChannels, kInt8PanelChannels);
  }
}

void DeformConvCpuInt8::write_output(int64_t o, int64_t image, int64_t first_pixel, int64_t pixels,
                                     const int32_t* sums, int64_t step) const {
  const float scale = tensors_.output_scale[o];
  const float bias = tensors_.bias ? tensors_.bias[o] : 0.0f;
  const int64_t base = (image * shape_.out_channels + o) * out_pixels_ + first_pixel;
  if (tensors_.y_scale > 0.0f) {
    for (int64_t p = 0; p < pixels; ++p) {
      tensors_.output_int8[base + p] = int8_requantize(int8_output(sums[p * step], scale, bias), tensors_.y_scale);
    }
  } else {
    for (int64_t p = 0; p < pixels; ++p) tensors_.output[base + p] = int8_output(sums[p * step], scale, bias);
  }
}

void DeformConvCpuInt8::run_planar_item(int64_t image, int64_t g, int64_t first_pixel, int64_t pixels,
                                        DeformConvInt8Scratch& scratch) const {
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

  // Exact int32 sums, kInt8ChannelBlock output channels per pass over the samples.
  scratch.accumulator.resize(static_cast<size_t>(kInt8ChannelBlock * padded));
  int32_t* acc = scratch.accumulator.data();
  for (int64_t m0 = 0; m0 < out_channels_per_group_; m0 += kInt8ChannelBlock) {
    const int64_t block = std::min(kInt8ChannelBlock, out_channels_per_group_ - m0);
    const int64_t first_out = g * out_channels_per_group_ + m0;
    kernels_->int8_pair_gemm(scratch.samples.data(), pair_count_, padded,
                             weight_pairs_.data() + first_out * pair_count_, block, acc);
    for (int64_t b = 0; b < block; ++b) write_output(first_out + b, image, first_pixel, pixels, acc + b * padded, 1);
  }
}

void DeformConvCpuInt8::run_all() {
  for (int64_t item = 0; item < prepare_item_count(); ++item) run_prepare_item(item);
  DeformConvInt8Scratch scratch;
  for (int64_t item = 0; item < work_item_count(); ++item) run_work_item(item, scratch);
}

}  // namespace dcn_deploy
