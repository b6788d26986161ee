// Runs the items of a CPU driver (cpu/float_driver.h, cpu/int8_driver.h) on
// ONNX Runtime's intra-op thread pool. Both ops share this scaffolding: the
// drivers expose the same item interface (prepare_item_count /
// run_prepare_item, work_item_count / run_work_item with a scratch object).
#pragma once

#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <string>

#include "core/params.h"
#include "onnxruntime/kernel_support.h"

namespace dcn_deploy {

// Items are grouped into at most this many parallel chunks; each chunk
// reuses one scratch buffer.
constexpr int64_t kParallelChunks = 32;

// The work-item count asked of a CPU driver so small inputs still spread over
// ORT's intra-op threads. Not more: every work item streams all weights once,
// so a batch-1 input of few pixels (512x25x34: 850) split into 27 tiles of 32
// pixels ran about 5% slower than 18 tiles of 48 (1 and 2 threads).
constexpr int64_t kMinWorkItems = 16;

namespace parallel_items_detail {

template <typename Driver>
struct Job {
  const Driver* driver = nullptr;
  int64_t chunk_count = 0;
  std::atomic<bool> failed{false};
};

// One chunk of prepare items (channels-last copies). Called on ORT's thread
// pool: must not throw (run_prepare_item does not allocate).
template <typename Driver>
void run_prepare_chunk(void* user_data, size_t chunk) {
  auto* job = static_cast<Job<Driver>*>(user_data);
  const auto [begin, end] = chunk_items(job->driver->prepare_item_count(), job->chunk_count, chunk);
  for (int64_t item = begin; item < end; ++item) job->driver->run_prepare_item(item);
}

// One chunk of work items. Called on ORT's thread pool: must not throw.
template <typename Driver, typename Scratch>
void run_work_chunk(void* user_data, size_t chunk) {
  auto* job = static_cast<Job<Driver>*>(user_data);
  const auto [begin, end] = chunk_items(job->driver->work_item_count(), job->chunk_count, chunk);
  try {
    // Kept per thread across calls: a fresh buffer per chunk would be faulted
    // in and zero-filled on every call. Bounded by the largest tile run.
    thread_local Scratch scratch;
    for (int64_t item = begin; item < end; ++item) job->driver->run_work_item(item, scratch);
  } catch (...) {
    job->failed.store(true, std::memory_order_relaxed);
  }
}

}  // namespace parallel_items_detail

// Runs every prepare item of `driver` (none is fine).
template <typename Driver>
void run_prepare_items(const Ort::KernelContext& context, const Driver& driver) {
  if (driver.prepare_item_count() == 0) return;
  parallel_items_detail::Job<Driver> job;
  job.driver = &driver;
  job.chunk_count = std::min(driver.prepare_item_count(), kParallelChunks);
  context.ParallelFor(parallel_items_detail::run_prepare_chunk<Driver>, static_cast<size_t>(job.chunk_count), 0,
                      &job);
}

// Runs every work item of `driver`, each thread with its own Scratch; throws
// a NodeError naming the node if a scratch could not be allocated.
template <typename Scratch, typename Driver>
void run_work_items(const Ort::KernelContext& context, const Driver& driver, const std::string& node_label) {
  parallel_items_detail::Job<Driver> job;
  job.driver = &driver;
  job.chunk_count = std::min(driver.work_item_count(), kParallelChunks);
  context.ParallelFor(parallel_items_detail::run_work_chunk<Driver, Scratch>, static_cast<size_t>(job.chunk_count), 0,
                      &job);
  if (job.failed.load()) {
    throw NodeError(ORT_FAIL, node_error(node_label, "out of memory while computing the output"));
  }
}

}  // namespace dcn_deploy
