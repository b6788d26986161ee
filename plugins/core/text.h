// Message formatting for error texts, shared by every backend.
//
// Deliberately free of iostreams: std::ostringstream touches the C++ locale,
// and a plugin loaded into a host process that carries its own copy of the
// C++ runtime (PyTorch with CUDA, for one) crashed on the first error message
// built with a stream. std::to_string and snprintf do not touch it.
#pragma once

#include <cstddef>
#include <cstdio>
#include <string>
#include <string_view>
#include <type_traits>

namespace dcn_deploy {
namespace text {

inline void append(std::string& out, std::string_view part) { out += part; }
inline void append(std::string& out, const char* part) { out += part ? part : "(null)"; }
inline void append(std::string& out, char part) { out += part; }
inline void append(std::string& out, bool part) { out += part ? '1' : '0'; }  // as a stream prints it

template <typename T>
std::enable_if_t<std::is_integral_v<T>> append(std::string& out, T part) {
  out += std::to_string(part);
}

template <typename T>
std::enable_if_t<std::is_floating_point_v<T>> append(std::string& out, T part) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%g", static_cast<double>(part));  // a stream's default format
  out += buffer;
}

}  // namespace text

// Concatenates strings, characters and numbers into one string.
template <typename... Parts>
std::string concat(const Parts&... parts) {
  std::string out;
  (text::append(out, parts), ...);
  return out;
}

// "[a, b, c]".
template <typename T>
std::string format_list(const T* values, size_t count) {
  std::string out = "[";
  for (size_t i = 0; i < count; ++i) {
    if (i) out += ", ";
    text::append(out, values[i]);
  }
  out += ']';
  return out;
}

}  // namespace dcn_deploy
