#include "cpu/float_driver.h"

#include <algorithm>
#include <cassert>

namespace dcn_deploy {
namespace {

using cpu::kPanelPixels;

constexpr int64_t kMinTilePixels = 2 * kPanelPixels;
constexpr int64_t kMaxTilePixels = 256;
// Channels-last path: smaller tiles keep the pixel-major rows, the
// accumulator, the weight panels of one block and the sampled band of the
// image together in L2 (measured on 128 channels: tile 128 about 10% faster
// than 256; on 64 channels tile 64 about 7% faster than 128, neutral on 128,
// 256 and 512 channels).
constexpr int64_t kMaxChannelsLastTilePixels = 64;
// The pixel-major GEMM's micro-kernel takes 6 pixels with 12 accumulators; a
// group of 1-4 pixels has too few to cover the FMA latency and takes about
// the time of 4 (2 FMA pipes x 4 cycles over 2 accumulators per pixel).
constexpr int64_t kPartialGroupPixels = 4;
// Column block (panels of one channel block) kept around 256 KiB so it stays
// in L2 while every output channel is multiplied with it.
constexpr int64_t kColumnBudgetFloats = 64 * 1024;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t value, int64_t multiple) { return ceil_div(value, multiple) * multiple; }

// Pixels per work item: a multiple of the panel width, large enough that the
// weights streamed once per item are reused over many panels, and giving a
// work-item count that splits evenly over 2 or 4 threads.
int64_t choose_tile_pixels(int64_t out_pixels, int64_t batch, int64_t min_work_items, int64_t max_tile) {
  const int64_t limit = std::min(max_tile, round_up(std::max<int64_t>(out_pixels, 1), kPanelPixels));
  int64_t best_tile = std::min(kMinTilePixels, limit);
  double best_cost = 0.0;
  bool have_best = false;
  for (int64_t tile = kPanelPixels; tile <= limit; tile += kPanelPixels) {
    const int64_t items = std::max<int64_t>(batch, 1) * ceil_div(out_pixels, tile);
    if (tile < std::min(kMinTilePixels, limit)) continue;
    if (items < min_work_items && tile > kMinTilePixels) continue;
    double cost = 1.0 + 24.0 / static_cast<double>(tile);  // Per-item overhead (weights reloaded).
    if (min_work_items > 1) {
      // Work left idle when the items are dealt to 2 and to 4 threads.
      const double idle2 = static_cast<double>(ceil_div(items, 2) * 2) / static_cast<double>(items);
      const double idle4 = static_cast<double>(ceil_div(items, 4) * 4) / static_cast<double>(items);
      cost *= 0.5 * (idle2 + idle4);
    }
    if (!have_best || cost < best_cost - 1e-9 || (cost <= best_cost + 1e-9 && tile > best_tile)) {
      best_cost = cost;
      best_tile = tile;
      have_best = true;
    }
  }
  return best_tile;
}

}  // namespace

int64_t balanced_tile_pixels(int64_t out_pixels, int64_t work_units, int64_t min_work_items, int64_t max_tile,
                             int64_t micro_pixels, int64_t partial_group_pixels) {
  // Per-item overhead in pixel equivalents: the corners, and the weights
  // streamed through the cache once per item.
  constexpr double kItemOverheadPixels = 24.0;
  // Pixels of GEMM work a tile costs: a last, partial micro-kernel group costs
  // at least partial_group_pixels (fewer accumulators wait on the FMA latency).
  const auto gemm_pixels = [&](int64_t tile) {
    const int64_t rest = micro_pixels > 1 ? tile % micro_pixels : 0;
    return tile - rest + (rest > 0 ? std::max(rest, partial_group_pixels) : 0);
  };
  constexpr int64_t kMinBalancedTile = 8;
  if (out_pixels <= 0) return 0;
  int64_t best_tile = 0;
  double best_cost = 0.0;
  const int64_t first_tiles = ceil_div(out_pixels, std::max<int64_t>(max_tile, 1));
  for (int64_t tiles = first_tiles;; ++tiles) {
    const int64_t tile = ceil_div(out_pixels, tiles);
    if (tiles > first_tiles && tile < kMinBalancedTile) break;
    if (ceil_div(out_pixels, tile) != tiles) continue;  // The same tile as fewer, larger pieces.
    const int64_t items = std::max<int64_t>(work_units, 1) * tiles;
    const double item_cost = static_cast<double>(gemm_pixels(tile)) + kItemOverheadPixels;
    // One thread: the sum; a pool: the makespan of equal items on 2 and on 4 threads.
    const double cost = min_work_items <= 1
                            ? static_cast<double>(items) * item_cost
                            : 0.5 * static_cast<double>(ceil_div(items, 2) + ceil_div(items, 4)) * item_cost;
    if (best_tile == 0 || cost < best_cost - 1e-9) {
      best_tile = tile;
      best_cost = cost;
    }
    if (tile <= kMinBalancedTile) break;
  }
  return best_tile;
}

DeformConvCpu::DeformConvCpu(const DeformConvAttributes& attributes, const DeformConvShape& shape,
                             const DeformConvTensors& tensors, int64_t min_work_items)
    : DeformConvCpu(attributes, shape, tensors, [&] {
        DeformConvCpuOptions options;
        options.min_work_items = min_work_items;
        return options;
      }()) {}

DeformConvCpu::DeformConvCpu(const DeformConvAttributes& attributes, const DeformConvShape& shape,
                             const DeformConvTensors& tensors, const DeformConvCpuOptions& options)
    : attributes_(attributes), shape_(shape), tensors_(tensors) {
  kernel_area_ = shape.kernel_h * shape.kernel_w;
  in_channels_per_group_ = shape.in_channels / attributes.group;
  out_channels_per_group_ = shape.out_channels / attributes.group;
  channels_per_offset_group_ = shape.in_channels / attributes.offset_group;
  column_rows_ = in_channels_per_group_ * kernel_area_;
  out_pixels_ = shape.out_height * shape.out_width;
  kernels_ = options.kernels ? options.kernels : &cpu::cpu_kernels();

  using Finite = DeformConvCpuOptions::Finite;
  const bool blocks_fit = shape.in_height >= 2 && shape.in_width >= 2;
  const bool channels_last_shape = blocks_fit && kernels_->gather_channels_last != nullptr &&
                                   kernels_->gemm_pixel_major != nullptr &&
                                   kernels_->store_pixel_major != nullptr && kernels_->to_channels_last != nullptr &&
                                   in_channels_per_group_ % 8 == 0 && channels_per_offset_group_ % 8 == 0;
  Finite finite = options.input_finite;
  if (finite == Finite::kCheckWhilePreparing && !channels_last_shape) finite = Finite::kUnknown;
  finite_pending_ = finite == Finite::kCheckWhilePreparing && tensors.input != nullptr;
  if (finite == Finite::kUnknown && tensors.input != nullptr) {
    finite = cpu::all_finite(tensors.input, input_floats()) ? Finite::kYes : Finite::kNo;
  }
  pair_corners_ = blocks_fit && (finite == Finite::kYes || finite_pending_);
  channels_last_possible_ = pair_corners_ && channels_last_shape;
  // Channels-last tiles may have any size (the gather pads to 8 pixels, the
  // GEMM runs over the exact count): nearly equal tiles balance small images
  // over the threads (7x7: 25 + 24 pixels instead of 48 + 1). Planar tiles are
  // multiples of the 16-pixel panel.
  tile_pixels_ = out_pixels_ <= 0 ? 0
                 : channels_last_possible_
                     ? balanced_tile_pixels(out_pixels_, shape.batch, options.min_work_items, kMaxChannelsLastTilePixels,
                                            cpu::kPanelRows, kPartialGroupPixels)
                     : choose_tile_pixels(out_pixels_, shape.batch, options.min_work_items, kMaxTilePixels);
  corner_stride_ = round_up(tile_pixels_, kPanelPixels);
  tiles_per_image_ = tile_pixels_ > 0 ? ceil_div(out_pixels_, tile_pixels_) : 0;  // 0 only for unvalidated shapes.
  // Channel blocks of about equal size whose column panels fit the budget.
  const int64_t block_count =
      std::max<int64_t>(1, ceil_div(column_rows_ * std::max<int64_t>(corner_stride_, 1), kColumnBudgetFloats));
  channel_block_ = std::max<int64_t>(1, ceil_div(in_channels_per_group_, block_count));
  if (channels_last_possible_) channel_block_ = std::min(in_channels_per_group_, round_up(channel_block_, 8));
}

int64_t DeformConvCpu::packed_panel_count() const {
  return channels_last_possible_ ? ceil_div(out_channels_per_group_, kPanelPixels) : 0;
}

int64_t DeformConvCpu::packed_weight_floats() const {
  return attributes_.group * packed_panel_count() * kPanelPixels * column_rows_;
}

// Group g, channel block at c0 (cc channels), panel j: [k = tap * cc + c][16
// output channels] at g * panels * 16 * column_rows + c0 * taps * panels * 16 + j * cc * taps * 16.
void DeformConvCpu::pack_weight_panel(int64_t panel, float* packed) const {
  const int64_t panels = packed_panel_count();
  for (int64_t group = 0; group < attributes_.group; ++group) {
    float* group_base = packed + group * panels * kPanelPixels * column_rows_;
    for (int64_t c0 = 0; c0 < in_channels_per_group_; c0 += channel_block_) {
      const int64_t cc = std::min(channel_block_, in_channels_per_group_ - c0);
      float* target = group_base + c0 * kernel_area_ * panels * kPanelPixels + panel * cc * kernel_area_ * kPanelPixels;
      for (int64_t lane = 0; lane < kPanelPixels; ++lane) {
        const int64_t m = panel * kPanelPixels + lane;
        const float* row = m < out_channels_per_group_
                               ? tensors_.weight + (group * out_channels_per_group_ + m) * column_rows_
                               : nullptr;
        for (int64_t c = 0; c < cc; ++c) {
          for (int64_t tap = 0; tap < kernel_area_; ++tap) {
            target[(tap * cc + c) * kPanelPixels + lane] = row ? row[(c0 + c) * kernel_area_ + tap] : 0.0f;
          }
        }
      }
    }
  }
}

int64_t DeformConvCpu::workspace_floats() const {
  if (!channels_last_possible_) return 0;
  return input_floats() +
         (packed_weights_ ? 0 : packed_weight_floats());
}

void DeformConvCpu::set_workspace(float* workspace) {
  channels_last_ = workspace_floats() > 0 ? workspace : nullptr;
  packed_workspace_ = channels_last_ && !packed_weights_
                          ? workspace + input_floats()
                          : nullptr;
}

int64_t DeformConvCpu::copy_item_count() const {
  return channels_last_ ? copy_chunk_count(shape_.batch, shape_.in_height * shape_.in_width) : 0;
}

int64_t DeformConvCpu::prepare_item_count() const {
  return copy_item_count() + (packed_workspace_ ? packed_panel_count() : 0);
}

// One copy chunk (all channels) to channels-last, or one panel of W.
void DeformConvCpu::run_prepare_item(int64_t item) const {
  if (item >= copy_item_count()) {
    pack_weight_panel(item - copy_item_count(), packed_workspace_);
    return;
  }
  const int64_t plane_size = shape_.in_height * shape_.in_width;
  const auto [image, first, end] = copy_chunk(item, plane_size);
  const int64_t channels = shape_.in_channels;
  const float* source = tensors_.input + image * channels * plane_size;
  float* target = channels_last_ + image * channels * plane_size;
  // channels_last_ needs to_channels_last and C a multiple of 8 (constructor).
  const bool finite = kernels_->to_channels_last(source, plane_size, channels, first, end, target);
  if (!finite) non_finite_seen_.store(true, std::memory_order_relaxed);
}

void DeformConvCpu::finish_prepare() {
  if (!finite_pending_) return;
  finite_pending_ = false;
  // Without a workspace no copy ran, so nothing has looked at X yet.
  const bool non_finite =
      channels_last_ == nullptr ? !cpu::all_finite(tensors_.input, input_floats()) : non_finite_seen_.load();
  if (non_finite) {
    // The exact per-corner path on the planar X; the tile and the channel
    // block chosen for the channels-last path suit it as well.
    pair_corners_ = false;
    channels_last_possible_ = false;
    channels_last_ = nullptr;
    packed_workspace_ = nullptr;
  }
}

void DeformConvCpu::run_all() {
  std::vector<float> workspace;
  if (channels_last_ == nullptr && workspace_floats() > 0) {
    workspace.resize(static_cast<size_t>(workspace_floats()));
    set_workspace(workspace.data());
  }
  for (int64_t item = 0; item < prepare_item_count(); ++item) run_prepare_item(item);
  finish_prepare();
  DeformConvCpuScratch scratch;
  for (int64_t item = 0; item < work_item_count(); ++item) run_work_item(item, scratch);
  if (!workspace.empty()) set_workspace(nullptr);
}

void DeformConvCpu::run_work_item(int64_t item, DeformConvCpuScratch& scratch) const {
  assert(!finite_pending_ && "kCheckWhilePreparing: call finish_prepare() before the work items");
  const int64_t image = item / tiles_per_image_;
  const int64_t first_pixel = (item % tiles_per_image_) * tile_pixels_;
  const int64_t pixel_count = std::min(tile_pixels_, out_pixels_ - first_pixel);
  // Corners come in octets; planar column panels are 16 pixels wide.
  const int64_t padded_pixels = round_up(pixel_count, channels_last_ != nullptr ? 8 : kPanelPixels);

  const size_t corner_count = static_cast<size_t>(attributes_.offset_group * kernel_area_ * 4 * corner_stride_);
  const size_t column_count = static_cast<size_t>(channel_block_ * kernel_area_ * corner_stride_);
  if (scratch.corner_index.size() < corner_count) scratch.corner_index.resize(corner_count);
  if (scratch.corner_weight.size() < corner_count) scratch.corner_weight.resize(corner_count);
  if (scratch.columns.size() < column_count) scratch.columns.resize(column_count);

  if (scratch.pixel_origin.size() < static_cast<size_t>(2 * corner_stride_)) {
    scratch.pixel_origin.resize(static_cast<size_t>(2 * corner_stride_));
  }
  compute_corners(image, first_pixel, pixel_count, padded_pixels, scratch.corner_index.data(),
                  scratch.corner_weight.data(), scratch.pixel_origin.data());
  if (channels_last_ != nullptr) {
    run_channels_last_item(image, first_pixel, pixel_count, padded_pixels, scratch);
    return;
  }
  const float* bias = shape_.has_bias ? tensors_.bias : nullptr;
  float* output_tile = tensors_.output + image * shape_.out_channels * out_pixels_ + first_pixel;
  for (int64_t weight_group = 0; weight_group < attributes_.group; ++weight_group) {
    const int64_t first_out = weight_group * out_channels_per_group_;
    for (int64_t c0 = 0; c0 < in_channels_per_group_; c0 += channel_block_) {
      const int64_t channel_count = std::min(channel_block_, in_channels_per_group_ - c0);
      gather_columns(image, weight_group * in_channels_per_group_ + c0, channel_count, padded_pixels,
                     scratch.corner_index.data(), scratch.corner_weight.data(), scratch.columns.data());
      kernels_->gemm(out_channels_per_group_, channel_count * kernel_area_,
                     tensors_.weight + first_out * column_rows_ + c0 * kernel_area_, column_rows_,
                     scratch.columns.data(), pixel_count, output_tile + first_out * out_pixels_, out_pixels_,
                     bias ? bias + first_out : nullptr, c0 == 0);
    }
  }
}

// Channels-last path of one work item (corners already computed): per group
// and channel block, the samples go pixel-major into scratch.columns (row of
// pixel q: [tap][channel]) and are multiplied with the packed weights into
// scratch.accumulator, which is finally stored transposed into Y.
void DeformConvCpu::run_channels_last_item(int64_t image, int64_t first_pixel, int64_t pixel_count,
                                           int64_t padded_pixels, DeformConvCpuScratch& scratch) const {
  const int64_t panels = packed_panel_count();
  const int64_t tile = corner_stride_;
  const size_t accumulator_count = static_cast<size_t>(panels * tile * kPanelPixels);
  if (scratch.accumulator.size() < accumulator_count) scratch.accumulator.resize(accumulator_count);
  const float* packed = packed_weights_ ? packed_weights_ : packed_workspace_;
  const int64_t plane_size = shape_.in_height * shape_.in_width;
  const int32_t width = static_cast<int32_t>(shape_.in_width);
  const float* image_base = channels_last_ + image * shape_.in_channels * plane_size;
  const float* bias = shape_.has_bias ? tensors_.bias : nullptr;
  float* output_tile = tensors_.output + image * shape_.out_channels * out_pixels_ + first_pixel;
  float* rows = scratch.columns.data();
  float* accumulator = scratch.accumulator.data();
  const int64_t acc_stride = tile * kPanelPixels;
  for (int64_t weight_group = 0; weight_group < attributes_.group; ++weight_group) {
    const int64_t first_out = weight_group * out_channels_per_group_;
    const float* group_packed = packed + weight_group * panels * kPanelPixels * column_rows_;
    for (int64_t c0 = 0; c0 < in_channels_per_group_; c0 += channel_block_) {
      const int64_t cc = std::min(channel_block_, in_channels_per_group_ - c0);
      const int64_t depth = cc * kernel_area_;
      const int64_t first_channel = weight_group * in_channels_per_group_ + c0;
      for (int64_t c = 0; c < cc;) {
        const int64_t channel = first_channel + c;
        const int64_t offset_group = channel / channels_per_offset_group_;
        const int64_t run = std::min(cc - c, (offset_group + 1) * channels_per_offset_group_ - channel);
        const int64_t corners = offset_group * kernel_area_;
        kernels_->gather_channels_last(image_base + channel, shape_.in_channels, run, width,
                                       scratch.corner_index.data() + corners * corner_stride_,
                                       scratch.corner_weight.data() + corners * 4 * corner_stride_, kernel_area_,
                                       corner_stride_, padded_pixels, rows + c, depth, cc);
        c += run;
      }
      kernels_->gemm_pixel_major(panels, depth, group_packed + c0 * kernel_area_ * panels * kPanelPixels, rows, depth,
                                 pixel_count, accumulator, acc_stride, c0 == 0);
    }
    kernels_->store_pixel_major(accumulator, acc_stride, out_channels_per_group_, pixel_count,
                                bias ? bias + first_out : nullptr, output_tile + first_out * out_pixels_, out_pixels_);
  }
}

// Corner arrays of (offset group g, tap t) start at (g * kh*kw + t) * 4 * tile_pixels
// (weights, both paths; indices of the exact path) or (g * kh*kw + t) * tile_pixels
// (indices of the fast path). Pixels past pixel_count up to the next panel get
// weight 0 and a valid index.
void DeformConvCpu::compute_corners(int64_t image, int64_t first_pixel, int64_t pixel_count, int64_t padded_pixels,
                                    int32_t* corner_index, float* corner_weight, int32_t* pixel_origin) const {
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
  const int64_t stride = corner_stride_;

  // Fast path: oy * stride - pad per pixel, shared by every tap.
  int32_t* row_start = pixel_origin;
  int32_t* col_start = pixel_origin + stride;
  if (pair_corners_) {
    int32_t oy = first_oy;
    int32_t ox = first_ox;
    for (int64_t p = 0; p < pixel_count; ++p) {
      row_start[p] = oy * stride_h - pad_top;
      col_start[p] = ox * stride_w - pad_left;
      if (++ox == out_width) {
        ox = 0;
        ++oy;
      }
    }
  }

  const int64_t offset_group = attributes_.offset_group;
  const float* offset_image = tensors_.offset + image * 2 * offset_group * kernel_area_ * out_pixels_;
  const float* mask_image =
      shape_.has_mask ? tensors_.mask + image * offset_group * kernel_area_ * out_pixels_ : nullptr;

  for (int64_t group = 0; group < offset_group; ++group) {
    for (int32_t i = 0; i < shape_.kernel_h; ++i) {
      for (int32_t j = 0; j < shape_.kernel_w; ++j) {
        const int64_t tap = group * kernel_area_ + i * shape_.kernel_w + j;
        // (dy, dx) channels are interleaved per tap: 2*tap and 2*tap + 1.
        const float* offset_y = offset_image + 2 * tap * out_pixels_ + first_pixel;
        const float* offset_x = offset_y + out_pixels_;
        const float* mask = mask_image ? mask_image + tap * out_pixels_ + first_pixel : nullptr;
        float* tap_weight = corner_weight + tap * 4 * stride;

        int32_t oy = first_oy;
        int32_t ox = first_ox;
        if (pair_corners_) {
          kernels_->pair_corners(row_start, col_start, i * dilation_h, j * dilation_w, offset_y, offset_x, mask,
                                 pixel_count, padded_pixels, height, width, corner_index + tap * stride,
                                 tap_weight);
        } else {
          int32_t* tap_index = corner_index + tap * 4 * stride;
          for (int64_t p = 0; p < padded_pixels; ++p) {
            BilinearCorners sample = outside_corners();
            float scale = 0.0f;
            if (p < pixel_count) {
              const float y = sampling_coordinate(oy, stride_h, pad_top, i, dilation_h, offset_y[p]);
              const float x = sampling_coordinate(ox, stride_w, pad_left, j, dilation_w, offset_x[p]);
              sample = sample_corners(y, x, height, width);
              scale = mask ? mask[p] : 1.0f;
              if (++ox == out_width) {
                ox = 0;
                ++oy;
              }
            }
            for (int q = 0; q < 4; ++q) {
              tap_index[q * stride + p] = sample.index[q];
              tap_weight[q * stride + p] = sample.weight[q] * scale;
            }
          }
        }
      }
    }
  }
}

// Column row (c - first_channel) * kh*kw + tap of the block holds the samples
// of input channel c for that tap, one per pixel of the tile.
void DeformConvCpu::gather_columns(int64_t image, int64_t first_channel, int64_t channel_count,
                                   int64_t padded_pixels, const int32_t* corner_index, const float* corner_weight,
                                   float* columns) const {
  const int64_t plane_size = shape_.in_height * shape_.in_width;
  const int64_t rows = channel_count * kernel_area_;
  const int32_t width = static_cast<int32_t>(shape_.in_width);
  // Runs of channels sharing one offset group.
  for (int64_t c = 0; c < channel_count;) {
    const int64_t channel = first_channel + c;
    const int64_t offset_group = channel / channels_per_offset_group_;
    const int64_t run = std::min(channel_count - c, (offset_group + 1) * channels_per_offset_group_ - channel);
    const float* planes = tensors_.input + (image * shape_.in_channels + channel) * plane_size;
    for (int64_t tap = 0; tap < kernel_area_; ++tap) {
      const int64_t corners = offset_group * kernel_area_ + tap;
      const float* weights = corner_weight + corners * 4 * corner_stride_;
      if (pair_corners_) {
        kernels_->gather_pairs(planes, plane_size, run, width, corner_index + corners * corner_stride_, weights,
                               padded_pixels, columns, rows, c * kernel_area_ + tap, kernel_area_);
        continue;
      }
      const int32_t* index = corner_index + corners * 4 * corner_stride_;
      for (int64_t k = 0; k < run; ++k) {
        const float* plane = planes + k * plane_size;
        float* row = columns + ((c + k) * kernel_area_ + tap) * kPanelPixels;
        for (int64_t p = 0; p < padded_pixels; ++p) {
          float value = 0.0f;
          for (int q = 0; q < 4; ++q) {
            value += weights[q * corner_stride_ + p] * corner_value(plane, index[q * corner_stride_ + p]);
          }
          row[(p / kPanelPixels) * cpu::panel_stride(rows) + p % kPanelPixels] = value;
        }
      }
    }
    c += run;
  }
}

}  // namespace dcn_deploy
