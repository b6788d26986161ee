// Float32 CPU forward pass of deformable convolution.
//
// The output of each image is split into tiles of consecutive output pixels.
// One (image, tile) pair is a work item: it computes every output channel of
// those pixels and shares nothing mutable with other work items, so a caller
// may run work items concurrently on any thread pool (the ONNX Runtime adapter
// uses ORT's intra-op pool).
//
// Per work item: the bilinear corners of every (offset group, tap, pixel) are
// computed once with the mask folded into the weights; then, per weight
// group, a column tile [C/group * kh * kw, tile] is gathered and multiplied by
// the weight block into the output tile.
#pragma once

#include <cstdint>
#include <vector>

#include "deform_conv_math.h"
#include "deform_conv_params.h"

namespace dcn_deploy {

// Raw tensor pointers in ONNX layout (all contiguous, row-major).
struct DeformConvTensors {
  const float* input = nullptr;   // X [N, C, H, W]
  const float* weight = nullptr;  // W [M, C/group, kh, kw]
  const float* offset = nullptr;  // [N, 2*offset_group*kh*kw, Ho, Wo]
  const float* bias = nullptr;    // [M]; required when shape.has_bias
  const float* mask = nullptr;    // [N, offset_group*kh*kw, Ho, Wo]; required when shape.has_mask
  float* output = nullptr;        // Y [N, M, Ho, Wo]
};

// Per-thread working memory of one work item. Reusing one object across work
// items avoids reallocation; it never grows past the size of the largest tile.
struct DeformConvCpuScratch {
  // Corners of every (offset group, tap) in structure-of-arrays form,
  // [offset_group * kh*kw][4 corners][tile], so the gather loop reads each
  // array contiguously. Weights have the mask folded in.
  std::vector<int32_t> corner_index;
  std::vector<float> corner_weight;
  std::vector<float> columns;  // [C/group * kh*kw][tile]
};

class DeformConvCpu {
 public:
  // `attributes` and `shape` must come from a successful infer_shape().
  // `min_work_items` asks for tiles small enough to give at least that many
  // work items (to keep a thread pool busy on small inputs), as far as the
  // minimum tile of 32 pixels allows.
  DeformConvCpu(const DeformConvAttributes& attributes, const DeformConvShape& shape,
                const DeformConvTensors& tensors, int64_t min_work_items = 1);

  int64_t work_item_count() const { return shape_.batch * tiles_per_image_; }
  int64_t tile_pixels() const { return tile_pixels_; }

  // Computes output pixels of one (image, tile) work item, 0 <= item < work_item_count().
  // Safe to call concurrently for different items with different scratch objects.
  // Throws std::bad_alloc only if the scratch cannot be allocated.
  void run_work_item(int64_t item, DeformConvCpuScratch& scratch) const;

  // Runs every work item on the calling thread.
  void run_all() const;

 private:
  void compute_corners(int64_t image, int64_t first_pixel, int64_t pixel_count, int32_t* corner_index,
                       float* corner_weight) const;
  void gather_columns(int64_t image, int64_t weight_group, int64_t pixel_count, const int32_t* corner_index,
                      const float* corner_weight, float* columns) const;

  DeformConvAttributes attributes_;
  DeformConvShape shape_;
  DeformConvTensors tensors_;
  int64_t kernel_area_ = 0;              // kh * kw
  int64_t in_channels_per_group_ = 0;    // C / group
  int64_t out_channels_per_group_ = 0;   // M / group
  int64_t channels_per_offset_group_ = 0;  // C / offset_group
  int64_t column_rows_ = 0;              // C/group * kh * kw
  int64_t out_pixels_ = 0;               // Ho * Wo
  int64_t tile_pixels_ = 0;              // output pixels per work item (last tile may be shorter)
  int64_t tiles_per_image_ = 0;
};

}  // namespace dcn_deploy
