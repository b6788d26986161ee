// Helpers shared by the ONNX Runtime kernels of this library: errors as
// OrtStatus naming the node, attribute reading with clear messages, type names.
#pragma once

#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT

#include <cstdint>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "core/params.h"

namespace dcn_deploy {

// Inputs of every op of this library: X, W, offset, B (optional), mask (optional).
constexpr size_t kInputCount = 5;
constexpr const char* kInputNames[kInputCount] = {"X", "W", "offset", "B", "mask"};

// An error whose message already names the node.
class NodeError : public std::runtime_error {
 public:
  NodeError(OrtErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  OrtErrorCode code() const { return code_; }

 private:
  OrtErrorCode code_;
};

// Converts any exception escaping `body` into an OrtStatus naming the node.
template <typename Body>
OrtStatusPtr run_returning_status(const std::string& node_label, Body&& body) noexcept {
  const OrtApi& api = Ort::GetApi();
  try {
    body();
    return nullptr;
  } catch (const NodeError& error) {
    return api.CreateStatus(error.code(), error.what());
  } catch (const Ort::Exception& error) {
    return api.CreateStatus(error.GetOrtErrorCode(), node_error(node_label, error.what()).c_str());
  } catch (const std::bad_alloc&) {
    return api.CreateStatus(ORT_FAIL, node_error(node_label, "out of memory").c_str());
  } catch (const std::exception& error) {
    return api.CreateStatus(ORT_FAIL, node_error(node_label, error.what()).c_str());
  } catch (...) {
    return api.CreateStatus(ORT_FAIL, node_error(node_label, "unknown error").c_str());
  }
}

// True when the node carries the attribute, whatever its type.
bool attribute_exists(const OrtKernelInfo* info, const char* name);
int64_t read_int_attribute(const OrtKernelInfo* info, const std::string& node_label, const char* name);
std::vector<int64_t> read_ints_attribute(const OrtKernelInfo* info, const std::string& node_label, const char* name);
float read_float_attribute(const OrtKernelInfo* info, const std::string& node_label, const char* name);
std::vector<float> read_floats_attribute(const OrtKernelInfo* info, const std::string& node_label, const char* name);

// The six DeformConv attributes, checked by make_attributes.
DeformConvAttributes read_geometry_attributes(const OrtKernelInfo* info, const std::string& node_label);

// The node name, or a description by output name for unnamed nodes.
std::string make_node_label(const OrtKernelInfo* info);

std::string element_type_name(ONNXTensorElementDataType type);

// Items [first, second) of chunk `chunk` when `items` work items are dealt
// into `chunks` nearly equal chunks (the unit of ORT's ParallelFor).
inline std::pair<int64_t, int64_t> chunk_items(int64_t items, int64_t chunks, size_t chunk) {
  return {items * static_cast<int64_t>(chunk) / chunks, items * static_cast<int64_t>(chunk + 1) / chunks};
}

// True when input `index` of the node is a constant initializer.
bool input_is_constant(const OrtKernelInfo* info, size_t index);

// The packed forms of one node's constant weight, one per layout key (the
// packing may depend on the input shape through the kernel's channel block),
// each packed once on first use. Thread-safe: ONNX Runtime may run one kernel
// from several threads at once.
template <typename T>
class PackedWeightCache {
 public:
  // The entry for `key`; `pack(T* out)` fills `count` values when it is new.
  template <typename Pack>
  std::shared_ptr<const std::vector<T>> get(int64_t key, int64_t count, Pack&& pack) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& entry : entries_) {
      if (entry.first == key) return entry.second;
    }
    auto packed = std::make_shared<std::vector<T>>(static_cast<size_t>(count));
    pack(packed->data());
    entries_.emplace_back(key, packed);
    return packed;
  }

 private:
  std::mutex mutex_;
  std::vector<std::pair<int64_t, std::shared_ptr<const std::vector<T>>>> entries_;
};

}  // namespace dcn_deploy
