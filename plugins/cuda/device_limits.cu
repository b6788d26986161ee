// Limits of the current device (SM count, compute capability, opt-in shared
// memory per block), read once per device ordinal.
#include <cuda_runtime.h>

#include <atomic>
#include <mutex>
#include <string>

#include "cuda/plan.h"

namespace dcn_deploy::cuda {
namespace {

// Why a cache: a launch is on the hot path of every DCN layer, and a device's
// attributes never change.
constexpr int kCachedDevices = 64;
struct CachedLimits {
  std::atomic<bool> ready{false};
  DeviceLimits limits{};
};
CachedLimits g_device_limits[kCachedDevices];

}  // namespace

int query_device(DeviceLimits* device, std::string* message) {
  int ordinal = 0, sm_count = 0, major = 0, minor = 0, shared = 0;
  cudaError_t status = cudaGetDevice(&ordinal);
  const bool cacheable = status == cudaSuccess && ordinal >= 0 && ordinal < kCachedDevices;
  if (cacheable && g_device_limits[ordinal].ready.load(std::memory_order_acquire)) {
    *device = g_device_limits[ordinal].limits;
    return DCN_STATUS_OK;
  }
  if (status == cudaSuccess) status = cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, ordinal);
  if (status == cudaSuccess) status = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, ordinal);
  if (status == cudaSuccess) status = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, ordinal);
  if (status == cudaSuccess) {
    status = cudaDeviceGetAttribute(&shared, cudaDevAttrMaxSharedMemoryPerBlockOptin, ordinal);
  }
  if (status != cudaSuccess) {
    *message = node_error(kCallerName, std::string("kernel launch failed: ") + cudaGetErrorName(status) + ": " +
                                           cudaGetErrorString(status));
    return DCN_STATUS_CUDA_ERROR;
  }
  *device = DeviceLimits{sm_count, major * 10 + minor, static_cast<size_t>(shared)};
  if (cacheable) {  // Written once, under the lock; read only after `ready`.
    static std::mutex fill;
    const std::lock_guard<std::mutex> lock(fill);
    if (!g_device_limits[ordinal].ready.load(std::memory_order_relaxed)) {
      g_device_limits[ordinal].limits = *device;
      g_device_limits[ordinal].ready.store(true, std::memory_order_release);
    }
  }
  return DCN_STATUS_OK;
}

}  // namespace dcn_deploy::cuda
