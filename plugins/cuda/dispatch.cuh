// From the C API's untyped buffers and the plan to one typed instantiation
// of a kernel body: shared by the device launches (launch.cu) and the CPU
// emulator (emulate.cu) so that both pick the same instantiation.
#pragma once

#include <cuda_fp16.h>

#include "cuda/kernels/block_variants.cuh"
#include "cuda/plan.h"

namespace dcn_deploy::cuda {

template <typename T, typename TOffset>
TilePointers<T, TOffset> typed_pointers(const DcnDeformConvBuffers& b) {
  return TilePointers<T, TOffset>{static_cast<const T*>(b.input),    static_cast<const T*>(b.weight),
                                  static_cast<const TOffset*>(b.offset), static_cast<const TOffset*>(b.mask),
                                  static_cast<const T*>(b.bias),     static_cast<T*>(b.output)};
}

// Calls Body::template run<T, TOffset>(args...) for the problem's storage types.
template <typename Body, typename... Args>
auto dispatch_types(DcnElementType data_type, DcnElementType offset_type, Args&&... args) {
  if (data_type == DCN_FLOAT32) {
    if (offset_type == DCN_FLOAT32) return Body::template run<float, float>(args...);
    return Body::template run<float, __half>(args...);
  }
  if (offset_type == DCN_FLOAT32) return Body::template run<__half, float>(args...);
  return Body::template run<__half, __half>(args...);
}

// Calls Body::template run<Fp16Variant<tile_m, gather, TOffset>>(args...) for the plan's tile, gather and offset type.
template <typename Body, Gather G, typename TOffset, typename... Args>
auto dispatch_fp16_tile(const LaunchPlan& plan, Args&&... args) {
  if (plan.tile_m == 128) return Body::template run<Fp16Variant<128, G, TOffset>>(args...);
  if (plan.tile_m == 256) return Body::template run<Fp16Variant<256, G, TOffset>>(args...);
  return Body::template run<Fp16Variant<512, G, TOffset>>(args...);
}

template <typename Body, typename TOffset, typename... Args>
auto dispatch_fp16_gather(const LaunchPlan& plan, Args&&... args) {
  if (plan.gather == Gather::kWorkspaceNhwc) return dispatch_fp16_tile<Body, Gather::kWorkspaceNhwc, TOffset>(plan, args...);
  if (plan.gather == Gather::kNhwc) return dispatch_fp16_tile<Body, Gather::kNhwc, TOffset>(plan, args...);
  return dispatch_fp16_tile<Body, Gather::kPlanar, TOffset>(plan, args...);
}

template <typename Body, typename... Args>
auto dispatch_mma(const LaunchPlan& plan, DcnElementType offset_type, Args&&... args) {
  if (offset_type == DCN_FLOAT32) return dispatch_fp16_gather<Body, float>(plan, args...);
  return dispatch_fp16_gather<Body, __half>(plan, args...);
}

inline cuda_mma::Int8Pointers int8_pointers(const Problem& problem, const DcnDeformConvBuffers& b) {
  return cuda_mma::Int8Pointers{static_cast<const int8_t*>(b.input),  static_cast<const int8_t*>(b.weight),
                                static_cast<const float*>(b.offset),  static_cast<const float*>(b.mask),
                                static_cast<const float*>(b.bias),    static_cast<const float*>(b.output_scale),
                                problem.y_scale,                      b.output};
}

// Calls Body::template run<Int8Variant<tile_m, tensor cores>>(args...) for the plan.
template <typename Body, typename... Args>
auto dispatch_int8(const LaunchPlan& plan, Args&&... args) {
  const bool tensor_cores = plan.algorithm == DCN_ALGORITHM_TENSOR_CORE;
  if (plan.tile_m == 128) {
    return tensor_cores ? Body::template run<Int8Variant<128, true>>(args...)
                        : Body::template run<Int8Variant<128, false>>(args...);
  }
  if (plan.tile_m == 256) {
    return tensor_cores ? Body::template run<Int8Variant<256, true>>(args...)
                        : Body::template run<Int8Variant<256, false>>(args...);
  }
  return tensor_cores ? Body::template run<Int8Variant<512, true>>(args...)
                      : Body::template run<Int8Variant<512, false>>(args...);
}

}  // namespace dcn_deploy::cuda
