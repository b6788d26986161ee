// Logging of the TensorRT plugin library through the ILoggerFinder that
// TensorRT hands to setLoggerFinder(). No libnvinfer function is called.
#pragma once

#include <NvInferRuntime.h>

#include <string>

namespace dcn_deploy::tensorrt {

// Remembers the first non-null finder (TensorRT's own plugin libraries do the same).
void set_logger_finder(nvinfer1::ILoggerFinder* finder) noexcept;

// Logs through the logger of the calling TensorRT thread; without a logger
// (setLoggerFinder not called), errors and warnings go to stderr instead.
void log_message(nvinfer1::ILogger::Severity severity, const char* message) noexcept;
void log_error(const std::string& message) noexcept;

}  // namespace dcn_deploy::tensorrt
