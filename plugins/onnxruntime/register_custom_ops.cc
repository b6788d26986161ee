// Entry point ONNX Runtime looks up after loading libdcn_deploy_ort.so
// (SessionOptions.register_custom_ops_library in Python,
// RegisterCustomOpsLibrary in C/C++). The only exported symbol.
#include <string>

#include "onnxruntime/int8_op.h"
#include "onnxruntime/float_op.h"

namespace {

// Created once and kept for the life of the process: sessions built from any
// SessionOptions that received the domain keep pointers to it and to the ops.
OrtCustomOpDomain* shared_domain() {
  static OrtCustomOpDomain* const domain = [] {
    Ort::CustomOpDomain owned(dcn_deploy::kOpDomain);
    // One registration per float32/float16 combination of the inputs (see deform_conv_ort_op.h).
    for (const dcn_deploy::DeformConvOrtOp& op : dcn_deploy::deform_conv_ort_ops()) owned.Add(&op);
    // INT8 forms: float32 Y and int8 Yq (see deform_conv_int8_ort_op.h).
    for (const dcn_deploy::DeformConvInt8OrtOp& op : dcn_deploy::deform_conv_int8_ort_ops()) owned.Add(&op);
    return owned.release();
  }();
  return domain;
}

// An error status for a runtime that lacks the API version we were built for.
OrtStatus* api_version_error(const OrtApiBase* api_base) {
  if (api_base == nullptr) return nullptr;  // Nothing to report through.
  const OrtApi* oldest_api = api_base->GetApi(1);
  if (oldest_api == nullptr) return nullptr;
  const std::string message = std::string("dcn_deploy: libdcn_deploy_ort was built against ONNX Runtime API ") +
                              std::to_string(ORT_API_VERSION) + " but this ONNX Runtime (" +
                              api_base->GetVersionString() + ") does not provide it; use a newer ONNX Runtime";
  return oldest_api->CreateStatus(ORT_FAIL, message.c_str());
}

}  // namespace

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  const OrtApi* api = api_base ? api_base->GetApi(ORT_API_VERSION) : nullptr;
  if (api == nullptr) return api_version_error(api_base);
  // Set once: later calls would only write the same pointer, but racing writes are still a data race.
  static const bool api_initialized = (Ort::InitApi(api), true);
  (void)api_initialized;
  try {
    return api->AddCustomOpDomain(options, shared_domain());
  } catch (const Ort::Exception& error) {
    return api->CreateStatus(error.GetOrtErrorCode(), error.what());
  } catch (const std::exception& error) {
    return api->CreateStatus(ORT_FAIL, error.what());
  }
}
