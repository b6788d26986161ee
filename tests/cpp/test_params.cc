// Attribute and shape validation, output-size arithmetic, error messages.
#include <string>
#include <vector>

#include "core/math.h"
#include "core/params.h"
#include "test_harness.h"

using namespace dcn_deploy;

namespace {

const std::string kNode = "layer3/dcn";

DeformConvAttributes attributes_3x3() {
  DeformConvAttributes attributes;
  attributes.kernel[0] = 3;
  attributes.kernel[1] = 3;
  return attributes;
}

// X [2, 4, 8, 6], W [6, 4, 3, 3], stride 1, no padding: Ho x Wo = 6 x 4.
DeformConvInputDims valid_dims() {
  DeformConvInputDims dims;
  dims.input = {2, 4, 8, 6};
  dims.weight = {6, 4, 3, 3};
  dims.offset = {2, 18, 6, 4};
  return dims;
}

std::string infer_error(const DeformConvAttributes& attributes, const DeformConvInputDims& dims) {
  DeformConvShape shape;
  return infer_shape(kNode, attributes, dims, &shape);
}

std::string make_error(const std::vector<int64_t>& kernel, const std::vector<int64_t>& strides,
                       const std::vector<int64_t>& pads, const std::vector<int64_t>& dilations, int64_t group = 1,
                       int64_t offset_group = 1) {
  DeformConvAttributes attributes;
  return make_attributes(kNode, kernel, strides, pads, dilations, group, offset_group, &attributes);
}

}  // namespace

TEST(layouts_of_x_and_y) {
  using dcn_deploy::ChannelLayout;
  using dcn_deploy::TensorLayout;
  const TensorLayout planar{}, nhwc8{ChannelLayout::kChannelsLast, 8}, nc32{ChannelLayout::kBlocked, 32};
  CHECK_EQ(dcn_deploy::check_layout("n", planar), std::string());
  CHECK_EQ(dcn_deploy::check_layout("n", TensorLayout{ChannelLayout::kPlanar, 0}), std::string());
  CHECK_EQ(dcn_deploy::padded_channels(nhwc8, 13), 16);
  CHECK_EQ(dcn_deploy::channel_block(nhwc8, 13), 16);
  CHECK_EQ(dcn_deploy::padded_channels(nc32, 13), 32);
  CHECK_EQ(dcn_deploy::channel_block(nc32, 40), 32);
  CHECK_EQ(dcn_deploy::channel_block(planar, 13), 1);
  CHECK_EQ(dcn_deploy::describe_layout(nhwc8), std::string("NHWC (C padded to 8)"));
  CHECK_EQ(dcn_deploy::describe_layout(nc32), std::string("NC/32HW32"));
  CHECK_CONTAINS(dcn_deploy::check_layout("n", TensorLayout{static_cast<ChannelLayout>(7), 1}),
                 "DcnDeformConv node 'n': layout must be 0 (NCHW), 1 (NHWC) or 2 (NC/vHWv), got 7");
  CHECK_CONTAINS(dcn_deploy::check_layout("n", TensorLayout{ChannelLayout::kChannelsLast, 12}), "got 12");
  CHECK_CONTAINS(dcn_deploy::check_layout("n", TensorLayout{ChannelLayout::kBlocked, 64}), "got 64");
  // Element (image 1, channel 35, pixel 5) of a 2 x 40 x (H*W = 6) tensor:
  // planar: (1*40 + 35)*6 + 5; NHWC padded to 40: (1*6 + 5)*40 + 35; NC/32HW32 (Cp 64): (1*64 + 32)*6 + 5*32 + 3.
  CHECK_EQ(dcn_deploy::layout_offset(1, 35, 5, 6, 40, 1), (1 * 40 + 35) * 6 + 5);
  CHECK_EQ(dcn_deploy::layout_offset(1, 35, 5, 6, 40, 40), (1 * 6 + 5) * 40 + 35);
  CHECK_EQ(dcn_deploy::layout_offset(1, 35, 5, 6, 64, 32), (1 * 64 + 32) * 6 + 5 * 32 + 3);
}

TEST(output_extent_formula) {
  // floor((H + top + bottom - (dilation*(k-1)+1)) / stride) + 1
  CHECK_EQ(output_extent(8, 0, 0, 3, 1, 1), 6);
  CHECK_EQ(output_extent(8, 1, 1, 3, 1, 1), 8);
  CHECK_EQ(output_extent(7, 1, 0, 3, 2, 1), 3);   // (7+1-3)/2+1 = 3
  CHECK_EQ(output_extent(9, 2, 1, 3, 2, 2), 4);   // (9+3-5)/2+1 = 4
  CHECK_EQ(output_extent(1, 0, 0, 1, 1, 1), 1);
  CHECK_EQ(output_extent(2, 0, 0, 3, 1, 1), 0);   // kernel larger than input
  CHECK_EQ(output_extent(5, 0, 0, 3, 1, 3), 0);   // dilated kernel spans 7
  CHECK_EQ(output_extent(5, 1, 1, 3, 1, 3), 1);
}

TEST(valid_shape_is_filled) {
  DeformConvInputDims dims = valid_dims();
  dims.bias = std::vector<int64_t>{6};
  dims.mask = std::vector<int64_t>{2, 9, 6, 4};
  DeformConvShape shape;
  CHECK_EQ(infer_shape(kNode, attributes_3x3(), dims, &shape), std::string());
  CHECK_EQ(shape.batch, 2);
  CHECK_EQ(shape.in_channels, 4);
  CHECK_EQ(shape.in_height, 8);
  CHECK_EQ(shape.in_width, 6);
  CHECK_EQ(shape.out_channels, 6);
  CHECK_EQ(shape.kernel_h, 3);
  CHECK_EQ(shape.kernel_w, 3);
  CHECK_EQ(shape.out_height, 6);
  CHECK_EQ(shape.out_width, 4);
  CHECK(shape.has_bias);
  CHECK(shape.has_mask);
  CHECK(output_dims(shape) == (std::vector<int64_t>{2, 6, 6, 4}));
}

TEST(asymmetric_pads_stride_dilation_groups) {
  DeformConvAttributes attributes;
  attributes.kernel[0] = 3;
  attributes.kernel[1] = 2;
  attributes.stride[0] = 2;
  attributes.stride[1] = 1;
  attributes.pads[0] = 1;  // top
  attributes.pads[1] = 0;  // left
  attributes.pads[2] = 2;  // bottom
  attributes.pads[3] = 3;  // right
  attributes.dilation[0] = 2;
  attributes.dilation[1] = 1;
  attributes.group = 2;
  attributes.offset_group = 3;
  DeformConvInputDims dims;
  dims.input = {1, 6, 7, 5};
  dims.weight = {4, 3, 3, 2};
  // Ho = (7+1+2-5)/2+1 = 3, Wo = (5+0+3-2)/1+1 = 7
  dims.offset = {1, 2 * 3 * 6, 3, 7};
  dims.mask = std::vector<int64_t>{1, 3 * 6, 3, 7};
  DeformConvShape shape;
  CHECK_EQ(infer_shape(kNode, attributes, dims, &shape), std::string());
  CHECK_EQ(shape.out_height, 3);
  CHECK_EQ(shape.out_width, 7);
  CHECK(!shape.has_bias);
}

TEST(error_names_node_and_offset_channels) {
  DeformConvInputDims dims = valid_dims();
  dims.offset[1] = 17;
  CHECK_EQ(infer_error(attributes_3x3(), dims),
           std::string("DcnDeformConv node 'layer3/dcn': offset has 17 channels, expected 2*offset_group*kh*kw = 18 "
                       "(offset_group=1, kernel 3x3)"));
}

TEST(error_mask_channels) {
  DeformConvInputDims dims = valid_dims();
  dims.mask = std::vector<int64_t>{2, 18, 6, 4};
  CHECK_EQ(infer_error(attributes_3x3(), dims),
           std::string("DcnDeformConv node 'layer3/dcn': mask has 18 channels, expected offset_group*kh*kw = 9 "
                       "(offset_group=1, kernel 3x3)"));
}

TEST(error_wrong_ranks) {
  DeformConvInputDims dims = valid_dims();
  dims.input = {2, 4, 8};
  CHECK_CONTAINS(infer_error(attributes_3x3(), dims), "input X must be 4-D [N, C, H, W], got shape [2, 4, 8]");
  dims = valid_dims();
  dims.weight = {6, 4, 9};
  CHECK_CONTAINS(infer_error(attributes_3x3(), dims), "weight W must be 4-D");
  dims = valid_dims();
  dims.offset = {2, 18, 24};
  CHECK_CONTAINS(infer_error(attributes_3x3(), dims), "offset must be 4-D");
  dims = valid_dims();
  dims.bias = std::vector<int64_t>{6, 1};
  CHECK_CONTAINS(infer_error(attributes_3x3(), dims), "bias B must be 1-D [M], got shape [6, 1]");
  dims = valid_dims();
  dims.mask = std::vector<int64_t>{2, 9, 6, 4, 1};
  CHECK_CONTAINS(infer_error(attributes_3x3(), dims), "mask must be 4-D");
}

TEST(error_channel_divisibility) {
  DeformConvAttributes attributes = attributes_3x3();
  DeformConvInputDims dims = valid_dims();
  attributes.group = 3;
  CHECK_CONTAINS(infer_error(attributes, dims), "input X has C=4 channels, not divisible by group=3");
  attributes.group = 1;
  attributes.offset_group = 3;
  CHECK_CONTAINS(infer_error(attributes, dims), "input X has C=4 channels, not divisible by offset_group=3");
  attributes.offset_group = 1;
  attributes.group = 4;
  dims.weight = {6, 1, 3, 3};
  CHECK_CONTAINS(infer_error(attributes, dims), "weight W has M=6 output channels, not divisible by group=4");
}

TEST(error_weight_shape) {
  DeformConvAttributes attributes = attributes_3x3();
  attributes.group = 2;
  DeformConvInputDims dims = valid_dims();
  CHECK_CONTAINS(infer_error(attributes, dims),
                 "weight W has 4 input channels per group (dim 1), expected C/group = 2 (C=4, group=2)");
  dims = valid_dims();
  dims.weight = {6, 4, 3, 2};
  CHECK_CONTAINS(infer_error(attributes_3x3(), dims),
                 "attribute 'kernel_shape' is 3x3 but weight W has spatial size 3x2");
  dims.weight = {6, 4, 0, 3};
  CHECK_CONTAINS(infer_error(attributes_3x3(), dims), "weight W has spatial size 0x3");
}

TEST(error_batch_mismatch) {
  DeformConvInputDims dims = valid_dims();
  dims.offset[0] = 1;
  CHECK_CONTAINS(infer_error(attributes_3x3(), dims), "offset has batch size 1, expected N = 2");
  dims = valid_dims();
  dims.mask = std::vector<int64_t>{3, 9, 6, 4};
  CHECK_CONTAINS(infer_error(attributes_3x3(), dims), "mask has batch size 3, expected N = 2");
}

TEST(error_spatial_mismatch_gives_both_sizes) {
  DeformConvInputDims dims = valid_dims();
  dims.offset = {2, 18, 8, 6};
  CHECK_CONTAINS(infer_error(attributes_3x3(), dims),
                 "offset has spatial size 8x6, expected the output size Ho x Wo = 6x4");
  dims = valid_dims();
  dims.mask = std::vector<int64_t>{2, 9, 6, 5};
  CHECK_CONTAINS(infer_error(attributes_3x3(), dims),
                 "mask has spatial size 6x5, expected the output size Ho x Wo = 6x4");
}

TEST(error_bias_length) {
  DeformConvInputDims dims = valid_dims();
  dims.bias = std::vector<int64_t>{5};
  CHECK_CONTAINS(infer_error(attributes_3x3(), dims), "bias B has 5 elements, expected M = 6");
}

TEST(error_empty_output) {
  DeformConvInputDims dims = valid_dims();
  dims.input = {2, 4, 2, 6};
  const std::string error = infer_error(attributes_3x3(), dims);
  CHECK_CONTAINS(error, "DcnDeformConv node 'layer3/dcn': output would be empty: Ho x Wo = 0x4");
  CHECK_CONTAINS(error, "input 2x6");
}

TEST(error_empty_input) {
  DeformConvInputDims dims = valid_dims();
  dims.input = {2, 4, 0, 6};
  CHECK_CONTAINS(infer_error(attributes_3x3(), dims), "input X must have C, H and W >= 1");
  dims.input = {2, -1, 8, 6};
  CHECK_CONTAINS(infer_error(attributes_3x3(), dims), "input X has a negative dimension");
}

TEST(zero_batch_is_valid) {
  DeformConvInputDims dims = valid_dims();
  dims.input[0] = 0;
  dims.offset[0] = 0;
  DeformConvShape shape;
  CHECK_EQ(infer_shape(kNode, attributes_3x3(), dims, &shape), std::string());
  CHECK_EQ(shape.batch, 0);
}

TEST(error_attribute_lengths) {
  CHECK_EQ(make_error({3, 3}, {1, 1, 1}, {0, 0, 0, 0}, {1, 1}),
           std::string("DcnDeformConv node 'layer3/dcn': attribute 'strides' must have 2 values, got 3 [1, 1, 1]"));
  CHECK_CONTAINS(make_error({3}, {1, 1}, {0, 0, 0, 0}, {1, 1}), "attribute 'kernel_shape' must have 2 values, got 1");
  CHECK_CONTAINS(make_error({3, 3}, {1, 1}, {0, 0}, {1, 1}), "attribute 'pads' must have 4 values, got 2");
  CHECK_CONTAINS(make_error({3, 3}, {1, 1}, {0, 0, 0, 0}, {}), "attribute 'dilations' must have 2 values, got 0");
}

TEST(error_attribute_ranges) {
  CHECK_CONTAINS(make_error({3, 3}, {0, 1}, {0, 0, 0, 0}, {1, 1}),
                 "attribute 'strides' values must be >= 1, got [0, 1]");
  CHECK_CONTAINS(make_error({3, 3}, {1, -2}, {0, 0, 0, 0}, {1, 1}), "attribute 'strides' values must be >= 1");
  CHECK_CONTAINS(make_error({3, 3}, {1, 1}, {0, 0, 0, 0}, {1, 0}),
                 "attribute 'dilations' values must be >= 1, got [1, 0]");
  CHECK_CONTAINS(make_error({3, 3}, {1, 1}, {0, -1, 0, 0}, {1, 1}),
                 "attribute 'pads' values must be >= 0, got [0, -1, 0, 0]");
  CHECK_CONTAINS(make_error({0, 3}, {1, 1}, {0, 0, 0, 0}, {1, 1}), "attribute 'kernel_shape' values must be >= 1");
  CHECK_CONTAINS(make_error({3, 3}, {1, 1}, {0, 0, 0, 0}, {1, 1}, 0), "attribute 'group' must be >= 1, got 0");
  CHECK_CONTAINS(make_error({3, 3}, {1, 1}, {0, 0, 0, 0}, {1, 1}, 1, -1),
                 "attribute 'offset_group' must be >= 1, got -1");
  CHECK_CONTAINS(make_error({3, 3}, {int64_t{1} << 40, 1}, {0, 0, 0, 0}, {1, 1}),
                 "attribute 'strides' values must be <= 16777216");
}

TEST(make_attributes_fills_every_field) {
  DeformConvAttributes attributes;
  CHECK_EQ(make_attributes(kNode, {3, 2}, {2, 1}, {1, 0, 2, 3}, {2, 1}, 2, 3, &attributes), std::string());
  CHECK_EQ(attributes.kernel[0], 3);
  CHECK_EQ(attributes.kernel[1], 2);
  CHECK_EQ(attributes.stride[0], 2);
  CHECK_EQ(attributes.stride[1], 1);
  CHECK_EQ(attributes.pads[0], 1);
  CHECK_EQ(attributes.pads[1], 0);
  CHECK_EQ(attributes.pads[2], 2);
  CHECK_EQ(attributes.pads[3], 3);
  CHECK_EQ(attributes.dilation[0], 2);
  CHECK_EQ(attributes.dilation[1], 1);
  CHECK_EQ(attributes.group, 2);
  CHECK_EQ(attributes.offset_group, 3);
}

TEST(infer_shape_rechecks_attributes) {
  DeformConvAttributes attributes = attributes_3x3();
  attributes.stride[1] = 0;
  CHECK_CONTAINS(infer_error(attributes, valid_dims()), "attribute 'strides' values must be >= 1");
}

TEST(output_extent_shift_is_the_formula_offset) {
  // out = floor((in + shift) / stride) + 1 for every in where the output is not empty.
  for (int64_t in = 5; in < 12; ++in) {
    const int64_t shift = output_extent_shift(2, 1, 3, 2);
    CHECK_EQ((in + shift) / 2 + 1, output_extent(in, 2, 1, 3, 2, 2));
  }
}

TEST(shape_from_sizes_matches_infer_shape) {
  DeformConvAttributes attributes = attributes_3x3();
  DeformConvSizes sizes;
  sizes.batch = 2;
  sizes.in_channels = 4;
  sizes.in_height = 8;
  sizes.in_width = 6;
  sizes.out_channels = 6;
  sizes.has_mask = true;
  DeformConvShape from_sizes, from_dims;
  CHECK_EQ(infer_shape_from_sizes(kNode, attributes, sizes, &from_sizes), std::string());
  DeformConvInputDims dims = valid_dims();
  dims.mask = std::vector<int64_t>{2, 9, 6, 4};
  CHECK_EQ(infer_shape(kNode, attributes, dims, &from_dims), std::string());
  CHECK(output_dims(from_sizes) == output_dims(from_dims));
  CHECK_EQ(from_sizes.has_mask, true);
  CHECK_EQ(from_sizes.has_bias, false);
  // The same checks and messages as infer_shape.
  attributes.group = 2;
  sizes.in_channels = 5;
  CHECK_CONTAINS(infer_shape_from_sizes(kNode, attributes, sizes, &from_sizes), "not divisible by group=2");
  attributes.group = 1;
  sizes.in_channels = -1;
  CHECK_CONTAINS(infer_shape_from_sizes(kNode, attributes, sizes, &from_sizes), "negative dimension");
  sizes.in_channels = 4;
  attributes.dilation[0] = 0;
  CHECK_CONTAINS(infer_shape_from_sizes(kNode, attributes, sizes, &from_sizes), "attribute 'dilations'");
}

TEST_MAIN()
