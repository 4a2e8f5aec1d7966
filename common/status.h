// Status helpers. Debian's Abseil (20220623) has no RETURN_IF_ERROR, so the project
// defines its own once, here.
#ifndef MOE_COMMON_STATUS_H_
#define MOE_COMMON_STATUS_H_

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

#define MOE_STATUS_CONCAT_INNER_(a, b) a##b
#define MOE_STATUS_CONCAT_(a, b) MOE_STATUS_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` is not OK.
#define MOE_RETURN_IF_ERROR(expr)                  \
  do {                                             \
    ::absl::Status moe_status_ = (expr);           \
    if (!moe_status_.ok()) return moe_status_;     \
  } while (0)

// `MOE_ASSIGN_OR_RETURN(auto x, F());` declares x from an OK StatusOr or returns its error.
#define MOE_ASSIGN_OR_RETURN(lhs, rexpr) \
  MOE_ASSIGN_OR_RETURN_IMPL_(MOE_STATUS_CONCAT_(moe_statusor_, __LINE__), lhs, rexpr)
#define MOE_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                               \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

namespace moe {

// Prefixes a status's message with context ("model.safetensors: ..."), keeping its code.
inline absl::Status Annotate(const absl::Status& status, absl::string_view context) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(context, ": ", status.message()));
}

// A name read from an untrusted file, double-quoted for an error message: C-escaped so the
// message stays one printable line, and cut after 200 bytes.
inline std::string QuoteForMessage(absl::string_view name) {
  constexpr size_t kMaxShown = 200;
  if (name.size() > kMaxShown) {
    return absl::StrCat("\"", absl::CHexEscape(name.substr(0, kMaxShown)), "\"...");
  }
  return absl::StrCat("\"", absl::CHexEscape(name), "\"");
}

}  // namespace moe

#endif  // MOE_COMMON_STATUS_H_
