// Helpers shared by the C++ tests.
#ifndef MOE_TESTS_TEST_UTIL_H_
#define MOE_TESTS_TEST_UTIL_H_

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
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

// One line of a crafted-bad-input directory's expected_errors.tsv: a file and the text
// its error must contain.
struct ExpectedError {
  std::string file;
  std::string expected;
};

// Reads `path` (FILE<TAB>EXPECTED lines; '#' comments and blank lines skipped); a
// malformed line is a test failure.
inline std::vector<ExpectedError> ReadExpectedErrorsTsv(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) ADD_FAILURE() << "cannot read " << path;
  std::vector<ExpectedError> cases;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const std::vector<std::string> fields = absl::StrSplit(line, absl::MaxSplits('\t', 1));
    if (fields.size() != 2 || fields[1].empty()) {
      ADD_FAILURE() << "malformed expected_errors.tsv line: " << line;
      continue;
    }
    cases.push_back({fields[0], fields[1]});
  }
  return cases;
}

}  // namespace moe::testing_util

#endif  // MOE_TESTS_TEST_UTIL_H_
