// Plugin fields <-> attributes (the TensorRT plugin's creator and its
// serialisation) and the input layout after TensorRT's ONNX parser.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "core/fields.h"
#include "test_harness.h"

using namespace dcn_deploy;

namespace {

const std::string kNode = "backbone.layer3.0.conv2";

// Owns the storage of a field list; fields point into it.
struct FieldList {
  std::vector<std::vector<int32_t>> int32_storage;
  std::vector<std::vector<int64_t>> int64_storage;
  std::vector<std::string> string_storage;
  std::vector<std::string> name_storage;  // names that would not outlive the list otherwise
  std::vector<FieldView> fields;

  FieldList() {
    // Reserve so that pointers into the storage stay valid.
    int32_storage.reserve(32);
    int64_storage.reserve(32);
    string_storage.reserve(32);
    name_storage.reserve(32);
  }

  void add_int32(const char* name, std::vector<int32_t> values) {
    int32_storage.push_back(std::move(values));
    const auto& stored = int32_storage.back();
    fields.push_back({name, FieldType::kInt32, stored.data(), static_cast<int64_t>(stored.size()), nullptr});
  }
  void add_int64(const char* name, std::vector<int64_t> values) {
    int64_storage.push_back(std::move(values));
    const auto& stored = int64_storage.back();
    fields.push_back({name, FieldType::kInt64, stored.data(), static_cast<int64_t>(stored.size()), nullptr});
  }
  void add_string(const char* name, const std::string& text) {
    string_storage.push_back(text);
    const auto& stored = string_storage.back();
    fields.push_back({name, FieldType::kChar, stored.data(), static_cast<int64_t>(stored.size()), nullptr});
  }
  FieldView* find(const char* name) {
    for (FieldView& field : fields) {
      if (std::string(field.name) == name) return &field;
    }
    return nullptr;
  }
  void remove(const char* name) {
    for (size_t i = 0; i < fields.size(); ++i) {
      if (std::string(fields[i].name) == name) {
        fields.erase(fields.begin() + static_cast<std::ptrdiff_t>(i));
        return;
      }
    }
  }
  std::string parse(DeformConvAttributes* attributes) const {
    return attributes_from_fields(kNode, fields.data(), static_cast<int64_t>(fields.size()), attributes);
  }
  std::string parse_error() const {
    DeformConvAttributes attributes;
    return parse(&attributes);
  }
};

// What TensorRT's ONNX parser passes for a typical node: int32 arrays plus
// the two routing strings.
FieldList onnx_parser_fields() {
  FieldList list;
  list.add_int32("kernel_shape", {3, 2});
  list.add_int32("strides", {2, 1});
  list.add_int32("pads", {1, 0, 2, 1});
  list.add_int32("dilations", {1, 3});
  list.add_int32("group", {2});
  list.add_int32("offset_group", {4});
  list.add_string("plugin_namespace", "dcn_deploy");
  list.add_string("plugin_version", "1");
  return list;
}

FieldList from_int64_fields(const std::vector<Int64Field>& serialized) {
  FieldList list;
  for (const Int64Field& field : serialized) {
    list.name_storage.push_back(field.name);  // `serialized` may be a temporary: the list keeps the name
    list.add_int64(list.name_storage.back().c_str(), field.values);
  }
  return list;
}

void check_parser_attributes(const DeformConvAttributes& attributes) {
  CHECK_EQ(attributes.kernel[0], 3);
  CHECK_EQ(attributes.kernel[1], 2);
  CHECK_EQ(attributes.stride[0], 2);
  CHECK_EQ(attributes.stride[1], 1);
  CHECK_EQ(attributes.pads[0], 1);
  CHECK_EQ(attributes.pads[1], 0);
  CHECK_EQ(attributes.pads[2], 2);
  CHECK_EQ(attributes.pads[3], 1);
  CHECK_EQ(attributes.dilation[0], 1);
  CHECK_EQ(attributes.dilation[1], 3);
  CHECK_EQ(attributes.group, 2);
  CHECK_EQ(attributes.offset_group, 4);
}

}  // namespace

TEST(onnx_parser_int32_fields_are_read) {
  DeformConvAttributes attributes;
  CHECK_EQ(onnx_parser_fields().parse(&attributes), std::string());
  check_parser_attributes(attributes);
}

TEST(int64_fields_are_read) {
  FieldList list;
  list.add_int64("kernel_shape", {3, 2});
  list.add_int64("strides", {2, 1});
  list.add_int64("pads", {1, 0, 2, 1});
  list.add_int64("dilations", {1, 3});
  list.add_int64("group", {2});
  list.add_int64("offset_group", {4});
  DeformConvAttributes attributes;
  CHECK_EQ(list.parse(&attributes), std::string());
  check_parser_attributes(attributes);
}

TEST(mixed_int32_int64_any_order) {
  FieldList list;
  list.add_int64("offset_group", {4});
  list.add_string("plugin_version", "1");
  list.add_int32("pads", {1, 0, 2, 1});
  list.add_int64("kernel_shape", {3, 2});
  list.add_int32("group", {2});
  list.add_int64("dilations", {1, 3});
  list.add_int32("strides", {2, 1});
  DeformConvAttributes attributes;
  CHECK_EQ(list.parse(&attributes), std::string());
  check_parser_attributes(attributes);
}

TEST(string_fields_are_optional_and_ignored) {
  FieldList list = onnx_parser_fields();
  list.remove("plugin_namespace");
  list.remove("plugin_version");
  DeformConvAttributes attributes;
  CHECK_EQ(list.parse(&attributes), std::string());
  check_parser_attributes(attributes);

  // Their content does not matter (the registry has already routed the node).
  FieldList other = onnx_parser_fields();
  other.find("plugin_version")->length = 0;
  CHECK_EQ(other.parse_error(), std::string());
}

TEST(round_trip_through_serialisation) {
  DeformConvAttributes original;
  CHECK_EQ(onnx_parser_fields().parse(&original), std::string());
  const std::vector<Int64Field> serialized = attributes_to_fields(original);
  CHECK_EQ(static_cast<int>(serialized.size()), kNumAttributeFields);
  for (int i = 0; i < kNumAttributeFields && i < static_cast<int>(serialized.size()); ++i) {
    CHECK_EQ(serialized[static_cast<size_t>(i)].name, std::string(kAttributeFields[i].name));
    CHECK_EQ(static_cast<int64_t>(serialized[static_cast<size_t>(i)].values.size()), kAttributeFields[i].length);
  }
  DeformConvAttributes restored;
  CHECK_EQ(from_int64_fields(serialized).parse(&restored), std::string());
  check_parser_attributes(restored);
  CHECK(attributes_to_fields(restored)[2].values == (std::vector<int64_t>{1, 0, 2, 1}));
}

TEST(round_trip_large_values) {
  DeformConvAttributes original;
  original.kernel[0] = kMaxSpatialExtent;
  original.kernel[1] = 1;
  original.pads[3] = kMaxSpatialExtent;
  original.group = int64_t{1} << 40;  // Beyond int32: only int64 fields carry it.
  DeformConvAttributes restored;
  CHECK_EQ(from_int64_fields(attributes_to_fields(original)).parse(&restored), std::string());
  CHECK_EQ(restored.kernel[0], kMaxSpatialExtent);
  CHECK_EQ(restored.pads[3], kMaxSpatialExtent);
  CHECK_EQ(restored.group, int64_t{1} << 40);
}

TEST(describe_lists_every_attribute) {
  DeformConvAttributes attributes;
  CHECK_EQ(onnx_parser_fields().parse(&attributes), std::string());
  CHECK_EQ(describe_attributes(attributes),
           std::string("kernel_shape=[3, 2] strides=[2, 1] pads=[1, 0, 2, 1] dilations=[1, 3] group=2 "
                       "offset_group=4"));
}

TEST(every_missing_field_is_named) {
  for (const AttributeFieldSpec& spec : kAttributeFields) {
    FieldList list = onnx_parser_fields();
    list.remove(spec.name);
    const std::string error = list.parse_error();
    CHECK_CONTAINS(error, "DcnDeformConv node '" + kNode + "'");
    CHECK_CONTAINS(error, std::string("plugin field '") + spec.name + "' is missing");
  }
  FieldList empty;
  CHECK_CONTAINS(empty.parse_error(), "plugin field 'kernel_shape' is missing");
}

TEST(every_duplicated_field_is_named) {
  for (const AttributeFieldSpec& spec : kAttributeFields) {
    FieldList list = onnx_parser_fields();
    std::vector<int64_t> values(static_cast<size_t>(spec.length), 1);
    list.add_int64(spec.name, values);
    CHECK_CONTAINS(list.parse_error(), std::string("plugin field '") + spec.name + "' is given more than once");
  }
  FieldList list = onnx_parser_fields();
  list.add_string("plugin_version", "1");
  CHECK_CONTAINS(list.parse_error(), "plugin field 'plugin_version' is given more than once");
}

TEST(every_wrong_type_is_named) {
  for (const AttributeFieldSpec& spec : kAttributeFields) {
    FieldList as_float = onnx_parser_fields();
    FieldView* field = as_float.find(spec.name);
    field->type = FieldType::kOther;
    field->type_label = "kFLOAT32";
    CHECK_CONTAINS(as_float.parse_error(),
                   std::string("plugin field '") + spec.name + "' has type kFLOAT32, expected kINT32 or kINT64");

    FieldList as_string = onnx_parser_fields();
    as_string.find(spec.name)->type = FieldType::kChar;
    CHECK_CONTAINS(as_string.parse_error(), std::string("plugin field '") + spec.name + "' has type kCHAR");
  }
  FieldList unlabeled = onnx_parser_fields();
  unlabeled.find("group")->type = FieldType::kOther;
  CHECK_CONTAINS(unlabeled.parse_error(), "plugin field 'group' has type an unsupported type");

  FieldList string_as_int = onnx_parser_fields();
  string_as_int.remove("plugin_namespace");
  string_as_int.add_int32("plugin_namespace", {1});
  CHECK_CONTAINS(string_as_int.parse_error(), "plugin field 'plugin_namespace' has type kINT32, expected kCHAR");
}

TEST(every_wrong_length_is_named) {
  for (const AttributeFieldSpec& spec : kAttributeFields) {
    for (int64_t delta : {int64_t{-1}, int64_t{1}}) {
      FieldList list = onnx_parser_fields();
      list.remove(spec.name);
      std::vector<int32_t> values(static_cast<size_t>(spec.length + delta), 1);
      list.add_int32(spec.name, values);
      const std::string error = list.parse_error();
      CHECK_CONTAINS(error, std::string("plugin field '") + spec.name + "' has " + std::to_string(spec.length + delta));
      CHECK_CONTAINS(error, "expected " + std::to_string(spec.length));
    }
  }
  FieldList negative = onnx_parser_fields();
  negative.find("pads")->length = -4;
  CHECK_CONTAINS(negative.parse_error(), "plugin field 'pads' has a negative length -4");

  FieldList null_data = onnx_parser_fields();
  null_data.find("strides")->data = nullptr;
  CHECK_CONTAINS(null_data.parse_error(), "plugin field 'strides' has no data");
}

TEST(every_out_of_range_value_is_named) {
  struct Case {
    const char* name;
    std::vector<int32_t> values;
    const char* expected;
  };
  const Case cases[] = {
      {"kernel_shape", {0, 3}, "attribute 'kernel_shape' values must be >= 1, got [0, 3]"},
      {"strides", {1, -2}, "attribute 'strides' values must be >= 1"},
      {"pads", {0, 0, -1, 0}, "attribute 'pads' values must be >= 0"},
      {"dilations", {0, 1}, "attribute 'dilations' values must be >= 1"},
      {"group", {0}, "attribute 'group' must be >= 1, got 0"},
      {"offset_group", {-3}, "attribute 'offset_group' must be >= 1, got -3"},
  };
  for (const Case& test_case : cases) {
    FieldList list = onnx_parser_fields();
    list.remove(test_case.name);
    list.add_int32(test_case.name, test_case.values);
    const std::string error = list.parse_error();
    CHECK_CONTAINS(error, "DcnDeformConv node '" + kNode + "'");
    CHECK_CONTAINS(error, test_case.expected);
  }
  // int64 values beyond the supported extent.
  FieldList huge = onnx_parser_fields();
  huge.remove("kernel_shape");
  huge.add_int64("kernel_shape", {3, kMaxSpatialExtent + 1});
  CHECK_CONTAINS(huge.parse_error(), "attribute 'kernel_shape' values must be <= ");
  FieldList huge_pad = onnx_parser_fields();
  huge_pad.remove("pads");
  huge_pad.add_int64("pads", {0, int64_t{1} << 40, 0, 0});
  CHECK_CONTAINS(huge_pad.parse_error(), "attribute 'pads' values must be <= ");
}

TEST(unknown_and_unnamed_fields_are_rejected) {
  FieldList typo = onnx_parser_fields();
  typo.add_int32("stride", {1, 1});
  const std::string error = typo.parse_error();
  CHECK_CONTAINS(error, "unknown plugin field 'stride'");
  CHECK_CONTAINS(error, "kernel_shape, strides, pads, dilations, group, offset_group");

  FieldList unnamed = onnx_parser_fields();
  unnamed.fields[3].name = nullptr;
  CHECK_CONTAINS(unnamed.parse_error(), "plugin field #3 has no name");
}

TEST(invalid_field_list) {
  DeformConvAttributes attributes;
  CHECK_CONTAINS(attributes_from_fields(kNode, nullptr, 2, &attributes), "invalid plugin field list");
  CHECK_CONTAINS(attributes_from_fields(kNode, nullptr, -1, &attributes), "invalid plugin field list");
  CHECK_CONTAINS(attributes_from_fields(kNode, nullptr, 0, &attributes), "plugin field 'kernel_shape' is missing");
}

TEST(failed_parse_leaves_attributes_untouched) {
  DeformConvAttributes attributes;
  attributes.group = 7;
  FieldList list = onnx_parser_fields();
  list.remove("pads");
  CHECK(!list.parse(&attributes).empty());
  CHECK_EQ(attributes.group, 7);
  CHECK_EQ(attributes.kernel[0], 1);
}

TEST(input_layout_by_count_and_rank) {
  InputLayout layout;
  const int32_t three[] = {4, 4, 4};
  CHECK_EQ(resolve_input_layout(kNode, 3, three, &layout), std::string());
  CHECK_EQ(layout.num_inputs, 3);
  CHECK_EQ(layout.bias_index, -1);
  CHECK_EQ(layout.mask_index, -1);

  const int32_t with_bias[] = {4, 4, 4, 1};
  CHECK_EQ(resolve_input_layout(kNode, 4, with_bias, &layout), std::string());
  CHECK_EQ(layout.num_inputs, 4);
  CHECK_EQ(layout.bias_index, 3);
  CHECK_EQ(layout.mask_index, -1);

  const int32_t with_mask[] = {4, 4, 4, 4};
  CHECK_EQ(resolve_input_layout(kNode, 4, with_mask, &layout), std::string());
  CHECK_EQ(layout.bias_index, -1);
  CHECK_EQ(layout.mask_index, 3);

  const int32_t both[] = {4, 4, 4, 1, 4};
  CHECK_EQ(resolve_input_layout(kNode, 5, both, &layout), std::string());
  CHECK_EQ(layout.num_inputs, 5);
  CHECK_EQ(layout.bias_index, 3);
  CHECK_EQ(layout.mask_index, 4);
}

TEST(input_layout_errors) {
  InputLayout layout;
  layout.num_inputs = 42;
  const int32_t ranks[] = {4, 4, 4, 4, 4, 4};
  CHECK_CONTAINS(resolve_input_layout(kNode, 2, ranks, &layout), "expects 3 to 5 inputs");
  CHECK_CONTAINS(resolve_input_layout(kNode, 6, ranks, &layout), "got 6");
  CHECK_EQ(layout.num_inputs, 42);

  const int32_t bad_x[] = {3, 4, 4};
  CHECK_CONTAINS(resolve_input_layout(kNode, 3, bad_x, &layout), "input X must be 4-D [N, C, H, W], got rank 3");
  const int32_t bad_offset[] = {4, 4, 5};
  CHECK_CONTAINS(resolve_input_layout(kNode, 3, bad_offset, &layout), "offset must be 4-D");
  const int32_t bad_fourth[] = {4, 4, 4, 2};
  const std::string error = resolve_input_layout(kNode, 4, bad_fourth, &layout);
  CHECK_CONTAINS(error, "DcnDeformConv node '" + kNode + "'");
  CHECK_CONTAINS(error, "4th input must be bias B [M] (rank 1) or mask");
  const int32_t swapped[] = {4, 4, 4, 4, 1};
  CHECK_CONTAINS(resolve_input_layout(kNode, 5, swapped, &layout), "bias B (input 4) must be 1-D [M], got rank 4");
  const int32_t bad_mask[] = {4, 4, 4, 1, 3};
  CHECK_CONTAINS(resolve_input_layout(kNode, 5, bad_mask, &layout), "mask (input 5) must be 4-D");
  CHECK_CONTAINS(resolve_input_layout(kNode, 3, nullptr, &layout), "input ranks are missing");
}

// The bad-input catalogue of the plugin fields (tests/bad_inputs/test_plugin_fields.py runs each case by
// id, `test_fields --case ID`, and checks its message; `--list` prints the ids). A case builds a field
// list as TensorRT's ONNX parser would pass it (build phase) or as the plugin serialised it (engine
// deserialisation, int64 fields) and damages it; the parse must fail with a message naming the field.
namespace {

struct FieldCase {
  const char* id;
  std::function<std::string()> run;  // the parse's error message ("" would be a failure to reject)
};

FieldList serialized_fields() {
  DeformConvAttributes attributes;
  onnx_parser_fields().parse(&attributes);
  return from_int64_fields(attributes_to_fields(attributes));
}

std::string replace_int32(const char* name, std::vector<int32_t> values) {
  FieldList list = onnx_parser_fields();
  list.remove(name);
  list.add_int32(name, std::move(values));
  return list.parse_error();
}

std::string replace_serialized(const char* name, std::vector<int64_t> values) {
  FieldList list = serialized_fields();
  list.remove(name);
  list.add_int64(name, std::move(values));
  return list.parse_error();
}

const std::vector<FieldCase>& field_cases() {
  static const std::vector<FieldCase> cases = {
      {"missing_kernel_shape", [] { FieldList l = onnx_parser_fields(); l.remove("kernel_shape"); return l.parse_error(); }},
      {"missing_offset_group", [] { FieldList l = onnx_parser_fields(); l.remove("offset_group"); return l.parse_error(); }},
      {"strides_as_float32", [] {
         FieldList l = onnx_parser_fields();
         l.find("strides")->type = FieldType::kOther;
         l.find("strides")->type_label = "kFLOAT32";
         return l.parse_error();
       }},
      {"group_as_string", [] { FieldList l = onnx_parser_fields(); l.find("group")->type = FieldType::kChar; return l.parse_error(); }},
      {"pads_three_values", [] { return replace_int32("pads", {1, 1, 1}); }},
      {"dilations_one_value", [] { return replace_int32("dilations", {1}); }},
      {"pads_negative_length", [] { FieldList l = onnx_parser_fields(); l.find("pads")->length = -4; return l.parse_error(); }},
      {"strides_null_data", [] { FieldList l = onnx_parser_fields(); l.find("strides")->data = nullptr; return l.parse_error(); }},
      {"group_twice", [] { FieldList l = onnx_parser_fields(); l.add_int32("group", {1}); return l.parse_error(); }},
      {"unknown_field_stride", [] { FieldList l = onnx_parser_fields(); l.add_int32("stride", {1, 1}); return l.parse_error(); }},
      {"unnamed_field", [] { FieldList l = onnx_parser_fields(); l.fields[2].name = nullptr; return l.parse_error(); }},
      {"zero_stride", [] { return replace_int32("strides", {0, 1}); }},
      {"plugin_namespace_as_int", [] {
         FieldList l = onnx_parser_fields();
         l.remove("plugin_namespace");
         l.add_int32("plugin_namespace", {1});
         return l.parse_error();
       }},
      {"null_field_list", [] {
         DeformConvAttributes attributes;
         return attributes_from_fields(kNode, nullptr, 3, &attributes);
       }},
      // Serialised (int64) fields, corrupted as a damaged engine file would bring them back.
      {"serialized_negative_kernel", [] { return replace_serialized("kernel_shape", {-7, 3}); }},
      {"serialized_truncated_pads", [] { return replace_serialized("pads", {1, 0}); }},
      {"serialized_huge_pad", [] { return replace_serialized("pads", {0, int64_t{1} << 40, 0, 0}); }},
      {"serialized_zero_group", [] { return replace_serialized("group", {0}); }},
      {"serialized_last_field_lost", [] { FieldList l = serialized_fields(); l.fields.pop_back(); return l.parse_error(); }},
      {"serialized_name_garbled", [] {
         FieldList l = serialized_fields();
         l.fields[3].name = "dil\xff\xfetions";
         return l.parse_error();
       }},
      {"serialized_count_too_large", [] {
         FieldList l = serialized_fields();
         l.find("dilations")->length = int64_t{1} << 40;
         return l.parse_error();
       }},
  };
  return cases;
}

}  // namespace

TEST(catalogue_cases_are_all_rejected_naming_the_node) {
  for (const FieldCase& field_case : field_cases()) {
    const std::string error = field_case.run();
    if (error.empty()) test_harness::report_failure(__FILE__, __LINE__, std::string(field_case.id) + " was accepted");
    CHECK_CONTAINS(error, "DcnDeformConv node '" + kNode + "'");
  }
}

// `test_fields`: every TEST; `test_fields --list`: the catalogue's ids; `test_fields --case ID`: that case's
// message on stdout (exit 0 when the fields were rejected, 1 when accepted, 2 for an unknown id).
int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "--list") == 0) {
    for (const FieldCase& field_case : field_cases()) std::printf("%s\n", field_case.id);
    return 0;
  }
  if (argc == 3 && std::strcmp(argv[1], "--case") == 0) {
    for (const FieldCase& field_case : field_cases()) {
      if (std::strcmp(argv[2], field_case.id) != 0) continue;
      const std::string error = field_case.run();
      std::printf("%s\n", error.c_str());
      return error.empty() ? 1 : 0;
    }
    std::fprintf(stderr, "test_fields: no catalogue case '%s' (--list names them)\n", argv[2]);
    return 2;
  }
  return test_harness::run_all_tests();
}
