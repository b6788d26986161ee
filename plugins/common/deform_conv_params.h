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

// Output size along one axis: floor((in + pad_begin + pad_end - (dilation*(kernel-1)+1)) / stride) + 1.
// Can be <= 0 for inputs too small for the kernel. Expects validated attributes.
int64_t output_extent(int64_t in_extent, int64_t pad_begin, int64_t pad_end, int64_t kernel, int64_t stride,
                      int64_t dilation);

// Validates the attributes together with the input dimensions and fills
// `shape`. Returns an error message naming the node and the mismatch, or ""
// on success (`shape` is only written on success).
std::string infer_shape(const std::string& node_name, const DeformConvAttributes& attributes,
                        const DeformConvInputDims& dims, DeformConvShape* shape);

// Output dimensions [N, M, Ho, Wo] of a validated shape.
std::vector<int64_t> output_dims(const DeformConvShape& shape);

// ---------------------------------------------------------------------------
// INT8 form (DcnDeformConvInt8 / DcnDeformConvInt8Requantized; definition in
// dcn_deploy/int8.py): X and W int8 with zero point 0, offset, mask and bias
// float, the scales as node attributes.
constexpr const char* kInt8OpType = "DcnDeformConvInt8";
constexpr const char* kInt8RequantizedOpType = "DcnDeformConvInt8Requantized";

// Largest C/group*kh*kw whose int32 accumulator cannot overflow: 128*128*n < 2^31
// (|vq| and |Wq| are at most 128: a graph may carry a -128 weight).
constexpr int64_t kMaxInt8ProductsPerOutput = 2147483647 / (128 * 128);

struct DeformConvInt8Scales {
  float x_scale = 0.0f;          // attribute x_scale: X ~ x_scale * Xq
  std::vector<float> w_scale;    // attribute w_scale: W[o] ~ w_scale[o] * Wq[o]; length M (or 1: every channel)
  float y_scale = 0.0f;          // attribute y_scale (Requantized form only): Yq = Y / y_scale; 0: float Y
};

// Checks that every scale is finite and positive and, when out_channels >= 0,
// that w_scale has M (or 1) values. Returns an error message, or "".
std::string check_int8_scales(const std::string& node_name, const DeformConvInt8Scales& scales,
                              int64_t out_channels);

// Checks that the int32 accumulator of a validated shape cannot overflow.
std::string check_int8_shape(const std::string& node_name, const DeformConvAttributes& attributes,
                             const DeformConvShape& shape);

// "[1, 2, 3]".
std::string format_dims(const std::vector<int64_t>& dims);

}  // namespace dcn_deploy
