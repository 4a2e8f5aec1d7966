#include "common/unicode_text.h"

#include <unictype.h>
#include <uninorm.h>

#include <cstdint>
#include <cstdlib>
#include <memory>

#include "absl/strings/str_cat.h"

namespace moe {
namespace {

constexpr absl::string_view kReplacement = "\xEF\xBF\xBD";

// How many bytes of a well-formed sequence start at text[pos] (the Unicode table of
// well-formed byte sequences, 3.9 D92); `*valid` is how many of them are present and
// correct, so that an ill-formed sequence is replaced as one maximal subpart.
size_t ScanChar(absl::string_view text, size_t pos, size_t* valid) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(text[pos + i]); };
  const uint8_t b0 = byte(0);
  size_t need;
  uint8_t lo = 0x80, hi = 0xBF;  // the range of the second byte
  if (b0 < 0x80) {
    *valid = 1;
    return 1;
  } else if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 3;
    if (b0 == 0xE0) lo = 0xA0;  // overlong
    if (b0 == 0xED) hi = 0x9F;  // surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 4;
    if (b0 == 0xF0) lo = 0x90;  // overlong
    if (b0 == 0xF4) hi = 0x8F;  // above U+10FFFF
  } else {
    *valid = 0;
    return 1;
  }
  size_t i = 1;
  for (; i < need && pos + i < text.size(); ++i) {
    const uint8_t b = byte(i);
    const bool ok = i == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
    if (!ok) break;
  }
  *valid = i == need ? need : 0;
  return i;  // the maximal subpart when ill-formed
}

}  // namespace

size_t Utf8CharLength(absl::string_view text, size_t pos) {
  if (pos >= text.size()) return 0;
  size_t valid;
  ScanChar(text, pos, &valid);
  return valid;
}

char32_t DecodeUtf8Char(absl::string_view text, size_t pos, size_t length) {
  const auto byte = [&](size_t i) { return static_cast<char32_t>(static_cast<uint8_t>(text[pos + i])); };
  switch (length) {
    case 1: return byte(0);
    case 2: return ((byte(0) & 0x1F) << 6) | (byte(1) & 0x3F);
    case 3: return ((byte(0) & 0x0F) << 12) | ((byte(1) & 0x3F) << 6) | (byte(2) & 0x3F);
    default:
      return ((byte(0) & 0x07) << 18) | ((byte(1) & 0x3F) << 12) | ((byte(2) & 0x3F) << 6) |
             (byte(3) & 0x3F);
  }
}

void AppendUtf8Char(char32_t c, std::string* out) {
  if (c < 0x80) {
    out->push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (c >> 6)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (c >> 12)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (c >> 18)));
    out->push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

bool IsUnicodeWhitespace(char32_t c) { return uc_is_property_white_space(c); }

bool IsUnicodeAlphanumeric(char32_t c) {
  return uc_is_property_alphabetic(c) || uc_is_general_category(c, UC_CATEGORY_N);
}

namespace {

// Offset of the first byte that does not start a well-formed sequence, or npos.
size_t FirstInvalid(absl::string_view text) {
  for (size_t pos = 0; pos < text.size();) {
    size_t valid;
    const size_t n = ScanChar(text, pos, &valid);
    if (valid == 0) return pos;
    pos += n;
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

std::string LossyUtf8(absl::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t pos = 0; pos < bytes.size();) {
    size_t valid;
    const size_t n = ScanChar(bytes, pos, &valid);
    if (valid == 0) {
      out.append(kReplacement.data(), kReplacement.size());
    } else {
      out.append(bytes.data() + pos, n);
    }
    pos += n;
  }
  return out;
}

absl::StatusOr<std::string> NormalizeUnicode(absl::string_view text, NormalizationForm form) {
  if (text.empty()) return std::string();
  uninorm_t nf = UNINORM_NFC;
  switch (form) {
    case NormalizationForm::kNfc: nf = UNINORM_NFC; break;
    case NormalizationForm::kNfd: nf = UNINORM_NFD; break;
    case NormalizationForm::kNfkc: nf = UNINORM_NFKC; break;
    case NormalizationForm::kNfkd: nf = UNINORM_NFKD; break;
  }
  size_t length = 0;
  uint8_t* result = u8_normalize(nf, reinterpret_cast<const uint8_t*>(text.data()), text.size(),
                                 nullptr, &length);
  if (result == nullptr) {
    return absl::InvalidArgumentError("cannot normalize text (not valid UTF-8, or out of memory)");
  }
  std::unique_ptr<uint8_t, decltype(&std::free)> owned(result, &std::free);
  return std::string(reinterpret_cast<const char*>(result), length);
}

}  // namespace moe
