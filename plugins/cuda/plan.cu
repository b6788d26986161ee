#include "cuda/plan.h"

#include <algorithm>
#include <limits>
#include <string>

#include "cuda/kernels/int8.cuh"

namespace dcn_deploy::cuda {
namespace {

using namespace cuda_mma;

// Sizes a launch of deform_conv_mma_kernel (float16 or INT8): tile grid,
// split-K and shared memory, for blocks of tile_m x tile_n outputs.
int plan_block_grid(const Problem& p, const DeviceLimits& device, int tile_m, int tile_n,
                    size_t shared, LaunchPlan* plan, std::string* message) {
  const TileProblem& t = plan->problem;
  const int32_t offset_group_taps = t.offset_group * t.kernel_area;
  const int64_t pixel_tiles = ceil_div(t.out_pixels, tile_n);
  const int64_t channel_tiles = ceil_div(t.out_channels_per_group, tile_m);
  const int64_t image_groups = static_cast<int64_t>(plan->grid.z);
  const int64_t slices = ceil_div(t.reduction, kTileK);
  int64_t splits = 1;
  if (p.split_k > 0) {
    splits = p.split_k;
    if (splits > 1 && device.compute_capability < 90) {
      *message = node_error(kCallerName, "split_k > 1 needs thread-block clusters (compute capability 9.0)");
      return DCN_STATUS_UNSUPPORTED;
    }
  } else if (device.compute_capability >= 90 && image_groups > 0) {
    // Split K when the tile grid gives fewer than two blocks per SM (the
    // kernel is latency bound: it needs resident warps); each split keeps at
    // least 4 K slices so the partial sums are worth their reduction.
    const int64_t blocks = pixel_tiles * channel_tiles * image_groups;
    const int64_t wanted = 2 * static_cast<int64_t>(device.sm_count);
    if (blocks < wanted) {
      splits = std::min<int64_t>({kMaxSplits, ceil_div(wanted, blocks), std::max<int64_t>(1, slices / 4)});
    }
  }
  const int64_t slices_per_split = ceil_div(slices, splits);
  if (p.split_k == 0) splits = ceil_div(slices, slices_per_split);  // no empty split
  if (pixel_tiles * splits > std::numeric_limits<int32_t>::max() || channel_tiles > kMaxGridYZ) {
    *message = node_error(kCallerName, "problem too large for one tensor-core launch: " + std::to_string(pixel_tiles) +
                                           " pixel tiles, " + std::to_string(channel_tiles) + " channel tiles");
    return DCN_STATUS_UNSUPPORTED;
  }
  plan->tile_m = tile_m;
  plan->mma.base = t;
  plan->mma.offset_group_taps = offset_group_taps;
  plan->mma.splits = static_cast<int32_t>(splits);
  plan->mma.k_per_split = static_cast<int32_t>(slices_per_split * kTileK);
  plan->shared_bytes = shared;
  if (image_groups > 0) {
    plan->grid = dim3(static_cast<unsigned>(pixel_tiles * splits), static_cast<unsigned>(channel_tiles),
                      static_cast<unsigned>(image_groups));
  }
  return DCN_STATUS_OK;
}

// INT8 data: the block kernel with int8 slices; integer tensor cores (WMMA
// s8, sm_72+) or dp4a (DCN_ALGORITHM_SIMT, and older devices).
int plan_int8(const Problem& p, const DeviceLimits& device, LaunchPlan* plan, std::string* message) {
  const TileProblem& t = plan->problem;
  if (p.algorithm == DCN_ALGORITHM_TENSOR_CORE_NHWC) {
    *message = node_error(kCallerName, "DCN_ALGORITHM_TENSOR_CORE_NHWC is a float16 kernel; DCN_INT8 data runs "
                                       "DCN_ALGORITHM_TENSOR_CORE or DCN_ALGORITHM_SIMT");
    return DCN_STATUS_UNSUPPORTED;
  }
  const bool imma = device.compute_capability >= 72;
  if (p.algorithm == DCN_ALGORITHM_TENSOR_CORE && !imma) {
    *message = node_error(kCallerName, "the INT8 tensor-core kernel needs compute capability 7.2 or newer, the device "
                                       "has " + std::to_string(device.compute_capability / 10) + "." +
                                           std::to_string(device.compute_capability % 10));
    return DCN_STATUS_UNSUPPORTED;
  }
  // The smallest tile that holds every output channel of a group (as for
  // float16), or a taller one (fewer pixels, a smaller corner table) when
  // the table does not fit: there is no table-free INT8 kernel to fall back to.
  const int32_t offset_group_taps = t.offset_group * t.kernel_area;
  const int wanted = t.out_channels_per_group <= 128 ? 128 : t.out_channels_per_group <= 256 ? 256 : 512;
  const int tiles[3] = {128, 256, 512};
  const size_t shared_of[3] = {Int8Config<128>::shared_bytes(offset_group_taps),
                               Int8Config<256>::shared_bytes(offset_group_taps),
                               Int8Config<512>::shared_bytes(offset_group_taps)};
  const int tile_n_of[3] = {Int8Config<128>::kTileN, Int8Config<256>::kTileN, Int8Config<512>::kTileN};
  for (int i = 0; i < 3; ++i) {
    if (tiles[i] < wanted || shared_of[i] > device.max_shared_per_block) continue;
    plan->algorithm = imma && p.algorithm != DCN_ALGORITHM_SIMT ? DCN_ALGORITHM_TENSOR_CORE : DCN_ALGORITHM_SIMT;
    plan->block_kernel = true;
    return plan_block_grid(p, device, tiles[i], tile_n_of[i], shared_of[i], plan, message);
  }
  *message = node_error(kCallerName, "the INT8 kernel's corner table of offset_group*kh*kw = " +
                                         std::to_string(offset_group_taps) + " taps needs " +
                                         std::to_string(shared_of[2]) + " bytes of shared memory, the device allows " +
                                         std::to_string(device.max_shared_per_block));
  return DCN_STATUS_UNSUPPORTED;
}

}  // namespace

int plan_tiles(const Problem& problem, LaunchPlan* plan, std::string* message) {
  const DeformConvAttributes& attributes = problem.attributes;
  const DeformConvShape& shape = problem.shape;
  const int64_t int32_max = std::numeric_limits<int32_t>::max();
  const int64_t out_pixels = shape.out_height * shape.out_width;
  const int64_t channels_per_group = shape.in_channels / attributes.group;
  const int64_t reduction = channels_per_group * shape.kernel_h * shape.kernel_w;
  const int64_t out_channels_per_group = shape.out_channels / attributes.group;
  const int64_t image_groups = shape.batch * attributes.group;
  const int64_t channel_tiles = ceil_div(out_channels_per_group, cuda_tile::kTileM);
  if (out_pixels > int32_max - cuda_tile::kTileN || reduction > int32_max - cuda_tile::kTileK ||
      shape.in_channels > int32_max || shape.out_channels > int32_max) {
    *message = node_error(kCallerName, "problem too large for this kernel: Ho*Wo = " + std::to_string(out_pixels) +
                                           ", C/group*kh*kw = " + std::to_string(reduction) +
                                           " (each must stay below 2^31 - 64)");
    return DCN_STATUS_UNSUPPORTED;
  }
  if (image_groups > kMaxGridYZ || channel_tiles > kMaxGridYZ) {
    *message = node_error(kCallerName, "problem too large for one launch: N*group = " + std::to_string(image_groups) +
                                           " and ceil((M/group)/64) = " + std::to_string(channel_tiles) +
                                           " must each be <= 65535");
    return DCN_STATUS_UNSUPPORTED;
  }
  if (shape.batch == 0) {
    plan->grid = dim3(0, 0, 0);  // Nothing to compute; the caller skips the launch.
  } else {
    plan->grid = dim3(static_cast<unsigned>(ceil_div(out_pixels, cuda_tile::kTileN)),
                      static_cast<unsigned>(channel_tiles), static_cast<unsigned>(image_groups));
  }

  TileProblem& t = plan->problem;
  t.in_channels = static_cast<int32_t>(shape.in_channels);
  t.height = static_cast<int32_t>(shape.in_height);
  t.width = static_cast<int32_t>(shape.in_width);
  t.out_channels = static_cast<int32_t>(shape.out_channels);
  t.out_height = static_cast<int32_t>(shape.out_height);
  t.out_width = static_cast<int32_t>(shape.out_width);
  t.out_pixels = static_cast<int32_t>(out_pixels);
  t.kernel_w = static_cast<int32_t>(shape.kernel_w);
  t.kernel_area = static_cast<int32_t>(shape.kernel_h * shape.kernel_w);
  t.stride_h = static_cast<int32_t>(attributes.stride[0]);
  t.stride_w = static_cast<int32_t>(attributes.stride[1]);
  t.pad_top = static_cast<int32_t>(attributes.pads[0]);
  t.pad_left = static_cast<int32_t>(attributes.pads[1]);
  t.dilation_h = static_cast<int32_t>(attributes.dilation[0]);
  t.dilation_w = static_cast<int32_t>(attributes.dilation[1]);
  t.group = static_cast<int32_t>(attributes.group);
  t.channels_per_group = static_cast<int32_t>(channels_per_group);
  t.out_channels_per_group = static_cast<int32_t>(out_channels_per_group);
  t.offset_group = static_cast<int32_t>(attributes.offset_group);
  t.channels_per_offset_group = static_cast<int32_t>(shape.in_channels / attributes.offset_group);
  t.reduction = static_cast<int32_t>(reduction);
  t.has_mask = shape.has_mask;
  t.has_bias = shape.has_bias;
  t.tap_channels = t.channels_per_group;
  const int64_t input_padded = padded_channels(problem.layout, shape.in_channels);
  const int64_t output_padded = padded_channels(problem.layout, shape.out_channels);
  const int64_t input_block = channel_block(problem.layout, shape.in_channels);
  // The block kernels scale corner indices by the block (int32) and, for 8-channel gathers, pad K.
  if (input_block * shape.in_height * shape.in_width > int32_max || output_padded > int32_max ||
      (ceil_div(channels_per_group, cuda_mma::kChannelVector) * cuda_mma::kChannelVector) * shape.kernel_h *
              shape.kernel_w > int32_max - cuda_tile::kTileK) {
    *message = node_error(kCallerName, "problem too large for the " + describe_layout(problem.layout) +
                                           " layout: H*W*(channels per block) must stay below 2^31");
    return DCN_STATUS_UNSUPPORTED;
  }
  t.input_padded = static_cast<int32_t>(input_padded);
  t.input_block = static_cast<int32_t>(input_block);
  t.output_padded = static_cast<int32_t>(output_padded);
  t.output_block = static_cast<int32_t>(channel_block(problem.layout, shape.out_channels));
  plan->input_elements = static_cast<size_t>(shape.batch * shape.in_channels * shape.in_height * shape.in_width);
  plan->weight_elements = static_cast<size_t>(shape.out_channels * reduction);
  plan->algorithm = DCN_ALGORITHM_SIMT;
  return DCN_STATUS_OK;
}

namespace {

// The smallest tile that holds every output channel of a group (up to 512),
// so each sample is computed once per block.
int tensor_core_tile_m(int64_t out_channels_per_group) {
  return out_channels_per_group <= 128 ? 128 : out_channels_per_group <= 256 ? 256 : 512;
}

size_t tensor_core_shared_bytes(int64_t offset_group_taps, int64_t out_channels_per_group) {
  const auto taps = static_cast<int32_t>(offset_group_taps);
  switch (tensor_core_tile_m(out_channels_per_group)) {
    case 128: return Config<128>::shared_bytes(taps);
    case 256: return Config<256>::shared_bytes(taps);
    default: return Config<512>::shared_bytes(taps);
  }
}

}  // namespace

bool float_channels_last_fits(int64_t offset_group_taps, int64_t out_channels_per_group) {
  // sm_75 (Turing), the smallest target TensorRT-RTX builds for: 64 KiB per block. A bound of a
  // newer target (99 KiB) would offer formats whose enqueue then fails on Turing. The smallest
  // tile needs 66 KiB (its epilogue), so ahead of time this is never offered.
  constexpr size_t kAheadOfTimeSharedPerBlock = 64 * 1024;
  DeviceLimits device{};
  std::string ignored;
  const bool on_device = query_device(&device, &ignored) == DCN_STATUS_OK;
  if (on_device && device.compute_capability < 70) return false;
  const size_t limit = on_device ? device.max_shared_per_block : kAheadOfTimeSharedPerBlock;
  return tensor_core_shared_bytes(offset_group_taps, out_channels_per_group) <= limit;
}

int plan_algorithm(const Problem& p, const DeviceLimits& device, LaunchPlan* plan,
                   std::string* message, bool input_aligned) {
  const TileProblem& t = plan->problem;
  if (p.algorithm != DCN_ALGORITHM_AUTO && p.algorithm != DCN_ALGORITHM_SIMT &&
      p.algorithm != DCN_ALGORITHM_TENSOR_CORE && p.algorithm != DCN_ALGORITHM_TENSOR_CORE_NHWC) {
    *message = node_error(kCallerName,
                          "algorithm must be DCN_ALGORITHM_AUTO (0), SIMT (1), TENSOR_CORE (2) or TENSOR_CORE_NHWC (3), "
                          "got " + std::to_string(static_cast<int>(p.algorithm)));
    return DCN_STATUS_INVALID_ARGUMENT;
  }
  const bool tensor_core_asked = p.algorithm == DCN_ALGORITHM_TENSOR_CORE || p.algorithm == DCN_ALGORITHM_TENSOR_CORE_NHWC;
  if (p.split_k < 0 || p.split_k > kMaxSplits) {
    *message = node_error(kCallerName, "split_k must be 0 (automatic) or 1.." + std::to_string(kMaxSplits) +
                                           ", got " + std::to_string(p.split_k));
    return DCN_STATUS_INVALID_ARGUMENT;
  }
  const bool planar = p.layout.kind == ChannelLayout::kPlanar;
  if (p.data_type == DCN_INT8) return plan_int8(p, device, plan, message);
  const int32_t offset_group_taps = t.offset_group * t.kernel_area;
  const int tile_m = tensor_core_tile_m(t.out_channels_per_group);
  const int tile_n = tile_m == 128 ? Config<128>::kTileN : tile_m == 256 ? Config<256>::kTileN : Config<512>::kTileN;
  const size_t shared = tensor_core_shared_bytes(offset_group_taps, t.out_channels_per_group);
  std::string why_not;
  if (p.data_type != DCN_FLOAT16) {
    why_not = "it needs float16 X/W/B/Y";
  } else if (device.compute_capability < 70) {
    why_not = "it needs compute capability 7.0 or newer";
  } else if (shared > device.max_shared_per_block) {
    why_not = "its corner table of offset_group*kh*kw = " + std::to_string(offset_group_taps) +
              " taps needs " + std::to_string(shared) + " bytes of shared memory, the device allows " +
              std::to_string(device.max_shared_per_block);
  }
  if (!planar && why_not.empty() && p.algorithm == DCN_ALGORITHM_SIMT) {
    why_not = "DCN_ALGORITHM_SIMT reads planar X only";
  }
  if (!why_not.empty() && !planar) {
    *message = node_error(kCallerName, "the " + describe_layout(p.layout) + " layout needs the tensor-core kernel "
                                       "(float16) or DCN_INT8 data, and the tensor-core kernel cannot run this "
                                       "problem: " + why_not);
    return DCN_STATUS_UNSUPPORTED;
  }
  if (!why_not.empty()) {
    if (tensor_core_asked) {
      *message = node_error(kCallerName, "the tensor-core kernel cannot run this problem: " + why_not);
      return DCN_STATUS_UNSUPPORTED;
    }
    if (p.split_k > 1) {
      *message = node_error(kCallerName, "split_k > 1 needs the tensor-core kernel, which cannot run this problem: " +
                                             why_not);
      return DCN_STATUS_UNSUPPORTED;
    }
    return DCN_STATUS_OK;  // SIMT
  }
  if (p.algorithm == DCN_ALGORITHM_SIMT) {
    if (p.split_k > 1) {
      *message = node_error(kCallerName, "split_k > 1 needs the tensor-core kernel, not DCN_ALGORITHM_SIMT");
      return DCN_STATUS_UNSUPPORTED;
    }
    return DCN_STATUS_OK;
  }

  using cuda_mma::Gather;
  TileProblem& tp = plan->problem;
  Gather gather = Gather::kPlanar;
  if (planar) {
    const bool channels_last = channels_last_fits(t) && (p.algorithm == DCN_ALGORITHM_TENSOR_CORE_NHWC ||
                                                         (p.algorithm == DCN_ALGORITHM_AUTO && kAutoChannelsLast));
    if (p.algorithm == DCN_ALGORITHM_TENSOR_CORE_NHWC && !channels_last) {
      *message = node_error(kCallerName, "the channels-last tensor-core kernel needs C/group and C/offset_group to be "
                                         "multiples of 8, got C/group = " + std::to_string(t.channels_per_group) +
                                             " and C/offset_group = " + std::to_string(t.channels_per_offset_group));
      return DCN_STATUS_UNSUPPORTED;
    }
    if (channels_last) {
      if (static_cast<int64_t>(t.in_channels) * t.height * t.width > std::numeric_limits<int32_t>::max()) {
        *message = node_error(kCallerName, "the channels-last tensor-core kernel needs H*W*C below 2^31");
        return DCN_STATUS_UNSUPPORTED;
      }
      gather = Gather::kWorkspaceNhwc;
      tp.input_padded = tp.in_channels;  // the kernel reads the workspace's NHWC copy
      tp.input_block = tp.in_channels;
    }
  } else if (p.algorithm != DCN_ALGORITHM_TENSOR_CORE) {
    // X in a layout: 8-channel gathers in place where the vectors are whole and aligned
    // (a C-API caller may pass a view that starts inside a vector: then one channel per gather).
    const int v = cuda_mma::kChannelVector;
    const bool fits = t.input_block % v == 0 && t.input_padded % v == 0 &&
                      (t.group == 1 || t.channels_per_group % v == 0) &&
                      (t.offset_group == 1 || t.channels_per_offset_group % v == 0);
    if (p.algorithm == DCN_ALGORITHM_TENSOR_CORE_NHWC && fits && !input_aligned) {
      *message = node_error(kCallerName, "the channels-last tensor-core kernel reads X in the " +
                                             describe_layout(p.layout) + " layout in 16-byte vectors: X's address "
                                             "must be a multiple of 16 bytes");
      return DCN_STATUS_UNSUPPORTED;
    }
    if (p.algorithm == DCN_ALGORITHM_TENSOR_CORE_NHWC && !fits) {
      *message = node_error(kCallerName, "the channels-last tensor-core kernel reads X in the " +
                                             describe_layout(p.layout) + " layout in 16-byte vectors: it needs blocks "
                                             "of a multiple of 8 channels (C padded to 8), and C/group (if group > 1) "
                                             "and C/offset_group (if offset_group > 1) multiples of 8; got C = " +
                                             std::to_string(t.in_channels) + ", group = " + std::to_string(t.group) +
                                             ", offset_group = " + std::to_string(t.offset_group));
      return DCN_STATUS_UNSUPPORTED;
    }
    if (fits && input_aligned) {
      gather = Gather::kNhwc;
      tp.tap_channels = static_cast<int32_t>(ceil_div(t.channels_per_group, v) * v);
      tp.reduction = tp.tap_channels * t.kernel_area;
    }
  }
  plan->gather = gather;
  plan->algorithm = gather == Gather::kPlanar ? DCN_ALGORITHM_TENSOR_CORE : DCN_ALGORITHM_TENSOR_CORE_NHWC;
  plan->block_kernel = true;
  return plan_block_grid(p, device, tile_m, tile_n, shared, plan, message);
}


}  // namespace dcn_deploy::cuda
