#include "common/unicode_regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace moe {
namespace {

pcre2_code* Code(void* p) { return static_cast<pcre2_code*>(p); }

std::string Pcre2Message(int error) {
  PCRE2_UCHAR buffer[256];
  const int n = pcre2_get_error_message(error, buffer, sizeof(buffer));
  return n < 0 ? absl::StrCat("PCRE2 error ", error) : std::string(reinterpret_cast<char*>(buffer), n);
}

}  // namespace

absl::StatusOr<std::unique_ptr<UnicodeRegex>> UnicodeRegex::Create(absl::string_view pattern) {
  if (pattern.size() > kMaxPatternBytes) {
    return absl::InvalidArgumentError(absl::StrCat("regex of ", pattern.size(),
                                                   " bytes is longer than the limit of ",
                                                   kMaxPatternBytes));
  }
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
  if (code == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("regex ", QuoteForMessage(pattern),
                                                   " does not compile: ", Pcre2Message(error)));
  }
  return std::unique_ptr<UnicodeRegex>(new UnicodeRegex(std::string(pattern), code));
}

UnicodeRegex::~UnicodeRegex() { pcre2_code_free(Code(code_)); }

absl::StatusOr<std::vector<std::pair<size_t, size_t>>> UnicodeRegex::FindAll(
    absl::string_view text) const {
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> data(
      pcre2_match_data_create_from_pattern(Code(code_), nullptr), &pcre2_match_data_free);
  if (data == nullptr) return absl::ResourceExhaustedError("cannot allocate regex match data");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  std::vector<std::pair<size_t, size_t>> matches;
  size_t start = 0;
  while (start < text.size()) {
    // The text was checked as UTF-8 once by the caller; no need for PCRE2 to check it on
    // every call (that would make a long text quadratic).
    const int rc = pcre2_match(Code(code_), subject, text.size(), start, PCRE2_NO_UTF_CHECK,
                               data.get(), nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "regex ", QuoteForMessage(pattern_), " failed at offset ", start, ": ", Pcre2Message(rc)));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(data.get());
    const size_t begin = ov[0], end = ov[1];
    if (end > begin) {
      matches.emplace_back(begin, end);
      start = end;
    } else {
      // An empty match: step over one character so the scan moves on.
      start = begin + 1;
      while (start < text.size() && (static_cast<uint8_t>(text[start]) & 0xC0) == 0x80) ++start;
    }
  }
  return matches;
}

}  // namespace moe
