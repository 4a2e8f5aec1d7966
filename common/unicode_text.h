// UTF-8 in one place: validity (of requests, before use), character boundaries (text we
// send is cut only there: protobuf refuses to serialise a string that is not UTF-8),
// lossy decoding of arbitrary bytes, and Unicode normalization (over GNU libunistring).
#ifndef MOE_COMMON_UNICODE_TEXT_H_
#define MOE_COMMON_UNICODE_TEXT_H_

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moe {

// Whether `text` is well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates, at
// most U+10FFFF).
bool IsValidUtf8(absl::string_view text);

// OK when `text` is well-formed UTF-8; otherwise INVALID_ARGUMENT "`field` is not valid
// UTF-8 (first bad byte at offset N)".
absl::Status CheckUtf8(absl::string_view field, absl::string_view text);

// The largest position <= pos that does not fall inside a multi-byte character of
// `text` (pos itself when pos >= text.size() or it already is a boundary).
size_t Utf8BoundaryAtOrBefore(absl::string_view text, size_t pos);

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
