// Float32 CPU forward pass of deformable convolution.
//
// The output of each image is split into tiles of consecutive output pixels.
// One (image, tile) pair is a work item: it computes every output channel of
// those pixels and shares nothing mutable with other work items, so a caller
// may run work items concurrently on any thread pool (the ONNX Runtime adapter
// uses ORT's intra-op pool).
//
// Per work item: the bilinear corners of every (offset group, tap, pixel) are
// computed once with the mask folded into the weights; then, per weight group
// and per block of input channels, the deformed columns of the tile are
// gathered into packed panels that fit in L2 and multiplied by the weight
// block into the output tile (register-blocked 6 x 16 GEMM micro-kernel,
// float32 accumulation). The inner loops come in a portable and an AVX2+FMA
// version (cpu/kernels/float_kernels.h), picked at run time.
//
// Fast path: when the input X holds no Inf/NaN and H, W >= 2, every sample
// reads one in-plane 2x2 block (two 8-byte loads per row), corners outside the
// plane carried with weight 0. Otherwise the exact per-corner path runs (an
// outside corner is never read), which keeps torchvision's result where X has
// Inf/NaN next to the border.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "cpu/kernels/float_kernels.h"
#include "core/math.h"
#include "core/params.h"

namespace dcn_deploy {

// Output pixels per work item when any tile size works: `out_pixels` cut into
// nearly equal tiles of at most `max_tile`, their number chosen for the
// shortest estimated time of work_units * tiles items on 2 and 4 threads (on
// one thread when min_work_items <= 1: then the largest tile). A tile's GEMM
// runs in groups of `micro_pixels` pixels, a partial group costing at least
// `partial_group_pixels`. Used by the channels-last float path and by the
// INT8 kernel.
int64_t balanced_tile_pixels(int64_t out_pixels, int64_t work_units, int64_t min_work_items, int64_t max_tile,
                             int64_t micro_pixels = 1, int64_t partial_group_pixels = 0);

// The channels-last copy of an input as prepare items: pixels [first, end)
// of one image each, in chunks of kCopyChunkPixels (shared by the float and
// the INT8 kernel).
constexpr int64_t kCopyChunkPixels = 256;
struct CopyChunk {
  int64_t image, first, end;
};
inline int64_t copy_chunk_count(int64_t batch, int64_t plane_size) {
  return batch * ((plane_size + kCopyChunkPixels - 1) / kCopyChunkPixels);
}
inline CopyChunk copy_chunk(int64_t item, int64_t plane_size) {
  const int64_t chunks = (plane_size + kCopyChunkPixels - 1) / kCopyChunkPixels;
  const int64_t first = (item % chunks) * kCopyChunkPixels;
  return {item / chunks, first, first + kCopyChunkPixels < plane_size ? first + kCopyChunkPixels : plane_size};
}

// Tuning and test switches of DeformConvCpu.
struct DeformConvCpuOptions {
  // Asks for tiles small enough to give at least this many work items (to keep
  // a thread pool busy on small inputs), as far as the minimum tile allows.
  int64_t min_work_items = 1;
  // The inner loops; nullptr: cpu::cpu_kernels() (AVX2+FMA where available).
  const cpu::KernelSet* kernels = nullptr;
  // Whether X is known to be free of Inf/NaN. kUnknown: the constructor scans
  // X. kCheckWhilePreparing: where the channels-last path applies, the
  // prepare items check X while they copy it (one pass over X instead of two,
  // and in parallel); the caller then must run every prepare item and call
  // finish_prepare() before any work item (without a workspace, finish_prepare()
  // scans X itself). Elsewhere it is kUnknown.
  enum class Finite { kUnknown, kYes, kNo, kCheckWhilePreparing };
  Finite input_finite = Finite::kUnknown;
};

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
  // Corners of every (offset group, tap), weights with the mask folded in.
  // Fast path: [offset_group * kh*kw][tile] top-left indices and
  // [offset_group * kh*kw][4 * tile] weights (cpu::pair_weight_slot order).
  // Exact path: [offset_group * kh*kw][4 corners][tile] indices and weights.
  std::vector<int32_t> corner_index;
  std::vector<float> corner_weight;
  std::vector<int32_t> pixel_origin;  // [2][tile]: oy * stride - pad, ox * stride - pad
  std::vector<float> columns;  // Column panels of one channel block (cpu::panel_stride), or pixel-major rows.
  std::vector<float> accumulator;  // Channels-last path: [M/group / 16][tile][16] sums.
};

class DeformConvCpu {
 public:
  // `attributes` and `shape` must come from a successful infer_shape().
  // `min_work_items` asks for tiles small enough to give at least that many
  // work items (to keep a thread pool busy on small inputs), as far as the
  // minimum tile of 32 pixels allows.
  DeformConvCpu(const DeformConvAttributes& attributes, const DeformConvShape& shape,
                const DeformConvTensors& tensors, int64_t min_work_items = 1);
  DeformConvCpu(const DeformConvAttributes& attributes, const DeformConvShape& shape,
                const DeformConvTensors& tensors, const DeformConvCpuOptions& options);

  int64_t work_item_count() const { return shape_.batch * tiles_per_image_; }
  int64_t tile_pixels() const { return tile_pixels_; }
  // Input channels per gathered column block.
  int64_t channel_block() const { return channel_block_; }
  // True when the fast 2x2-block path runs (X finite, H, W >= 2); with
  // kCheckWhilePreparing settled only by finish_prepare().
  bool uses_pair_corners() const { return pair_corners_; }
  const char* kernel_name() const { return kernels_->name; }

  // Computes output pixels of one (image, tile) work item, 0 <= item < work_item_count().
  // Safe to call concurrently for different items with different scratch objects.
  // Throws std::bad_alloc only if the scratch cannot be allocated.
  void run_work_item(int64_t item, DeformConvCpuScratch& scratch) const;

  // Channels-last fast path (X finite, C/group and C/offset_group multiples of
  // 8, AVX2 kernels): the samples are gathered pixel-major from a
  // channels-last copy of X and multiplied with weights packed in panels of
  // 16 output channels (packed_weight_floats() floats, layout fixed by the
  // shape and channel_block()). A caller that wants the path hands over
  // workspace_floats() floats with set_workspace() and runs every prepare
  // item (copies X channels-last, packs the weights unless set_packed_weights()
  // gave them) before any work item; without a workspace the planar gather
  // runs. workspace_floats() is 0 when the path does not apply.
  int64_t packed_weight_floats() const;
  // Packs the weights of output-channel panel `panel` of every group (0 <=
  // panel < packed_panel_count()) into `packed` (packed_weight_floats() floats).
  int64_t packed_panel_count() const;
  void pack_weight_panel(int64_t panel, float* packed) const;
  // Already packed weights (e.g. cached for a constant W); call before
  // workspace_floats() / set_workspace(). Must stay valid while items run.
  void set_packed_weights(const float* packed) { packed_weights_ = channels_last_possible_ ? packed : nullptr; }
  int64_t workspace_floats() const;
  void set_workspace(float* workspace);
  int64_t prepare_item_count() const;
  // Safe to call concurrently for different items.
  void run_prepare_item(int64_t item) const;
  // After every prepare item, before any work item: with
  // kCheckWhilePreparing, falls back to the exact per-corner path (planar,
  // no workspace) when the copy met an Inf or NaN (without a workspace it
  // scans X itself). No-op otherwise.
  void finish_prepare();
  bool uses_channels_last() const { return channels_last_ != nullptr; }

  // Runs every prepare and work item on the calling thread (with its own
  // workspace when none was set).
  void run_all();

 private:
  void compute_corners(int64_t image, int64_t first_pixel, int64_t pixel_count, int64_t padded_pixels,
                       int32_t* corner_index, float* corner_weight, int32_t* pixel_origin) const;
  void run_channels_last_item(int64_t image, int64_t first_pixel, int64_t pixel_count, int64_t padded_pixels,
                              DeformConvCpuScratch& scratch) const;
  int64_t copy_item_count() const;
  int64_t input_floats() const { return shape_.batch * shape_.in_channels * shape_.in_height * shape_.in_width; }
  void gather_columns(int64_t image, int64_t first_channel, int64_t channel_count, int64_t padded_pixels,
                      const int32_t* corner_index, const float* corner_weight, float* columns) const;

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
  int64_t corner_stride_ = 0;            // tile_pixels_ rounded up to a panel: stride of the per-tap corner lists
  int64_t tiles_per_image_ = 0;
  int64_t channel_block_ = 0;            // input channels per column block
  const cpu::KernelSet* kernels_ = nullptr;
  bool pair_corners_ = false;
  bool channels_last_possible_ = false;
  bool finite_pending_ = false;  // kCheckWhilePreparing: pair_corners_ assumed until finish_prepare().
  mutable std::atomic<bool> non_finite_seen_{false};  // Set by a prepare item that copied an Inf/NaN.
  float* channels_last_ = nullptr;  // [N][H*W][C] copy of X, or nullptr
  const float* packed_weights_ = nullptr;  // Given by set_packed_weights().
  float* packed_workspace_ = nullptr;      // Packed by prepare items (inside the workspace).
};

}  // namespace dcn_deploy
