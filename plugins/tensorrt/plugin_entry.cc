// Entry points TensorRT looks up when it loads the plugin library
// (IPluginRegistry::loadLibrary, trtexec --dynamicPlugins, polygraphy --plugins).
#include <NvInferRuntime.h>

#include <cstdint>

#include "tensorrt/plugin.h"
#include "tensorrt/logging.h"

// TENSORRTAPI only exports when TENSORRT_BUILD_LIB is defined (TensorRT's own
// build); our exports are explicit. exports.map keeps everything else local.
#define DCN_TRT_EXPORT __attribute__((visibility("default")))

extern "C" DCN_TRT_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
  try {
    using dcn_deploy::tensorrt::DcnDeformConvPluginCreator;
    using dcn_deploy::tensorrt::PluginMode;
    static DcnDeformConvPluginCreator float_creator(PluginMode::kFloat);
    static DcnDeformConvPluginCreator int8_creator(PluginMode::kInt8);
    static DcnDeformConvPluginCreator requantized_creator(PluginMode::kInt8Requantized);
    static nvinfer1::IPluginCreatorInterface* const creators[] = {&float_creator, &int8_creator,
                                                                  &requantized_creator};
    nbCreators = static_cast<int32_t>(sizeof(creators) / sizeof(creators[0]));
    return creators;
  } catch (...) {
    dcn_deploy::tensorrt::log_message(nvinfer1::ILogger::Severity::kERROR,
                                      "DcnDeformConv plugin: could not create the plugin creator");
  }
  nbCreators = 0;
  return nullptr;
}

extern "C" DCN_TRT_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder) {
  dcn_deploy::tensorrt::set_logger_finder(finder);
}

// The TensorRT headers this library was compiled against, as text in the file:
// dcn_deploy (backends/tensorrt/common.py, plugin_library_layout) reads it from
// the bytes without loading the library, and refuses a library whose interface
// layout (TensorRT major version) is not the one of the TensorRT it drives.
#define DCN_TRT_STRINGIFY_(x) #x
#define DCN_TRT_STRINGIFY(x) DCN_TRT_STRINGIFY_(x)
extern "C" __attribute__((used)) const char dcn_deploy_trt_headers[] =
    "DCN_DEPLOY_TRT_HEADERS=" DCN_TRT_STRINGIFY(NV_TENSORRT_MAJOR) "." DCN_TRT_STRINGIFY(NV_TENSORRT_MINOR) ";";
