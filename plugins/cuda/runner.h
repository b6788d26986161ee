// C++ entry of the CUDA kernels: a problem validated once, then planned and
// launched (or emulated on the CPU).
//
// Two callers build a Problem, each validating once: the C API (c_api.cu)
// from DcnDeformConvProblem with infer_shape_from_sizes, and the TensorRT
// plugin from the attributes and the shape it has already checked with
// infer_shape. Nothing below re-validates the attributes or the shape; what
// remains are the launch limits of the kernels (DCN_STATUS_UNSUPPORTED), the
// algorithm and split_k choices, and the buffers.
//
// Plain C++ (no CUDA types), so host-compiled code such as the TensorRT
// plugin can include it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/params.h"
#include "cuda/deform_conv_cuda.h"

namespace dcn_deploy::cuda {

// Node name in messages: the C API has no ONNX node name.
constexpr const char* kCallerName = "dcn_deform_conv_cuda";

struct Problem {
  DeformConvAttributes attributes;  // validated by the core
  DeformConvShape shape;            // from infer_shape / infer_shape_from_sizes (and check_int8_shape for INT8)
  DcnElementType data_type = DCN_FLOAT32;    // X, W, B, Y (DCN_INT8: X, W)
  DcnElementType offset_type = DCN_FLOAT32;  // offset, mask
  DcnAlgorithm algorithm = DCN_ALGORITHM_AUTO;
  int32_t split_k = 0;  // 0: automatic
  float y_scale = 0.0f;  // DCN_INT8 only: > 0 for int8 Yq
  TensorLayout layout;   // of X and Y, checked by the core (check_layout)
};

// The launch the problem gets on the current device, or in the emulator
// (planned for an H100). Returns a DcnStatus; `message` is set on failure.
int plan(const Problem& problem, bool emulated, DcnLaunchInfo* info, std::string* message);

// Whether the float16 tensor-core kernel (the float16 kernel that reads
// channels-last X; it has no fallback) can run a node with these attributes:
// on the current device, or, with no device (an ahead-of-time build), on every
// compiled target down to sm_75 (64 KiB of shared memory per block, Turing's).
bool float_channels_last_fits(int64_t offset_group_taps, int64_t out_channels_per_group);

// Bytes of device workspace (0 unless the channels-last tensor-core kernel runs).
size_t workspace_bytes(const Problem& problem);

// Plans for the current device and launches on `stream` (a cudaStream_t).
// `buffers` must not be NULL; its pointers are checked.
int run(const Problem& problem, const DcnDeformConvBuffers* buffers, void* workspace, void* stream,
        std::string* message);

// Runs the same kernel code on the CPU with host pointers (`buffers` not NULL).
int emulate(const Problem& problem, const DcnDeformConvBuffers* buffers, std::string* message);

}  // namespace dcn_deploy::cuda
