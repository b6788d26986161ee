// INT8 CPU forward pass of deformable convolution (definition: dcn_deploy/op/int8.py).
//
// X and W are int8 (symmetric, zero point 0); offset, mask and bias float32.
// Per work item (image, weight group, tile of output pixels): the bilinear
// corners of every (tap, pixel) are computed once with the mask folded into
// the weights, the requantized samples vq of every (channel, tap, pixel) are
// gathered into an int16 panel, and every output channel of the group is
// accumulated over it in exact int32; the per-channel output scale and bias
// then give float32 Y, or int8 Yq when y_scale > 0.
//
// Two paths compute the same bits. Channels-last (H, W >= 2, C/group and
// C/offset_group multiples of 8): prepare items first copy Xq channels-last,
// then a work item gathers 8 channels per corner load (pair corners, see
// cpu/kernels/int8_kernels.h) into pixel-major rows in blocks of
// input channels and multiplies them with weights packed in panels of 16
// output channels (vpmaddwd). Planar (any other shape): per-corner samples of
// the planar Xq into row pairs, 4 output channels per pass.
//
// The per-element math (int8_sample, int8_output, int8_requantize) is the
// same inline code the CUDA kernel uses, so both give the reference's bits.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "cpu/kernels/int8_kernels.h"
#include "cpu/kernels/float_kernels.h"
#include "core/math.h"
#include "core/int8_scales.h"
#include "core/params.h"

namespace dcn_deploy {

// Raw tensor pointers in ONNX layout (all contiguous, row-major).
struct DeformConvInt8Tensors {
  const int8_t* input = nullptr;   // Xq [N, C, H, W]
  const int8_t* weight = nullptr;  // Wq [M, C/group, kh, kw]
  const float* offset = nullptr;   // [N, 2*offset_group*kh*kw, Ho, Wo]
  const float* bias = nullptr;     // [M]; required when shape.has_bias
  const float* mask = nullptr;     // [N, offset_group*kh*kw, Ho, Wo]; required when shape.has_mask
  const float* output_scale = nullptr;  // [M]: float32(x_scale * w_scale[o]) (int8_output_scales)
  float y_scale = 0.0f;            // > 0: int8 output Yq into output_int8; 0: float32 Y into output
  float* output = nullptr;         // Y [N, M, Ho, Wo]
  int8_t* output_int8 = nullptr;   // Yq [N, M, Ho, Wo]
};

// Per-thread working memory of one work item; reuse it across items.
struct DeformConvInt8Scratch {
  // Planar path.
  std::vector<BilinearCorners> corners;  // [offset groups of the weight group][kh*kw][tile], mask folded in
  std::vector<int16_t> samples;       // [row pairs][padded tile][2]: requantized samples, rows paired
  std::vector<int32_t> accumulator;   // [kInt8ChannelBlock][padded tile]; channels-last: [panels][tile][16]
  // Channels-last path: pair corners [offset groups][kh*kw][tile] (weights 4 per pixel), pixel
  // origins [2][tile], and the samples of one channel block, pixel-major [tile][kh*kw][block].
  std::vector<int32_t> corner_base;
  std::vector<float> corner_weight;
  std::vector<int32_t> pixel_origin;
  std::vector<int16_t> rows;
};

class DeformConvCpuInt8 {
 public:
  // `attributes` and `shape` must come from a successful infer_shape() and
  // check_int8_shape(); the output_scale array must hold M values.
  DeformConvCpuInt8(const DeformConvAttributes& attributes, const DeformConvShape& shape,
                    const DeformConvInt8Tensors& tensors, int64_t min_work_items = 1,
                    const cpu::KernelSet* kernels = nullptr,  // nullptr: cpu::cpu_kernels()
                    const cpu::Int8KernelSet* int8_kernels = nullptr);  // nullptr: cpu::int8_kernels()
  const char* kernel_name() const { return kernels_->name; }

  int64_t work_item_count() const { return shape_.batch * attributes_.group * tiles_per_image_; }
  int64_t tile_pixels() const { return tile_pixels_; }
  // True when the channels-last path runs (chosen by the constructor).
  bool uses_channels_last() const { return channels_last_; }

  // Channels-last path only (0 items otherwise): run every prepare item (the
  // channels-last copy of Xq into memory the object owns, and the packing of
  // W unless set_packed_weights() gave it) before any work item. Safe to call
  // concurrently for different items.
  int64_t prepare_item_count() const;
  void run_prepare_item(int64_t item) const;

  // Channels-last path: W packed in panels of 16 output channels
  // (packed_weight_count() int32 values, layout fixed by W's shape and
  // channel_block()); 0 / a no-op on the planar path. A caller with a constant
  // W may pack it once and hand it over with set_packed_weights() (before the
  // prepare items; it must stay valid while items run).
  int64_t channel_block() const { return channel_block_; }
  int64_t packed_weight_count() const;
  void pack_weights(int32_t* packed) const;
  void set_packed_weights(const int32_t* packed);

  // Computes the output channels of one weight group for one tile of pixels
  // of one image. Safe to call concurrently with different scratch objects.
  void run_work_item(int64_t item, DeformConvInt8Scratch& scratch) const;
  void run_all();

 private:
  void run_planar_item(int64_t image, int64_t g, int64_t first_pixel, int64_t pixels,
                       DeformConvInt8Scratch& scratch) const;
  void run_channels_last_item(int64_t image, int64_t g, int64_t first_pixel, int64_t pixels,
                              DeformConvInt8Scratch& scratch) const;
  int64_t copy_item_count() const;
  // Writes the lanes of output-channel panel `panel` of every group and block.
  void pack_weight_panel(int64_t panel, int32_t* packed) const;
  // Y (or Yq when y_scale > 0) of output channel o, pixels [first_pixel, first_pixel + pixels) of
  // one image, from the exact sums sums[p * step].
  void write_output(int64_t o, int64_t image, int64_t first_pixel, int64_t pixels, const int32_t* sums,
                    int64_t step) const;

  DeformConvAttributes attributes_;
  DeformConvShape shape_;
  DeformConvInt8Tensors tensors_;
  int64_t kernel_area_ = 0;
  int64_t in_channels_per_group_ = 0;
  int64_t out_channels_per_group_ = 0;
  int64_t channels_per_offset_group_ = 0;
  int64_t out_pixels_ = 0;
  int64_t tile_pixels_ = 0;
  int64_t tiles_per_image_ = 0;
  int64_t pair_count_ = 0;                // ceil(C/group * kh*kw / 2)
  std::vector<int32_t> weight_pairs_;     // Planar: [M][pair_count] (cpu::pack_int16_pair)
  const cpu::KernelSet* kernels_ = nullptr;
  const cpu::Int8KernelSet* int8_kernels_ = nullptr;
  bool channels_last_ = false;
  int64_t channel_block_ = 0;  // Channels-last: input channels per gathered block (a multiple of 8)
  int64_t panels_ = 0;         // Channels-last: ceil(M/group / 16)
  // Channels-last: W in pairs of rows, [group][channel block][panel][pair][16 lanes],
  // rows of a block in the order (tap, channel) (cpu::pack_int16_pair): given by
  // set_packed_weights(), or packed by prepare items into own_packed_weights_.
  const int32_t* packed_weights_ = nullptr;
  std::unique_ptr<int32_t[]> own_packed_weights_;
  std::unique_ptr<int8_t[]> input_channels_last_;  // [N][H*W][C], filled by the prepare items
};

}  // namespace dcn_deploy
