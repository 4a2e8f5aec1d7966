// Overflow-safe size arithmetic for sizes and offsets that come off the wire or out of a
// file. Every such check goes through these, never through `a + b <= c` written inline
// (that sum wraps for a hostile a or b).
#ifndef MOE_COMMON_CHECKED_MATH_H_
#define MOE_COMMON_CHECKED_MATH_H_

#include <cstdint>
#include <optional>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace moe {

// a + b, or nullopt when it does not fit in 64 bits.
inline std::optional<uint64_t> CheckedAdd(uint64_t a, uint64_t b) {
  uint64_t sum;
  if (__builtin_add_overflow(a, b, &sum)) return std::nullopt;
  return sum;
}

// a * b, or nullopt when it does not fit in 64 bits.
inline std::optional<uint64_t> CheckedMul(uint64_t a, uint64_t b) {
  uint64_t product;
  if (__builtin_mul_overflow(a, b, &product)) return std::nullopt;
  return product;
}

// Whether the byte range [offset, offset + length) lies inside [0, size). Never wraps.
inline bool RangeWithin(uint64_t offset, uint64_t length, uint64_t size) {
  return length <= size && offset <= size - length;
}

// RangeWithin as a status: OUT_OF_RANGE naming `what`, the range and the size.
inline absl::Status CheckRangeWithin(absl::string_view what, uint64_t offset, uint64_t length,
                                     uint64_t size) {
  if (RangeWithin(offset, length, size)) return absl::OkStatus();
  return absl::OutOfRangeError(absl::StrCat(what, " [", offset, ", +", length,
                                            " bytes) is outside the ", size, "-byte region"));
}

}  // namespace moe

#endif  // MOE_COMMON_CHECKED_MATH_H_
