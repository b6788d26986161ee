// TensorRT's PluginField as the core's neutral FieldView (core/fields.h),
// which does the parsing; only the type mapping knows TensorRT.
#pragma once

#include <NvInferRuntime.h>

#include "core/fields.h"

namespace dcn_deploy::tensorrt {

// PluginField -> FieldView (type mapped, TensorRT's type name kept for messages).
FieldView to_field_view(const nvinfer1::PluginField& field);

}  // namespace dcn_deploy::tensorrt
