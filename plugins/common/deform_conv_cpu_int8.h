// INT8 CPU forward pass of deformable convolution (definition: dcn_deploy/int8.py).
//
// X and W are int8 (symmetric, zero point 0); offset, mask and bias float32.
// Per work item (image, weight group, tile of output pixels): the bilinear
// corners of every (tap, pixel) are computed once with the mask folded into
// the weights, the requantized samples vq of every (channel, tap, pixel) are
// gathered into an int16 panel, and every output channel of the group is
// accumulated over it in exact int32; the per-channel output scale and bias
// then give float32 Y, or int8 Yq when y_scale > 0.
//
// The per-element math (int8_sample, int8_output, int8_requantize) is the
// same inline code the CUDA kernel uses, so both give the reference's bits.
#pragma once

#include <cstdint>
#include <vector>

#include "cpu/deform_conv_cpu_kernels.h"
#include "deform_conv_math.h"
#include "deform_conv_params.h"

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
  std::vector<BilinearCorners> corners;  // [offset groups of the weight group][kh*kw][tile], mask folded in
  std::vector<int16_t> samples;       // [row pairs][padded tile][2]: requantized samples, rows paired
  std::vector<int32_t> accumulator;   // [kInt8ChannelBlock][padded tile]
};

class DeformConvCpuInt8 {
 public:
  // `attributes` and `shape` must come from a successful infer_shape() and
  // check_int8_shape(); the output_scale array must hold M values.
  DeformConvCpuInt8(const DeformConvAttributes& attributes, const DeformConvShape& shape,
                    const DeformConvInt8Tensors& tensors, int64_t min_work_items = 1,
                    const cpu::KernelSet* kernels = nullptr);  // nullptr: cpu::cpu_kernels()
  const char* kernel_name() const { return kernels_->name; }

  int64_t work_item_count() const { return shape_.batch * attributes_.group * tiles_per_image_; }
  int64_t tile_pixels() const { return tile_pixels_; }

  // Computes the output channels of one weight group for one tile of pixels
  // of one image. Safe to call concurrently with different scratch objects.
  void run_work_item(int64_t item, DeformConvInt8Scratch& scratch) const;
  void run_all();

 private:
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
  std::vector<int32_t> weight_pairs_;     // [M][pair_count] (cpu::pack_int16_pair)
  const cpu::KernelSet* kernels_ = nullptr;
};

// output_scale[o] = float32(double(x_scale) * double(w_scale[o])), w_scale of
// length M or 1 (broadcast). Expects scales already checked by check_int8_scales.
std::vector<float> int8_output_scales(float x_scale, const std::vector<float>& w_scale, int64_t out_channels);

}  // namespace dcn_deploy
