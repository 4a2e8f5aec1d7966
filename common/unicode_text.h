// UTF-8 helpers the tokenizers share: validity, lossy decoding of arbitrary bytes, and
// Unicode normalization (over GNU libunistring).
#ifndef MOE_COMMON_UNICODE_TEXT_H_
#define MOE_COMMON_UNICODE_TEXT_H_

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moe {

// OK when `text` is well-formed UTF-8 (no surrogates, no overlong forms); otherwise
// INVALID_ARGUMENT naming the byte offset of the first bad sequence.
absl::Status CheckUtf8(absl::string_view text);

// Turns arbitrary bytes into UTF-8: each maximal ill-formed subsequence becomes U+FFFD, as
// Unicode (chapter 3, "U+FFFD Substitution of Maximal Subparts"), Rust's
// String::from_utf8_lossy and so Hugging Face's decoders do.
std::string LossyUtf8(absl::string_view bytes);

// Length in bytes of the well-formed UTF-8 character starting at text[pos], or 0 when the
// bytes there are not one.
size_t Utf8CharLength(absl::string_view text, size_t pos);

// The code point of the well-formed character at text[pos] (`length` bytes long, from
// Utf8CharLength).
char32_t DecodeUtf8Char(absl::string_view text, size_t pos, size_t length);

// Appends code point `c` (at most U+10FFFF) as UTF-8.
void AppendUtf8Char(char32_t c, std::string* out);

// Rust's char::is_whitespace (the White_Space property) and char::is_alphanumeric
// (Alphabetic or a number), which Hugging Face's added-token matching uses.
bool IsUnicodeWhitespace(char32_t c);
bool IsUnicodeAlphanumeric(char32_t c);

enum class NormalizationForm { kNfc, kNfd, kNfkc, kNfkd };

// Normalizes well-formed UTF-8 `text`.
absl::StatusOr<std::string> NormalizeUnicode(absl::string_view text, NormalizationForm form);

}  // namespace moe

#endif  // MOE_COMMON_UNICODE_TEXT_H_
