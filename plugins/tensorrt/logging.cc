#include "tensorrt/logging.h"

#include <cstdio>
#include <mutex>

namespace dcn_deploy::tensorrt {
namespace {

std::mutex& finder_mutex() {
  static std::mutex mutex;
  return mutex;
}

nvinfer1::ILoggerFinder*& finder_slot() {
  static nvinfer1::ILoggerFinder* finder = nullptr;
  return finder;
}

nvinfer1::ILogger* current_logger() noexcept {
  try {
    std::lock_guard<std::mutex> lock(finder_mutex());
    nvinfer1::ILoggerFinder* finder = finder_slot();
    // findLogger() must be called from the thread of the plugin method: we are on it.
    return finder ? finder->findLogger() : nullptr;
  } catch (...) {
    return nullptr;
  }
}

const char* severity_label(nvinfer1::ILogger::Severity severity) {
  switch (severity) {
    case nvinfer1::ILogger::Severity::kINTERNAL_ERROR:
      return "INTERNAL_ERROR";
    case nvinfer1::ILogger::Severity::kERROR:
      return "ERROR";
    case nvinfer1::ILogger::Severity::kWARNING:
      return "WARNING";
    case nvinfer1::ILogger::Severity::kINFO:
      return "INFO";
    case nvinfer1::ILogger::Severity::kVERBOSE:
      return "VERBOSE";
  }
  return "LOG";
}

}  // namespace

void set_logger_finder(nvinfer1::ILoggerFinder* finder) noexcept {
  try {
    std::lock_guard<std::mutex> lock(finder_mutex());
    if (finder_slot() == nullptr && finder != nullptr) finder_slot() = finder;
  } catch (...) {
    // std::mutex::lock can only fail on resource exhaustion; logging stays on stderr then.
  }
}

void log_message(nvinfer1::ILogger::Severity severity, const char* message) noexcept {
  if (message == nullptr) return;
  if (nvinfer1::ILogger* logger = current_logger()) {
    logger->log(severity, message);
    return;
  }
  if (severity <= nvinfer1::ILogger::Severity::kWARNING) {
    std::fprintf(stderr, "[dcn_deploy TensorRT plugin] %s: %s\n", severity_label(severity), message);
  }
}

void log_error(const std::string& message) noexcept { log_message(nvinfer1::ILogger::Severity::kERROR, message.c_str()); }

}  // namespace dcn_deploy::tensorrt
