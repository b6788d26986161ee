// Minimal self-contained test harness: TEST(name) registers a function,
// CHECK* record failures without stopping the test, run_all_tests() reports.
#pragma once

#include <cmath>
#include <cstdio>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

namespace test_harness {

struct TestCase {
  const char* name;
  std::function<void()> body;
};

inline std::vector<TestCase>& registry() {
  static std::vector<TestCase> tests;
  return tests;
}

inline int& failure_count() {
  static int failures = 0;
  return failures;
}

struct Registrar {
  Registrar(const char* name, std::function<void()> body) { registry().push_back({name, std::move(body)}); }
};

inline void report_failure(const char* file, int line, const std::string& message) {
  ++failure_count();
  std::fprintf(stderr, "%s:%d: FAILED: %s\n", file, line, message.c_str());
}

template <typename A, typename B>
std::string describe_pair(const char* expression_a, const A& a, const char* expression_b, const B& b) {
  std::ostringstream out;
  out << expression_a << " == " << expression_b << " (" << a << " vs " << b << ")";
  return out.str();
}

// Runs every registered test; prints a ctest-friendly summary. Returns the exit code.
inline int run_all_tests() {
  int failed_tests = 0;
  for (const TestCase& test : registry()) {
    const int failures_before = failure_count();
    test.body();
    const bool passed = failure_count() == failures_before;
    if (!passed) ++failed_tests;
    std::printf("[%s] %s\n", passed ? "  OK  " : "FAILED", test.name);
  }
  const int total = static_cast<int>(registry().size());
  std::printf("%d passed, %d failed\n", total - failed_tests, failed_tests);
  return failed_tests == 0 ? 0 : 1;
}

}  // namespace test_harness

#define TEST_CONCAT_INNER(a, b) a##b
#define TEST_CONCAT(a, b) TEST_CONCAT_INNER(a, b)

#define TEST(name)                                                                     \
  static void name();                                                                  \
  static const test_harness::Registrar TEST_CONCAT(registrar_, name)(#name, &name);   \
  static void name()

#define CHECK(condition)                                                         \
  do {                                                                           \
    if (!(condition)) test_harness::report_failure(__FILE__, __LINE__, #condition); \
  } while (0)

#define CHECK_EQ(a, b)                                                                                    \
  do {                                                                                                    \
    const auto& check_a = (a);                                                                            \
    const auto& check_b = (b);                                                                            \
    if (!(check_a == check_b))                                                                            \
      test_harness::report_failure(__FILE__, __LINE__, test_harness::describe_pair(#a, check_a, #b, check_b)); \
  } while (0)

#define CHECK_NEAR(a, b, tolerance)                                                                       \
  do {                                                                                                    \
    const double check_a = (a);                                                                           \
    const double check_b = (b);                                                                           \
    if (!(std::fabs(check_a - check_b) <= (tolerance)))                                                   \
      test_harness::report_failure(__FILE__, __LINE__,                                                   \
                                   test_harness::describe_pair(#a, check_a, #b, check_b) + " beyond " #tolerance); \
  } while (0)

// Checks that `text` contains `part`.
#define CHECK_CONTAINS(text, part)                                                                        \
  do {                                                                                                    \
    const std::string check_text = (text);                                                                \
    const std::string check_part = (part);                                                                \
    if (check_text.find(check_part) == std::string::npos)                                                 \
      test_harness::report_failure(__FILE__, __LINE__,                                                   \
                                   "\"" + check_text + "\" does not contain \"" + check_part + "\"");     \
  } while (0)

#define TEST_MAIN() \
  int main() { return test_harness::run_all_tests(); }
