// The plugin creators, one per mode: the fields TensorRT's ONNX parser
// fills from the node's attributes, and createPlugin.
#include <exception>
#include <string>
#include <vector>

#include "core/fields.h"
#include "core/text.h"
#include "tensorrt/fields.h"
#include "tensorrt/logging.h"
#include "tensorrt/plugin.h"

namespace dcn_deploy::tensorrt {
namespace {

using nvinfer1::PluginFieldType;

std::string display_name(const char* name) {
  return (name == nullptr || *name == '\0') ? std::string(kPluginName) : std::string(name);
}

void log_creation_failure(const char* name, const char* what) noexcept {
  try {
    log_error(node_error(display_name(name), concat("createPlugin failed: ", what)));
  } catch (...) {
    log_message(nvinfer1::ILogger::Severity::kERROR, "DcnDeformConv plugin: createPlugin failed (out of memory)");
  }
}

}  // namespace

DcnDeformConvPluginCreator::DcnDeformConvPluginCreator(PluginMode mode) : mode_(mode) {
  // The fields TensorRT's ONNX parser looks up among the node's attributes
  // (it passes ONNX INT/INTS attributes as kINT32, kINT64 is accepted too;
  // FLOAT/FLOATS as kFLOAT32). w_scale holds M values; its listed length 1 is nominal.
  for (const AttributeFieldSpec& spec : kAttributeFields) {
    field_names_.emplace_back(spec.name, nullptr, PluginFieldType::kINT32, static_cast<int32_t>(spec.length));
  }
  const int scale_fields = mode == PluginMode::kInt8 ? 2 : mode == PluginMode::kInt8Requantized ? 3 : 0;
  for (int i = 0; i < scale_fields; ++i) {
    field_names_.emplace_back(kInt8ScaleFields[i], nullptr, PluginFieldType::kFLOAT32, 1);
  }
  field_collection_.nbFields = static_cast<int32_t>(field_names_.size());
  field_collection_.fields = field_names_.data();
}

nvinfer1::IPluginV3* DcnDeformConvPluginCreator::createPlugin(char const* name,
                                                              nvinfer1::PluginFieldCollection const* fc,
                                                              nvinfer1::TensorRTPhase phase) noexcept {
  try {
    const std::string layer_name = display_name(name);
    if (fc == nullptr) {
      log_error(node_error(layer_name, "createPlugin: no plugin field collection"));
      return nullptr;
    }
    if (fc->nbFields < 0 || (fc->nbFields > 0 && fc->fields == nullptr)) {
      log_error(node_error(layer_name, concat("createPlugin: invalid plugin field collection (", fc->nbFields,
                                              " fields)")));
      return nullptr;
    }
    std::vector<FieldView> views;
    views.reserve(static_cast<size_t>(fc->nbFields));
    for (int32_t i = 0; i < fc->nbFields; ++i) views.push_back(to_field_view(fc->fields[i]));
    DeformConvAttributes attributes;
    DeformConvInt8Scales scales;
    const int64_t count = static_cast<int64_t>(views.size());
    const std::string error =
        mode_ == PluginMode::kFloat
            ? attributes_from_fields(layer_name, views.data(), count, &attributes)
            : int8_fields_from_fields(layer_name, views.data(), count, mode_ == PluginMode::kInt8Requantized,
                                      &attributes, &scales);
    if (!error.empty()) {
      log_error(phase == nvinfer1::TensorRTPhase::kRUNTIME
                    ? concat(error, " (while deserialising an engine)")
                    : error);
      return nullptr;
    }
    return new DcnDeformConvPlugin(layer_name, attributes, mode_, scales);
  } catch (const std::exception& error) {
    log_creation_failure(name, error.what());
  } catch (...) {
    log_creation_failure(name, "unknown exception");
  }
  return nullptr;
}

nvinfer1::PluginFieldCollection const* DcnDeformConvPluginCreator::getFieldNames() noexcept {
  return &field_collection_;
}

char const* DcnDeformConvPluginCreator::getPluginName() const noexcept { return plugin_name(mode_); }
char const* DcnDeformConvPluginCreator::getPluginVersion() const noexcept { return kPluginVersion; }
char const* DcnDeformConvPluginCreator::getPluginNamespace() const noexcept { return kPluginNamespace; }

}  // namespace dcn_deploy::tensorrt
