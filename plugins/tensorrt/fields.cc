#include "tensorrt/fields.h"

namespace dcn_deploy::tensorrt {
namespace {

using nvinfer1::PluginFieldType;

const char* plugin_field_type_name(PluginFieldType type) {
  switch (type) {
    case PluginFieldType::kFLOAT16:
      return "kFLOAT16";
    case PluginFieldType::kFLOAT32:
      return "kFLOAT32";
    case PluginFieldType::kFLOAT64:
      return "kFLOAT64";
    case PluginFieldType::kINT8:
      return "kINT8";
    case PluginFieldType::kINT16:
      return "kINT16";
    case PluginFieldType::kINT32:
      return "kINT32";
    case PluginFieldType::kCHAR:
      return "kCHAR";
    case PluginFieldType::kDIMS:
      return "kDIMS";
    case PluginFieldType::kUNKNOWN:
      return "kUNKNOWN";
    case PluginFieldType::kBF16:
      return "kBF16";
    case PluginFieldType::kINT64:
      return "kINT64";
    case PluginFieldType::kFP8:
      return "kFP8";
    case PluginFieldType::kINT4:
      return "kINT4";
    case PluginFieldType::kFP4:
      return "kFP4";
  }
  return "an unknown PluginFieldType";
}

}  // namespace

FieldView to_field_view(const nvinfer1::PluginField& field) {
  FieldView view;
  view.name = field.name;
  view.data = field.data;
  view.length = field.length;
  view.type_label = plugin_field_type_name(field.type);
  switch (field.type) {
    case PluginFieldType::kINT32:
      view.type = FieldType::kInt32;
      break;
    case PluginFieldType::kINT64:
      view.type = FieldType::kInt64;
      break;
    case PluginFieldType::kCHAR:
      view.type = FieldType::kChar;
      break;
    case PluginFieldType::kFLOAT32:
      view.type = FieldType::kFloat32;
      break;
    default:
      view.type = FieldType::kOther;
      break;
  }
  return view;
}

}  // namespace dcn_deploy::tensorrt
