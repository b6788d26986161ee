// Attributes, shapes and their validation for the DcnDeformConv operator.
//
// Validation is written once here and used by every backend. It reports
// problems as strings instead of exceptions because TensorRT plugin code
// works with error codes. Every message has the form
//   DcnDeformConv node '<node>': <what mismatches>
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace dcn_deploy {

constexpr const char* kOpType = "DcnDeformConv";
constexpr const char* kOpDomain = "dcn_deploy";

// Largest accepted kernel size, stride, dilation, pad and input height/width.
// Keeps every sampling coordinate exact in float and every index in int32.
constexpr int64_t kMaxSpatialExtent = int64_t{1} << 24;

// Operator attributes in ONNX DeformConv terms.
struct DeformConvAttributes {
  int64_t kernel[2] = {1, 1};        // kernel_shape: kh, kw
  int64_t stride[2] = {1, 1};        // strides: h, w
  int64_t pads[4] = {0, 0, 0, 0};    // top, left, bottom, right (x1_begin, x2_begin, x1_end, x2_end)
  int64_t dilation[2] = {1, 1};      // dilations: h, w
  int64_t group = 1;                 // weight groups
  int64_t offset_group = 1;          // offset (and mask) groups
};

// Concrete problem size after validation.
struct DeformConvShape {
  int64_t batch = 0;         // N
  int64_t in_channels = 0;   // C
  int64_t in_height = 0;     // H
  int64_t in_width = 0;      // W
  int64_t out_channels = 0;  // M
  int64_t kernel_h = 0;      // kh
  int64_t kernel_w = 0;      // kw
  int64_t out_height = 0;    // Ho
  int64_t out_width = 0;     // Wo
  bool has_bias = false;
  bool has_mask = false;
};

// Dimensions of the operator inputs; bias and mask may be absent.
struct DeformConvInputDims {
  std::vector<int64_t> input;   // X [N, C, H, W]
  std::vector<int64_t> weight;  // W [M, C/group, kh, kw]
  std::vector<int64_t> offset;  // [N, 2*offset_group*kh*kw, Ho, Wo]
  std::optional<std::vector<int64_t>> bias;  // [M]
  std::optional<std::vector<int64_t>> mask;  // [N, offset_group*kh*kw, Ho, Wo]
};

// "DcnDeformConv node '<node_name>': <detail>".
std::string node_error(const std::string& node_name, const std::string& detail);

// Fills `attributes` from ONNX attribute values, checking list lengths and
// value ranges. Returns an error message, or "" on success.
std::string make_attributes(const std::string& node_name, const std::vector<int64_t>& kernel_shape,
                            const std::vector<int64_t>& strides, const std::vector<int64_t>& pads,
                            const std::vector<int64_t>& dilations, int64_t group, int64_t offset_group,
                            DeformConvAttributes* attributes);

// Checks attribute value ranges. Returns an error message, or "" when valid.
std::string check_attributes(const std::string& node_name, const DeformConvAttributes& attributes);

// The output-size formula, the one copy in C++. Along one axis:
//   out = floor((in + shift) / stride) + 1,  shift = pad_begin + pad_end - (dilation*(kernel-1)+1).
// output_extent_shift is exposed on its own for the TensorRT plugin, which
// builds the same formula as a dimension expression of a symbolic `in`.
int64_t output_extent_shift(int64_t pad_begin, int64_t pad_end, int64_t kernel, int64_t dilation);

// Output size along one axis; 0 for inputs too small for the kernel.
// Expects validated attributes.
int64_t output_extent(int64_t in_extent, int64_t pad_begin, int64_t pad_end, int64_t kernel, int64_t stride,
                      int64_t dilation);

// Validates the attributes together with the input dimensions and fills
// `shape`. Returns an error message naming the node and the mismatch, or ""
// on success (`shape` is only written on success).
std::string infer_shape(const std::string& node_name, const DeformConvAttributes& attributes,
                        const DeformConvInputDims& dims, DeformConvShape* shape);

// A dimension only known later (TensorRT's -1 for a dynamic axis at build time).
constexpr int64_t kUnknownDim = -1;

// infer_shape's checks on dimensions of which some may be kUnknownDim: every
// check whose operands are all known runs, with infer_shape's message (channel
// counts against group, offset_group and the kernel, W against C, B against M,
// offset/mask batch and spatial size where X's are known). Ranks must be known.
// "" when nothing known contradicts; with every dimension known it is infer_shape.
std::string check_known_dims(const std::string& node_name, const DeformConvAttributes& attributes,
                             const DeformConvInputDims& dims);

// The sizes of a problem given as numbers rather than tensors (the CUDA C
// API): offset and mask have the dims the output size implies, so only X, W
// and the attributes are checked, with the same checks and messages as
// infer_shape, and the attributes validated once.
struct DeformConvSizes {
  int64_t batch = 0, in_channels = 0, in_height = 0, in_width = 0;  // X [N, C, H, W]
  int64_t out_channels = 0;                                         // M
  bool has_bias = false, has_mask = false;
};
std::string infer_shape_from_sizes(const std::string& node_name, const DeformConvAttributes& attributes,
                                   const DeformConvSizes& sizes, DeformConvShape* shape);

// Memory layout of X and Y (offset, mask, W and B are always planar). Element
// (n, c, pixel) of a tensor with C channels and P = H*W pixels lies at
//   n*Cp*P + (c / B)*P*B + pixel*B + c % B            (layout_offset, core/math.h)
// with Cp the channels padded to a multiple of `vector` and B the channels of one block:
//   kind            layout                   B    Cp                  TensorRT / torch
//   kPlanar         NCHW                     1    C                   kLINEAR; torch contiguous
//   kChannelsLast   NHWC, C padded to vector Cp   roundup(C, vector)  vector 1: torch.channels_last,
//                                                                     8: kHWC8, 16: kHWC16
//   kBlocked        NC/vHWv                  v    roundup(C, vector)  4: kCHW4, 32: kCHW32
// Padding channels of X never reach the result (the 8-channel NHWC gathers load them
// and zero those lanes; one-channel gathers skip them); those of Y are written as zeros.
enum class ChannelLayout : int32_t { kPlanar = 0, kChannelsLast = 1, kBlocked = 2 };
struct TensorLayout {
  ChannelLayout kind = ChannelLayout::kPlanar;
  int32_t vector = 1;  // kPlanar: 1 (0 is taken as 1); else a power of two <= 32 (kBlocked: >= 2)
};

// "" when `layout` is a known kind with an allowed vector, else a message naming both.
std::string check_layout(const std::string& node_name, const TensorLayout& layout);
// Cp and B of the table above for a tensor of `channels` channels (layout checked).
int64_t padded_channels(const TensorLayout& layout, int64_t channels);
int64_t channel_block(const TensorLayout& layout, int64_t channels);
// "NCHW", "NHWC", "NHWC (C padded to 8)", "NC/32HW32".
std::string describe_layout(const TensorLayout& layout);

// Output dimensions [N, M, Ho, Wo] of a validated shape.
std::vector<int64_t> output_dims(const DeformConvShape& shape);

// "[1, 2, 3]".
std::string format_dims(const std::vector<int64_t>& dims);

}  // namespace dcn_deploy
