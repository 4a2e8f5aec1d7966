// Helpers shared by the C++ tests.
#ifndef MOE_TESTS_TEST_UTIL_H_
#define MOE_TESTS_TEST_UTIL_H_

#include <stdlib.h>

#include <filesystem>
#include <string>

#include "gtest/gtest.h"

namespace moe::testing_util {

// A fresh directory under testing::TempDir(), removed with its contents at scope exit.
class ScopedTempDir {
 public:
  explicit ScopedTempDir(const std::string& prefix = "moe_test") {
    std::string pattern =
        (std::filesystem::path(::testing::TempDir()) / (prefix + ".XXXXXX")).string();
    path_ = ::mkdtemp(pattern.data()) != nullptr ? pattern : "";
  }
  ~ScopedTempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  ScopedTempDir(const ScopedTempDir&) = delete;
  ScopedTempDir& operator=(const ScopedTempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace moe::testing_util

#endif  // MOE_TESTS_TEST_UTIL_H_
