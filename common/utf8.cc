#include "common/utf8.h"

#include <cstdint>

#include "absl/strings/str_cat.h"

namespace moe {
namespace {

// Length of the well-formed sequence starting at text[i], or 0 if there is none.
size_t SequenceLength(absl::string_view text, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<uint8_t>(text[k]); };
  const uint8_t b0 = byte(i);
  if (b0 < 0x80) return 1;
  size_t n;
  uint8_t lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    n = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    n = 3;
    if (b0 == 0xE0) lo = 0xA0;  // overlong
    if (b0 == 0xED) hi = 0x9F;  // surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    n = 4;
    if (b0 == 0xF0) lo = 0x90;  // overlong
    if (b0 == 0xF4) hi = 0x8F;  // above U+10FFFF
  } else {
    return 0;
  }
  if (text.size() - i < n) return 0;
  if (byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
  }
  return n;
}

// Offset of the first byte that does not start a well-formed sequence, or npos.
size_t FirstInvalid(absl::string_view text) {
  for (size_t i = 0; i < text.size();) {
    const size_t n = SequenceLength(text, i);
    if (n == 0) return i;
    i += n;
  }
  return absl::string_view::npos;
}

}  // namespace

bool IsValidUtf8(absl::string_view text) { return FirstInvalid(text) == absl::string_view::npos; }

absl::Status CheckUtf8(absl::string_view field, absl::string_view text) {
  const size_t bad = FirstInvalid(text);
  if (bad == absl::string_view::npos) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(field, " is not valid UTF-8 (first bad byte at offset ", bad, ")"));
}

size_t Utf8BoundaryAtOrBefore(absl::string_view text, size_t pos) {
  if (pos >= text.size()) return pos;
  // Step back over at most three continuation bytes to the start of the character.
  size_t start = pos;
  for (int k = 0; k < 3 && start > 0 && (static_cast<uint8_t>(text[start]) & 0xC0) == 0x80; ++k) {
    --start;
  }
  if ((static_cast<uint8_t>(text[start]) & 0xC0) == 0x80) return pos;  // not UTF-8 here: as is
  return start;
}

}  // namespace moe
