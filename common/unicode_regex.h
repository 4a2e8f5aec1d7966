// A compiled Unicode regular expression (PCRE2 in UTF mode with Unicode properties), for
// the pre-tokenizer patterns of tokenizer.json: \p{L}, \p{N}, (?i:...), lookahead.
#ifndef MOE_COMMON_UNICODE_REGEX_H_
#define MOE_COMMON_UNICODE_REGEX_H_

#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moe {

// Immutable after Create; Find is safe to call from several threads.
class UnicodeRegex {
 public:
  // Patterns longer than this are refused (real tokenizers use a few hundred bytes).
  static constexpr size_t kMaxPatternBytes = 16 << 10;

  // Compiles `pattern`. Oniguruma (which Hugging Face tokenizers uses) and PCRE2 in UCP
  // mode agree on the syntax these patterns use and on \s (White_Space: tab to CR, NEL,
  // Z*; not U+200B), which the reference test's exotic spaces check.
  static absl::StatusOr<std::unique_ptr<UnicodeRegex>> Create(absl::string_view pattern);
  ~UnicodeRegex();
  UnicodeRegex(const UnicodeRegex&) = delete;
  UnicodeRegex& operator=(const UnicodeRegex&) = delete;

  // Every non-overlapping, non-empty match in well-formed UTF-8 `text`, left to right, as
  // [begin, end) byte offsets. Fails (RESOURCE_EXHAUSTED) when a match needs more
  // backtracking than PCRE2's limits allow, rather than running away.
  absl::StatusOr<std::vector<std::pair<size_t, size_t>>> FindAll(absl::string_view text) const;

  const std::string& pattern() const { return pattern_; }

 private:
  UnicodeRegex(std::string pattern, void* code) : pattern_(std::move(pattern)), code_(code) {}
  std::string pattern_;
  void* code_;  // pcre2_code_8*, owned
};

}  // namespace moe

#endif  // MOE_COMMON_UNICODE_REGEX_H_
