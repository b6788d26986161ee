/* Plain C entry point of the CUDA deformable-convolution kernels.
 *
 * No TensorRT, no torch, no ONNX Runtime: the TensorRT plugin, the test
 * harness (ctypes) and a future ONNX Runtime CUDA op all call this.
 *
 * Semantics are those of the DcnDeformConv node (ONNX DeformConv-19 with
 * asymmetric pads): Y = conv(bilinear samples of X at offset positions,
 * scaled by mask) + B. W, offset, mask and B are contiguous NCHW; X and Y
 * share the problem's `layout`:
 *   DCN_LAYOUT_NCHW           planar (the default, zero-initialised)
 *   DCN_LAYOUT_NHWC           [N][H][W][Cp], Cp = C rounded up to layout_vector
 *                             (1: torch.channels_last; 8: TensorRT kHWC8;
 *                             16: kHWC16)
 *   DCN_LAYOUT_NC_VECTOR_HW   [N][Cp/v][H][W][v], v = layout_vector
 *                             (4: TensorRT kCHW4; 32: kCHW32)
 * (Y with M for C). Padding channels of X never reach the result (the
 * 8-channel NHWC gathers load them and zero those lanes; one-channel
 * gathers skip them); those of Y are written as zeros. The in-place
 * 8-channel gathers also need X's address to be a multiple of 16 bytes:
 * otherwise AUTO gathers one channel at a time and TENSOR_CORE_NHWC is
 * refused (DCN_STATUS_UNSUPPORTED). Non-planar layouts run the tensor-core kernels only
 * (float16, or DCN_INT8 with either algorithm): for float16,
 * DCN_ALGORITHM_TENSOR_CORE_NHWC reads an NHWC X in place (16-byte gathers,
 * no workspace; needs Cp % 8 == 0 and 8-channel-aligned groups) and AUTO
 * takes it where it fits; DCN_ALGORITHM_TENSOR_CORE gathers one channel at
 * a time from any layout (bitwise the planar result).
 *
 * Precision: X, W, B and Y share one element type (float32 or float16),
 * offset and mask share another (float32 or float16). Whatever the storage
 * type, sampling coordinates, bilinear weights, the mask product and the
 * accumulation are float32 (no TF32, no half arithmetic).
 *
 * Workspace: none. Both kernels are implicit GEMMs that sample straight into
 * shared memory, so no column buffer exists in global memory:
 *   DCN_ALGORITHM_SIMT         float32 FMA; float32 or float16 storage.
 *   DCN_ALGORITHM_TENSOR_CORE  float16 storage only: samples rounded to
 *                              float16 once, WMMA with float32 accumulation,
 *                              split-K over a thread-block cluster (sm_90)
 *                              when the grid is small.
 *   DCN_ALGORITHM_TENSOR_CORE_NHWC  the same multiply on channels-last
 *                              gathers (one 16-byte load per corner for 8
 *                              channels): needs C/group and C/offset_group
 *                              to be multiples of 8 and a workspace holding
 *                              X in NHWC and W tap-major (no column buffer).
 * DCN_ALGORITHM_AUTO picks the tensor-core kernel for float16 whenever the
 * device and the problem allow it (its corner table must fit in shared
 * memory), else the SIMT kernel.
 *
 * INT8 (data_type DCN_INT8; definition: dcn_deploy/op/int8.py, the math in
 * core/math.h): X and W int8 (zero point 0), offset, mask and B
 * float32 (offset_type DCN_FLOAT32), and in the buffers `output_scale`, M
 * float32 values output_scale[o] = float32(double(x_scale) * double(w_scale[o]))
 * (int8_output_scales in plugins/core/int8_scales.h computes them). Y is float32
 * when problem.y_scale is 0, else int8 Yq = saturate(round_half_even(Y / y_scale)).
 * The result is bitwise that of the reference and of the CPU kernel. Why the
 * per-channel product and not x_scale and w_scale: it is the one float the
 * epilogue needs, computed once (in double) by the caller, so the kernel has
 * no double arithmetic; and its pointer keeps the problem struct fixed-size
 * whatever M is. Both algorithms run the tensor-core kernel's block tiling,
 * corner table and split-K with int8 slices and exact int32 accumulation:
 *   DCN_ALGORITHM_TENSOR_CORE  integer tensor cores (WMMA s8, sm_72+).
 *   DCN_ALGORITHM_SIMT         __dp4a on the same shared-memory slices.
 * AUTO takes the tensor cores where the device has them. No workspace; the
 * corner table must fit in shared memory (a taller tile is taken if needed).
 */
#ifndef DCN_DEPLOY_DEFORM_CONV_CUDA_H_
#define DCN_DEPLOY_DEFORM_CONV_CUDA_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define DCN_CUDA_API
#else
#define DCN_CUDA_API __attribute__((visibility("default")))
#endif

typedef enum DcnElementType {
  DCN_FLOAT32 = 0,
  DCN_FLOAT16 = 1,
  DCN_INT8 = 2, /* data_type only: X and W int8, B float32, Y float32 or int8 (y_scale) */
} DcnElementType;

typedef enum DcnAlgorithm {
  DCN_ALGORITHM_AUTO = 0,
  DCN_ALGORITHM_SIMT = 1,
  DCN_ALGORITHM_TENSOR_CORE = 2,
  DCN_ALGORITHM_TENSOR_CORE_NHWC = 3,
} DcnAlgorithm;

typedef enum DcnLayout {
  DCN_LAYOUT_NCHW = 0,
  DCN_LAYOUT_NHWC = 1,
  DCN_LAYOUT_NC_VECTOR_HW = 2,
} DcnLayout;

typedef enum DcnStatus {
  DCN_STATUS_OK = 0,
  DCN_STATUS_INVALID_ARGUMENT = 1, /* shapes, attributes, types or null pointers */
  DCN_STATUS_UNSUPPORTED = 2,      /* valid, but beyond this kernel's launch limits */
  DCN_STATUS_CUDA_ERROR = 3,       /* the launch failed (no device, bad pointer, ...) */
} DcnStatus;

/* Problem size and attributes (ONNX names in comments). */
typedef struct DcnDeformConvProblem {
  int64_t batch;                          /* N */
  int64_t in_channels;                    /* C */
  int64_t in_height, in_width;            /* H, W */
  int64_t out_channels;                   /* M */
  int64_t kernel_h, kernel_w;             /* kernel_shape */
  int64_t stride_h, stride_w;             /* strides */
  int64_t pad_top, pad_left, pad_bottom, pad_right; /* pads */
  int64_t dilation_h, dilation_w;         /* dilations */
  int64_t group;                          /* group */
  int64_t offset_group;                   /* offset_group */
  int32_t has_mask;                       /* mask input present */
  int32_t has_bias;                       /* B input present */
  DcnElementType data_type;               /* X, W, B, Y (DCN_INT8: X, W; B float32) */
  DcnElementType offset_type;             /* offset, mask */
  DcnAlgorithm algorithm;                 /* 0 (zero-initialised): automatic */
  int32_t split_k;                        /* 0: automatic; n >= 1 forces n K splits (tensor-core kernel) */
  float y_scale;                          /* DCN_INT8: 0 for float32 Y, > 0 for int8 Yq; must be 0 otherwise */
  DcnLayout layout;                       /* of X and Y (see above); 0: NCHW */
  int32_t layout_vector;                  /* NHWC: C padded to a multiple of it (1, 2, 4, 8, 16, 32);
                                             NC_VECTOR_HW: channels per block (2..32); NCHW: 0 or 1 */
} DcnDeformConvProblem;

/* What a launch of a problem does, from dcn_deform_conv_cuda_plan. */
typedef struct DcnLaunchInfo {
  DcnAlgorithm algorithm;  /* SIMT, TENSOR_CORE or TENSOR_CORE_NHWC, never AUTO (DCN_INT8: SIMT = dp4a) */
  int32_t splits;          /* blocks of a cluster sharing one output tile (1: no split-K) */
  uint32_t grid[3];        /* x, y, z */
  uint32_t threads;        /* per block */
  uint64_t shared_bytes;   /* dynamic shared memory per block */
} DcnLaunchInfo;

/* Device (or, for the emulator, host) pointers. mask and bias may be NULL
 * when the problem says they are absent. */
typedef struct DcnDeformConvBuffers {
  const void* input;  /* X [N, C, H, W] in the problem's layout */
  const void* weight; /* W [M, C/group, kh, kw] */
  const void* offset; /* [N, 2*offset_group*kh*kw, Ho, Wo], (dy, dx) interleaved per tap */
  const void* mask;   /* [N, offset_group*kh*kw, Ho, Wo] */
  const void* bias;   /* [M] */
  void* output;       /* Y [N, M, Ho, Wo] in the problem's layout (DCN_INT8: float32, or int8 when y_scale > 0) */
  const void* output_scale; /* DCN_INT8 only: [M] float32, x_scale * w_scale[o] (see above) */
} DcnDeformConvBuffers;

/* Output height and width of a problem; 0 on success, else a DcnStatus with
 * a message in `error` (which may be NULL). */
DCN_CUDA_API int dcn_deform_conv_output_size(const DcnDeformConvProblem* problem, int64_t* out_height,
                                             int64_t* out_width, char* error, size_t error_capacity);

/* Bytes of device workspace a launch of the problem needs: 0, except for
 * DCN_ALGORITHM_TENSOR_CORE_NHWC (asked for, or what DCN_ALGORITHM_AUTO would
 * pick), which needs N*C*H*W + M*C/group*kh*kw float16 values (+ alignment).
 * Depends only on the problem, never on the device. */
DCN_CUDA_API size_t dcn_deform_conv_cuda_workspace_size(const DcnDeformConvProblem* problem);

/* The launch the problem would get on the current device (`emulated` = 0) or
 * in the emulator (`emulated` != 0, which plans for an H100: 132 SMs,
 * compute capability 9.0, 227 KiB of shared memory per block). */
DCN_CUDA_API int dcn_deform_conv_cuda_plan(const DcnDeformConvProblem* problem, int emulated, DcnLaunchInfo* info,
                                           char* error, size_t error_capacity);

/* Validates the problem and launches the kernel on `stream` (a cudaStream_t;
 * NULL for the default stream). `workspace`: device memory of at least
 * dcn_deform_conv_cuda_workspace_size bytes (may be NULL when that is 0). Asynchronous: returns after the launch.
 * On failure returns a DcnStatus and writes a message naming the problem to
 * `error` (truncated to `error_capacity`, NUL-terminated; may be NULL). */
DCN_CUDA_API int dcn_deform_conv_cuda(const DcnDeformConvProblem* problem, const DcnDeformConvBuffers* buffers,
                                      void* workspace, void* stream, char* error, size_t error_capacity);

/* Runs the same kernel code on the CPU, one emulated thread block at a time,
 * with host pointers: the block-tiling, indexing and type conversions of the
 * CUDA kernel are tested without a GPU. Slow; meant for tests. */
DCN_CUDA_API int dcn_deform_conv_cuda_emulated(const DcnDeformConvProblem* problem,
                                               const DcnDeformConvBuffers* buffers, char* error,
                                               size_t error_capacity);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif /* DCN_DEPLOY_DEFORM_CONV_CUDA_H_ */
