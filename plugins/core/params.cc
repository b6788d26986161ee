#include "core/params.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/text.h"

namespace dcn_deploy {
namespace {

bool known(int64_t dim) { return dim != kUnknownDim; }

bool all_at_least(const int64_t* values, size_t count, int64_t minimum) {
  for (size_t i = 0; i < count; ++i) {
    if (values[i] < minimum) return false;
  }
  return true;
}

bool all_at_most(const int64_t* values, size_t count, int64_t maximum) {
  for (size_t i = 0; i < count; ++i) {
    if (values[i] > maximum) return false;
  }
  return true;
}

// Range check of one list attribute; "" when every value is in [minimum, kMaxSpatialExtent].
std::string check_list_range(const std::string& node_name, const char* name, const int64_t* values, size_t count,
                             int64_t minimum) {
  if (!all_at_least(values, count, minimum)) {
    return node_error(node_name, concat("attribute '", name, "' values must be >= ", minimum, ", got ",
                                        format_list(values, count)));
  }
  if (!all_at_most(values, count, kMaxSpatialExtent)) {
    return node_error(node_name, concat("attribute '", name, "' values must be <= ", kMaxSpatialExtent, ", got ",
                                        format_list(values, count)));
  }
  return "";
}

std::string check_list_length(const std::string& node_name, const char* name, const std::vector<int64_t>& values,
                              size_t expected) {
  if (values.size() != expected) {
    return node_error(node_name, concat("attribute '", name, "' must have ", expected, " values, got ",
                                        values.size(), " ", format_dims(values)));
  }
  return "";
}

// a * b, or -1 when the product does not fit in int64 (inputs are >= 0).
int64_t checked_product(int64_t a, int64_t b) {
  int64_t product = 0;
  return __builtin_mul_overflow(a, b, &product) ? -1 : product;
}

std::string kernel_text(const DeformConvAttributes& attributes) {
  return concat(attributes.kernel[0], "x", attributes.kernel[1]);
}

// Checks a 4-D per-pixel input (offset or mask) against the expected layout.
std::string check_per_pixel_input(const std::string& node_name, const char* input_name,
                                  const std::vector<int64_t>& dims, int64_t batch, int64_t expected_channels,
                                  const std::string& channel_formula, const DeformConvAttributes& attributes,
                                  int64_t out_height, int64_t out_width) {
  if (known(dims[0]) && known(batch) && dims[0] != batch) {
    return node_error(node_name, concat(input_name, " has batch size ", dims[0], ", expected N = ", batch,
                                        " (batch size of X)"));
  }
  if (known(dims[1]) && dims[1] != expected_channels) {
    return node_error(node_name, concat(input_name, " has ", dims[1], " channels, expected ", channel_formula,
                                        " = ", expected_channels, " (offset_group=", attributes.offset_group,
                                        ", kernel ", kernel_text(attributes), ")"));
  }
  if ((known(dims[2]) && known(out_height) && dims[2] != out_height) ||
      (known(dims[3]) && known(out_width) && dims[3] != out_width)) {
    return node_error(node_name, concat(input_name, " has spatial size ", dims[2], "x", dims[3],
                                        ", expected the output size Ho x Wo = ", out_height, "x", out_width));
  }
  return "";
}

// `allow_unknown`: kUnknownDim (-1) entries are accepted (check_known_dims).
std::string check_rank(const std::string& node_name, const char* what, const std::vector<int64_t>& dims,
                       size_t rank, const char* layout, bool allow_unknown = false) {
  if (dims.size() != rank) {
    return node_error(node_name, concat(what, " must be ", rank, "-D ", layout, ", got shape ", format_dims(dims)));
  }
  if (!all_at_least(dims.data(), dims.size(), allow_unknown ? kUnknownDim : 0)) {
    return node_error(node_name, concat(what, " has a negative dimension: ", format_dims(dims)));
  }
  return "";
}

}  // namespace

std::string node_error(const std::string& node_name, const std::string& detail) {
  return concat(kOpType, " node '", node_name, "': ", detail);
}

std::string format_dims(const std::vector<int64_t>& dims) { return format_list(dims.data(), dims.size()); }

std::string make_attributes(const std::string& node_name, const std::vector<int64_t>& kernel_shape,
                            const std::vector<int64_t>& strides, const std::vector<int64_t>& pads,
                            const std::vector<int64_t>& dilations, int64_t group, int64_t offset_group,
                            DeformConvAttributes* attributes) {
  std::string error = check_list_length(node_name, "kernel_shape", kernel_shape, 2);
  if (error.empty()) error = check_list_length(node_name, "strides", strides, 2);
  if (error.empty()) error = check_list_length(node_name, "pads", pads, 4);
  if (error.empty()) error = check_list_length(node_name, "dilations", dilations, 2);
  if (!error.empty()) return error;

  DeformConvAttributes parsed;
  for (int axis = 0; axis < 2; ++axis) {
    parsed.kernel[axis] = kernel_shape[axis];
    parsed.stride[axis] = strides[axis];
    parsed.dilation[axis] = dilations[axis];
  }
  for (int side = 0; side < 4; ++side) {
    parsed.pads[side] = pads[side];
  }
  parsed.group = group;
  parsed.offset_group = offset_group;

  error = check_attributes(node_name, parsed);
  if (error.empty()) *attributes = parsed;
  return error;
}

std::string check_attributes(const std::string& node_name, const DeformConvAttributes& attributes) {
  std::string error = check_list_range(node_name, "kernel_shape", attributes.kernel, 2, 1);
  if (error.empty()) error = check_list_range(node_name, "strides", attributes.stride, 2, 1);
  if (error.empty()) error = check_list_range(node_name, "pads", attributes.pads, 4, 0);
  if (error.empty()) error = check_list_range(node_name, "dilations", attributes.dilation, 2, 1);
  if (!error.empty()) return error;
  if (attributes.group < 1) {
    return node_error(node_name, concat("attribute 'group' must be >= 1, got ", attributes.group));
  }
  if (attributes.offset_group < 1) {
    return node_error(node_name, concat("attribute 'offset_group' must be >= 1, got ", attributes.offset_group));
  }
  return "";
}

int64_t output_extent_shift(int64_t pad_begin, int64_t pad_end, int64_t kernel, int64_t dilation) {
  return pad_begin + pad_end - (dilation * (kernel - 1) + 1);
}

int64_t output_extent(int64_t in_extent, int64_t pad_begin, int64_t pad_end, int64_t kernel, int64_t stride,
                      int64_t dilation) {
  const int64_t span = in_extent + output_extent_shift(pad_begin, pad_end, kernel, dilation);
  if (span < 0) return 0;  // Kernel larger than the padded input: no output position.
  return span / stride + 1;
}

namespace {

// The checks of X and W against validated attributes and the output size;
// check_dims adds those of offset, mask and B. A dimension that is
// kUnknownDim (only with check_known_dims) skips every check it takes part
// in, and what derives from it (Ho from H, ...) is unknown too.
std::string shape_of_input_and_weight(const std::string& node_name, const DeformConvAttributes& attributes,
                                      const DeformConvInputDims& dims, DeformConvShape* shape) {
  DeformConvShape result;
  result.batch = dims.input[0];
  result.in_channels = dims.input[1];
  result.in_height = dims.input[2];
  result.in_width = dims.input[3];
  result.out_channels = dims.weight[0];
  result.kernel_h = known(dims.weight[2]) ? dims.weight[2] : attributes.kernel[0];
  result.kernel_w = known(dims.weight[3]) ? dims.weight[3] : attributes.kernel[1];
  result.has_bias = dims.bias.has_value();
  result.has_mask = dims.mask.has_value();
  const int64_t group = attributes.group;
  const int64_t offset_group = attributes.offset_group;
  const bool c_known = known(result.in_channels);

  // Empty planes would leave the bilinear gather nothing to read.
  if ((c_known && result.in_channels < 1) || (known(result.in_height) && result.in_height < 1) ||
      (known(result.in_width) && result.in_width < 1)) {
    return node_error(node_name, concat("input X must have C, H and W >= 1, got shape ", format_dims(dims.input)));
  }
  if (result.in_height > kMaxSpatialExtent || result.in_width > kMaxSpatialExtent ||
      (known(result.in_height) && known(result.in_width) &&
       result.in_height * result.in_width > std::numeric_limits<int32_t>::max())) {
    return node_error(node_name, concat("input X spatial size ", result.in_height, "x", result.in_width,
                                        " is too large (each side <= ", kMaxSpatialExtent,
                                        " and H*W < 2^31 supported)"));
  }
  if (c_known && result.in_channels % group != 0) {
    return node_error(node_name, concat("input X has C=", result.in_channels, " channels, not divisible by group=",
                                        group));
  }
  if (c_known && result.in_channels % offset_group != 0) {
    return node_error(node_name, concat("input X has C=", result.in_channels,
                                        " channels, not divisible by offset_group=", offset_group));
  }
  if (known(result.out_channels) && result.out_channels % group != 0) {
    return node_error(node_name, concat("weight W has M=", result.out_channels,
                                        " output channels, not divisible by group=", group));
  }
  if (c_known && known(dims.weight[1]) && dims.weight[1] != result.in_channels / group) {
    const int64_t channels_per_group = result.in_channels / group;
    return node_error(node_name, concat("weight W has ", dims.weight[1],
                                        " input channels per group (dim 1), expected C/group = ",
                                        channels_per_group, " (C=", result.in_channels, ", group=", group, ")"));
  }
  if (result.kernel_h != attributes.kernel[0] || result.kernel_w != attributes.kernel[1]) {
    return node_error(node_name, concat("attribute 'kernel_shape' is ", kernel_text(attributes),
                                        " but weight W has spatial size ", result.kernel_h, "x",
                                        result.kernel_w, " (W shape ", format_dims(dims.weight), ")"));
  }

  result.out_height = known(result.in_height)
                          ? output_extent(result.in_height, attributes.pads[0], attributes.pads[2], result.kernel_h,
                                          attributes.stride[0], attributes.dilation[0])
                          : kUnknownDim;
  result.out_width = known(result.in_width)
                         ? output_extent(result.in_width, attributes.pads[1], attributes.pads[3], result.kernel_w,
                                         attributes.stride[1], attributes.dilation[1])
                         : kUnknownDim;
  if ((known(result.out_height) && result.out_height < 1) || (known(result.out_width) && result.out_width < 1)) {
    return node_error(
        node_name,
        concat("output would be empty: Ho x Wo = ", result.out_height, "x", result.out_width, " for input ",
               result.in_height, "x", result.in_width, ", pads ", format_list(attributes.pads, 4), ", kernel ",
               kernel_text(attributes), ", dilations ", attributes.dilation[0], "x", attributes.dilation[1],
               ", strides ", attributes.stride[0], "x", attributes.stride[1]));
  }

  *shape = result;
  return "";
}

// infer_shape (allow_unknown false) and check_known_dims (true).
std::string check_dims(const std::string& node_name, const DeformConvAttributes& attributes,
                       const DeformConvInputDims& dims, bool allow_unknown, DeformConvShape* shape) {
  std::string error = check_attributes(node_name, attributes);
  if (!error.empty()) return error;

  error = check_rank(node_name, "input X", dims.input, 4, "[N, C, H, W]", allow_unknown);
  if (error.empty()) error = check_rank(node_name, "weight W", dims.weight, 4, "[M, C/group, kh, kw]", allow_unknown);
  if (error.empty()) {
    error = check_rank(node_name, "offset", dims.offset, 4, "[N, 2*offset_group*kh*kw, Ho, Wo]", allow_unknown);
  }
  if (error.empty() && dims.bias) error = check_rank(node_name, "bias B", *dims.bias, 1, "[M]", allow_unknown);
  if (error.empty() && dims.mask) {
    error = check_rank(node_name, "mask", *dims.mask, 4, "[N, offset_group*kh*kw, Ho, Wo]", allow_unknown);
  }
  if (!error.empty()) return error;

  DeformConvShape result;
  error = shape_of_input_and_weight(node_name, attributes, dims, &result);
  if (!error.empty()) return error;
  const int64_t offset_group = attributes.offset_group;

  // offset_group divides C, so it is small enough here; the products stay checked anyway.
  const int64_t kernel_area = result.kernel_h * result.kernel_w;
  const int64_t mask_channels = checked_product(offset_group, kernel_area);
  const int64_t offset_channels = mask_channels < 0 ? -2 : checked_product(2, mask_channels);
  error = check_per_pixel_input(node_name, "offset", dims.offset, result.batch, offset_channels,
                                "2*offset_group*kh*kw", attributes, result.out_height, result.out_width);
  if (error.empty() && dims.mask) {
    error = check_per_pixel_input(node_name, "mask", *dims.mask, result.batch, mask_channels,
                                  "offset_group*kh*kw", attributes, result.out_height, result.out_width);
  }
  if (!error.empty()) return error;

  if (dims.bias && known((*dims.bias)[0]) &&
      ((*dims.bias)[0] < 1 || (known(result.out_channels) && (*dims.bias)[0] != result.out_channels))) {
    return node_error(node_name, concat("bias B has ", (*dims.bias)[0], " elements, expected M = ",
                                        result.out_channels, " (output channels of W)"));
  }

  *shape = result;
  return "";
}

}  // namespace

std::string infer_shape(const std::string& node_name, const DeformConvAttributes& attributes,
                        const DeformConvInputDims& dims, DeformConvShape* shape) {
  return check_dims(node_name, attributes, dims, false, shape);
}

std::string check_known_dims(const std::string& node_name, const DeformConvAttributes& attributes,
                             const DeformConvInputDims& dims) {
  DeformConvShape unused;
  return check_dims(node_name, attributes, dims, true, &unused);
}

std::string infer_shape_from_sizes(const std::string& node_name, const DeformConvAttributes& attributes,
                                   const DeformConvSizes& sizes, DeformConvShape* shape) {
  std::string error = check_attributes(node_name, attributes);
  if (!error.empty()) return error;
  DeformConvInputDims dims;
  dims.input = {sizes.batch, sizes.in_channels, sizes.in_height, sizes.in_width};
  dims.weight = {sizes.out_channels, sizes.in_channels / attributes.group, attributes.kernel[0], attributes.kernel[1]};
  error = check_rank(node_name, "input X", dims.input, 4, "[N, C, H, W]");
  if (error.empty()) error = check_rank(node_name, "weight W", dims.weight, 4, "[M, C/group, kh, kw]");
  if (error.empty()) error = shape_of_input_and_weight(node_name, attributes, dims, shape);
  if (!error.empty()) return error;
  shape->has_bias = sizes.has_bias;
  shape->has_mask = sizes.has_mask;
  return "";
}

std::string check_layout(const std::string& node_name, const TensorLayout& layout) {
  const int32_t v = layout.vector;
  const bool power_of_two = v >= 1 && v <= 32 && (v & (v - 1)) == 0;
  switch (layout.kind) {
    case ChannelLayout::kPlanar:
      if (v == 0 || v == 1) return "";
      return node_error(node_name, concat("the planar (NCHW) layout takes layout_vector 0 or 1, got ", v));
    case ChannelLayout::kChannelsLast:
      if (power_of_two) return "";
      return node_error(node_name, concat("the channels-last (NHWC) layout pads C to a multiple of layout_vector, "
                                          "which must be 1, 2, 4, 8, 16 or 32, got ", v));
    case ChannelLayout::kBlocked:
      if (power_of_two && v >= 2) return "";
      return node_error(node_name, concat("the blocked (NC/vHWv) layout takes layout_vector 2, 4, 8, 16 or 32, got ",
                                          v));
  }
  return node_error(node_name, concat("layout must be 0 (NCHW), 1 (NHWC) or 2 (NC/vHWv), got ",
                                      static_cast<int32_t>(layout.kind)));
}

int64_t padded_channels(const TensorLayout& layout, int64_t channels) {
  if (layout.kind == ChannelLayout::kPlanar) return channels;
  return (channels + layout.vector - 1) / layout.vector * layout.vector;
}

int64_t channel_block(const TensorLayout& layout, int64_t channels) {
  switch (layout.kind) {
    case ChannelLayout::kChannelsLast:
      return padded_channels(layout, channels);
    case ChannelLayout::kBlocked:
      return layout.vector;
    case ChannelLayout::kPlanar:
      break;
  }
  return 1;
}

std::string describe_layout(const TensorLayout& layout) {
  switch (layout.kind) {
    case ChannelLayout::kChannelsLast:
      return layout.vector <= 1 ? std::string("NHWC") : concat("NHWC (C padded to ", layout.vector, ")");
    case ChannelLayout::kBlocked:
      return concat("NC/", layout.vector, "HW", layout.vector);
    case ChannelLayout::kPlanar:
      break;
  }
  return "NCHW";
}

std::vector<int64_t> output_dims(const DeformConvShape& shape) {
  return {shape.batch, shape.out_channels, shape.out_height, shape.out_width};
}

}  // namespace dcn_deploy
