#include "deform_conv_cpu.h"

#include <algorithm>

// The two hot loops get an AVX2+FMA clone picked at load time on x86-64 (GCC
// ifunc), while the library itself still runs on any x86-64 CPU.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define DCN_HOT_LOOP_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define DCN_HOT_LOOP_CLONES
#endif

namespace dcn_deploy {
namespace {

// Output pixels per multiply micro-kernel step. Tiles are a multiple of it
// and the column tile is padded to it, so the micro-kernel has no tail loop.
constexpr int64_t kPixelBlock = 32;
// Output channels per micro-kernel step (they share each column load).
constexpr int kOutputBlock = 4;
constexpr int64_t kMinTilePixels = kPixelBlock;
constexpr int64_t kMaxTilePixels = 256;
// Column tile kept around 256 KiB so it stays in L2 during the multiply.
constexpr int64_t kColumnBudgetFloats = 64 * 1024;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t value, int64_t multiple) { return ceil_div(value, multiple) * multiple; }

int64_t choose_tile_pixels(int64_t column_rows, int64_t out_pixels, int64_t batch, int64_t min_work_items) {
  int64_t tile = (kColumnBudgetFloats / std::max<int64_t>(column_rows, 1)) / kPixelBlock * kPixelBlock;
  tile = std::clamp(tile, kMinTilePixels, kMaxTilePixels);
  if (batch > 0 && min_work_items > batch) {
    const int64_t tiles_wanted = ceil_div(min_work_items, batch);
    tile = std::min(tile, std::max(ceil_div(out_pixels, tiles_wanted) / kPixelBlock * kPixelBlock, kMinTilePixels));
  }
  return std::min(tile, round_up(out_pixels, kPixelBlock));
}

// out[o][first + q] = bias[o] + sum_r weight[o][r] * columns[r][first + q]
// for kRows output channels and q < count <= kPixelBlock. The small
// accumulator block lives in registers (or L1) for the whole reduction over
// r, and the q loops run a constant count over contiguous floats, so g++ -O3
// vectorises them. Lanes past `count` compute on stale padding and are
// never stored.
template <int kRows>
inline void multiply_block(const float* weight, int64_t column_rows, const float* columns, int64_t tile_pixels,
                           int64_t first, int64_t count, const float* bias, float* const* out) {
  float acc[kRows][kPixelBlock];
  for (int o = 0; o < kRows; ++o) {
    const float initial = bias ? bias[o] : 0.0f;
    for (int64_t q = 0; q < kPixelBlock; ++q) acc[o][q] = initial;
  }
  const float* column = columns + first;
  for (int64_t r = 0; r < column_rows; ++r, column += tile_pixels) {
    float w[kRows];
    for (int o = 0; o < kRows; ++o) w[o] = weight[o * column_rows + r];
    for (int64_t q = 0; q < kPixelBlock; ++q) {
      const float value = column[q];
      for (int o = 0; o < kRows; ++o) acc[o][q] += w[o] * value;
    }
  }
  for (int o = 0; o < kRows; ++o) {
    for (int64_t q = 0; q < count; ++q) out[o][first + q] = acc[o][q];
  }
}

// Output rows [first_channel, end_channel) of one tile from its column tile.
DCN_HOT_LOOP_CLONES
void multiply_weights_into_tile(const float* weight, const float* bias, int64_t first_channel, int64_t end_channel,
                                int64_t column_rows, const float* columns, int64_t tile_pixels, int64_t pixel_count,
                                float* output_tile, int64_t out_plane) {
  int64_t o = first_channel;
  for (; o + kOutputBlock <= end_channel; o += kOutputBlock) {
    float* out[kOutputBlock];
    for (int k = 0; k < kOutputBlock; ++k) out[k] = output_tile + (o + k) * out_plane;
    for (int64_t first = 0; first < pixel_count; first += kPixelBlock) {
      multiply_block<kOutputBlock>(weight + o * column_rows, column_rows, columns, tile_pixels, first,
                                   std::min(kPixelBlock, pixel_count - first), bias ? bias + o : nullptr, out);
    }
  }
  for (; o < end_channel; ++o) {
    float* out[1] = {output_tile + o * out_plane};
    for (int64_t first = 0; first < pixel_count; first += kPixelBlock) {
      multiply_block<1>(weight + o * column_rows, column_rows, columns, tile_pixels, first,
                        std::min(kPixelBlock, pixel_count - first), bias ? bias + o : nullptr, out);
    }
  }
}

// column[p] = bilinear sample of `plane` with the precomputed corners of pixel p
// (interpolate() of deform_conv_math.h on structure-of-arrays corners).
DCN_HOT_LOOP_CLONES
void gather_row(const float* plane, const int32_t* corner_index, const float* corner_weight, int64_t tile_pixels,
                int64_t pixel_count, float* column) {
  const int32_t* index0 = corner_index;
  const int32_t* index1 = corner_index + tile_pixels;
  const int32_t* index2 = corner_index + 2 * tile_pixels;
  const int32_t* index3 = corner_index + 3 * tile_pixels;
  const float* weight0 = corner_weight;
  const float* weight1 = corner_weight + tile_pixels;
  const float* weight2 = corner_weight + 2 * tile_pixels;
  const float* weight3 = corner_weight + 3 * tile_pixels;
  for (int64_t p = 0; p < pixel_count; ++p) {
    column[p] = weight0[p] * corner_value(plane, index0[p]) + weight1[p] * corner_value(plane, index1[p]) +
                weight2[p] * corner_value(plane, index2[p]) + weight3[p] * corner_value(plane, index3[p]);
  }
}

}  // namespace

DeformConvCpu::DeformConvCpu(const DeformConvAttributes& attributes, const DeformConvShape& shape,
                             const DeformConvTensors& tensors, int64_t min_work_items)
    : attributes_(attributes), shape_(shape), tensors_(tensors) {
  kernel_area_ = shape.kernel_h * shape.kernel_w;
  in_channels_per_group_ = shape.in_channels / attributes.group;
  out_channels_per_group_ = shape.out_channels / attributes.group;
  channels_per_offset_group_ = shape.in_channels / attributes.offset_group;
  column_rows_ = in_channels_per_group_ * kernel_area_;
  out_pixels_ = shape.out_height * shape.out_width;
  tile_pixels_ = choose_tile_pixels(column_rows_, out_pixels_, shape.batch, min_work_items);
  tiles_per_image_ = tile_pixels_ > 0 ? ceil_div(out_pixels_, tile_pixels_) : 0;  // 0 only for unvalidated shapes.
}

void DeformConvCpu::run_all() const {
  DeformConvCpuScratch scratch;
  for (int64_t item = 0; item < work_item_count(); ++item) run_work_item(item, scratch);
}

void DeformConvCpu::run_work_item(int64_t item, DeformConvCpuScratch& scratch) const {
  const int64_t image = item / tiles_per_image_;
  const int64_t first_pixel = (item % tiles_per_image_) * tile_pixels_;
  const int64_t pixel_count = std::min(tile_pixels_, out_pixels_ - first_pixel);

  const size_t corner_count = static_cast<size_t>(attributes_.offset_group * kernel_area_ * 4 * tile_pixels_);
  const size_t column_count = static_cast<size_t>(column_rows_ * tile_pixels_);
  if (scratch.corner_index.size() < corner_count) scratch.corner_index.resize(corner_count);
  if (scratch.corner_weight.size() < corner_count) scratch.corner_weight.resize(corner_count);
  if (scratch.columns.size() < column_count) scratch.columns.resize(column_count);

  compute_corners(image, first_pixel, pixel_count, scratch.corner_index.data(), scratch.corner_weight.data());
  const float* bias = shape_.has_bias ? tensors_.bias : nullptr;
  float* output_tile = tensors_.output + image * shape_.out_channels * out_pixels_ + first_pixel;
  for (int64_t weight_group = 0; weight_group < attributes_.group; ++weight_group) {
    gather_columns(image, weight_group, pixel_count, scratch.corner_index.data(), scratch.corner_weight.data(),
                   scratch.columns.data());
    const int64_t first_channel = weight_group * out_channels_per_group_;
    multiply_weights_into_tile(tensors_.weight, bias, first_channel, first_channel + out_channels_per_group_,
                               column_rows_, scratch.columns.data(), tile_pixels_, pixel_count, output_tile,
                               out_pixels_);
  }
}

// Corner arrays of (offset group g, tap t) start at ((g * kh*kw + t) * 4) * tile_pixels.
void DeformConvCpu::compute_corners(int64_t image, int64_t first_pixel, int64_t pixel_count, int32_t* corner_index,
                                    float* corner_weight) const {
  const int32_t height = static_cast<int32_t>(shape_.in_height);
  const int32_t width = static_cast<int32_t>(shape_.in_width);
  const int32_t out_width = static_cast<int32_t>(shape_.out_width);
  const int32_t stride_h = static_cast<int32_t>(attributes_.stride[0]);
  const int32_t stride_w = static_cast<int32_t>(attributes_.stride[1]);
  const int32_t pad_top = static_cast<int32_t>(attributes_.pads[0]);
  const int32_t pad_left = static_cast<int32_t>(attributes_.pads[1]);
  const int32_t dilation_h = static_cast<int32_t>(attributes_.dilation[0]);
  const int32_t dilation_w = static_cast<int32_t>(attributes_.dilation[1]);
  const int32_t first_oy = static_cast<int32_t>(first_pixel / shape_.out_width);
  const int32_t first_ox = static_cast<int32_t>(first_pixel % shape_.out_width);

  const int64_t offset_groups = attributes_.offset_group;
  const float* offset_image = tensors_.offset + image * 2 * offset_groups * kernel_area_ * out_pixels_;
  const float* mask_image =
      shape_.has_mask ? tensors_.mask + image * offset_groups * kernel_area_ * out_pixels_ : nullptr;

  for (int64_t group = 0; group < offset_groups; ++group) {
    for (int32_t i = 0; i < shape_.kernel_h; ++i) {
      for (int32_t j = 0; j < shape_.kernel_w; ++j) {
        const int64_t tap = group * kernel_area_ + i * shape_.kernel_w + j;
        // (dy, dx) channels are interleaved per tap: 2*tap and 2*tap + 1.
        const float* offset_y = offset_image + 2 * tap * out_pixels_ + first_pixel;
        const float* offset_x = offset_y + out_pixels_;
        const float* mask = mask_image ? mask_image + tap * out_pixels_ + first_pixel : nullptr;
        int32_t* tap_index = corner_index + tap * 4 * tile_pixels_;
        float* tap_weight = corner_weight + tap * 4 * tile_pixels_;

        int32_t oy = first_oy;
        int32_t ox = first_ox;
        for (int64_t p = 0; p < pixel_count; ++p) {
          const float y = sampling_coordinate(oy, stride_h, pad_top, i, dilation_h, offset_y[p]);
          const float x = sampling_coordinate(ox, stride_w, pad_left, j, dilation_w, offset_x[p]);
          const BilinearCorners sample = sample_corners(y, x, height, width);
          const float scale = mask ? mask[p] : 1.0f;
          for (int q = 0; q < 4; ++q) {
            tap_index[q * tile_pixels_ + p] = sample.index[q];
            tap_weight[q * tile_pixels_ + p] = sample.weight[q] * scale;
          }
          if (++ox == out_width) {
            ox = 0;
            ++oy;
          }
        }
      }
    }
  }
}

// Row (c * kh*kw + tap) of the column tile holds the samples of input channel
// c of `weight_group` for that tap, one per pixel of the tile.
void DeformConvCpu::gather_columns(int64_t image, int64_t weight_group, int64_t pixel_count,
                                   const int32_t* corner_index, const float* corner_weight, float* columns) const {
  const int64_t plane_size = shape_.in_height * shape_.in_width;
  for (int64_t c = 0; c < in_channels_per_group_; ++c) {
    const int64_t channel = weight_group * in_channels_per_group_ + c;
    const int64_t offset_group = channel / channels_per_offset_group_;
    const float* plane = tensors_.input + (image * shape_.in_channels + channel) * plane_size;
    for (int64_t tap = 0; tap < kernel_area_; ++tap) {
      const int64_t corners = (offset_group * kernel_area_ + tap) * 4 * tile_pixels_;
      gather_row(plane, corner_index + corners, corner_weight + corners, tile_pixels_, pixel_count,
                 columns + (c * kernel_area_ + tap) * tile_pixels_);
    }
  }
}

}  // namespace dcn_deploy
