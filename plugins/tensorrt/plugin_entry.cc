// Entry points TensorRT looks up when it loads the plugin library
// (IPluginRegistry::loadLibrary, trtexec --dynamicPlugins, polygraphy --plugins),
// and the registration of the same creators when the library is merely
// dlopen'ed (Triton's --backend-config=tensorrt,plugins=..., LD_PRELOAD after
// TensorRT, ctypes.CDLL), which calls no entry point.
//
// How the two routes share the process's registry (TensorRT 10.x/11.x and
// TensorRT-RTX semantics, NvInferRuntimeCommon.h): registerCreator refuses a
// creator whose name/version/namespace is already registered, and loadLibrary
// fails (nullptr) when any creator the library's getCreators returns is. So:
//
//   route                              what happens here
//   dlopen only                        the load-time constructor registers the
//                                      three creators with the registry of the
//                                      TensorRT already in the process
//   loadLibrary (first or later load)  getCreators first deregisters what the
//                                      constructor registered, then hands the
//                                      creators to loadLibrary, which registers
//                                      them as the library's (one of each;
//                                      deregisterLibrary removes them)
//   no TensorRT in the process         nothing is registered at load (LD_PRELOAD
//                                      before TensorRT, the C++ test harness);
//                                      getCreators works as always
//   dlclose of a dlopen-only load,     an exit handler deregisters what the
//   or process exit                    constructor registered
//
// The library never links libnvinfer / libtensorrt_rtx: the registry comes
// from getPluginRegistry of a TensorRT library that is already loaded, found by
// dlsym(RTLD_DEFAULT) or dlopen(RTLD_NOLOAD) of the sonames whose interface
// layout this build has (NV_TENSORRT_MAJOR), never by loading one.
#include <NvInferRuntime.h>
#include <dlfcn.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "tensorrt/logging.h"
#include "tensorrt/plugin.h"

// TENSORRTAPI only exports when TENSORRT_BUILD_LIB is defined (TensorRT's own
// build); our exports are explicit. exports.map keeps everything else local.
#define DCN_TRT_EXPORT __attribute__((visibility("default")))

namespace dcn_deploy::tensorrt {
namespace {

constexpr int32_t kNumCreators = 3;

// Created once and never destroyed: the registry may still hold pointers to
// them while the process exits, and static destructors of a dlclose'd library
// run in no order we control relative to the unload-time deregistration.
nvinfer1::IPluginCreatorInterface* const* creators() {
  static nvinfer1::IPluginCreatorInterface* const* const all = [] {
    static nvinfer1::IPluginCreatorInterface* table[kNumCreators] = {
        new DcnDeformConvPluginCreator(PluginMode::kFloat),
        new DcnDeformConvPluginCreator(PluginMode::kInt8),
        new DcnDeformConvPluginCreator(PluginMode::kInt8Requantized),
    };
    return table;
  }();
  return all;
}

using RegistryGetter = nvinfer1::IPluginRegistry* (*)();

// TensorRT libraries whose interfaces have this build's layout, by the start of
// their file name. TensorRT-RTX has the TensorRT 11 layout.
#if NV_TENSORRT_MAJOR >= 11
constexpr const char* kSonames[] = {"libnvinfer.so.11", "libtensorrt_rtx.so.1", "libtensorrt_rtx.so"};
#else
constexpr const char* kSonames[] = {"libnvinfer.so.10"};
#endif

// Whether the library holding `symbol` is a TensorRT of this build's layout
// (an unversioned libnvinfer.so is asked its version).
bool fits_layout(void* symbol) {
  Dl_info info{};
  if (symbol == nullptr || dladdr(symbol, &info) == 0 || info.dli_fname == nullptr) return false;
  const char* slash = std::strrchr(info.dli_fname, '/');
  const std::string file = slash ? slash + 1 : info.dli_fname;
  for (const char* soname : kSonames) {
    if (file.rfind(soname, 0) == 0) return true;
  }
  if (file == "libnvinfer.so") {
    void* handle = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
    if (handle == nullptr) return false;
    auto version = reinterpret_cast<int32_t (*)()>(dlsym(handle, "getInferLibVersion"));
    const bool fits = version != nullptr && version() / 10000 == NV_TENSORRT_MAJOR;
    dlclose(handle);
    return fits;
  }
  return false;
}

// The registry of the TensorRT already loaded in this process, or nullptr.
nvinfer1::IPluginRegistry* loaded_registry() {
  void* symbol = dlsym(RTLD_DEFAULT, "getPluginRegistry");
  if (!fits_layout(symbol)) {
    // TensorRT loaded RTLD_LOCAL (Python's ctypes, Triton's backends): not in the
    // global scope, but dlopen(RTLD_NOLOAD) finds it without loading anything.
    symbol = nullptr;
    for (const char* soname : kSonames) {
      void* handle = dlopen(soname, RTLD_LAZY | RTLD_NOLOAD);
      if (handle == nullptr) continue;
      void* candidate = dlsym(handle, "getPluginRegistry");
      dlclose(handle);  // drops only the reference RTLD_NOLOAD added
      if (fits_layout(candidate)) {
        symbol = candidate;
        break;
      }
    }
  }
  return symbol ? reinterpret_cast<RegistryGetter>(symbol)() : nullptr;
}

struct LoadTimeRegistration {
  std::mutex mutex;
  nvinfer1::IPluginRegistry* registry = nullptr;
  bool registered[kNumCreators] = {};
};

LoadTimeRegistration& load_time() {
  static LoadTimeRegistration* const state = new LoadTimeRegistration;  // never destroyed, as creators()
  return *state;
}

// Deregisters what the constructor registered (caller holds the mutex).
void deregister_load_time(LoadTimeRegistration& state) {
  for (int32_t i = 0; i < kNumCreators; ++i) {
    if (state.registered[i] && !state.registry->deregisterCreator(*creators()[i])) {
      log_message(nvinfer1::ILogger::Severity::kWARNING,
                  "DcnDeformConv plugin: could not deregister a creator registered at load time");
    }
    state.registered[i] = false;
  }
  state.registry = nullptr;
}

// Registered with atexit (glibc: __cxa_atexit with this library's handle) right after the registry was
// obtained, so it runs at dlclose of this library and, at process exit, before the registry's own static
// destructor (handlers run in reverse order of registration). A __attribute__((destructor)) would run
// after exit() destroyed the registry, and crash.
void deregister_at_exit() noexcept {
  try {
    LoadTimeRegistration& state = load_time();
    std::lock_guard<std::mutex> lock(state.mutex);
    if (state.registry != nullptr) deregister_load_time(state);
  } catch (...) {
  }
}

__attribute__((constructor)) void register_at_load() noexcept {
  try {
    nvinfer1::IPluginRegistry* registry = loaded_registry();
    if (registry == nullptr) return;  // no TensorRT yet: only getCreators registers
    LoadTimeRegistration& state = load_time();
    std::lock_guard<std::mutex> lock(state.mutex);
    state.registry = registry;
    for (int32_t i = 0; i < kNumCreators; ++i) {
      nvinfer1::IPluginCreatorInterface* creator = creators()[i];
      auto* v3 = static_cast<DcnDeformConvPluginCreator*>(creator);
      if (registry->getCreator(v3->getPluginName(), v3->getPluginVersion(), v3->getPluginNamespace()) != nullptr) {
        // Another copy of this library (or another path to it) got there first.
        log_message(nvinfer1::ILogger::Severity::kWARNING,
                    (std::string("DcnDeformConv plugin: creator ") + v3->getPluginName() +
                     " is already registered; this library's copy is not")
                        .c_str());
        continue;
      }
      state.registered[i] = registry->registerCreator(*creator, kPluginNamespace);
    }
    if (std::atexit(deregister_at_exit) != 0) {
      log_message(nvinfer1::ILogger::Severity::kWARNING,
                  "DcnDeformConv plugin: could not register the exit handler that deregisters the creators");
    }
  } catch (...) {
    log_message(nvinfer1::ILogger::Severity::kERROR,
                "DcnDeformConv plugin: registering the creators at load time failed");
  }
}

}  // namespace
}  // namespace dcn_deploy::tensorrt

extern "C" DCN_TRT_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
  try {
    using namespace dcn_deploy::tensorrt;
    nvinfer1::IPluginCreatorInterface* const* all = creators();
    // The caller (loadLibrary) registers these itself and fails if any is registered already.
    LoadTimeRegistration& state = load_time();
    std::lock_guard<std::mutex> lock(state.mutex);
    if (state.registry != nullptr) deregister_load_time(state);
    nbCreators = kNumCreators;
    return all;
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
