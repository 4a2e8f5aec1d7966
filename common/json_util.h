// JSON parsing without exceptions, for every parser of untrusted files.
#ifndef MOE_COMMON_JSON_UTIL_H_
#define MOE_COMMON_JSON_UTIL_H_

#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace moe {

// Parses `text` as a JSON object. `what` names the document in errors ("header",
// "config"). Rejects non-objects and nesting deeper than `max_depth`.
absl::StatusOr<nlohmann::json> ParseJsonObject(absl::string_view text, absl::string_view what,
                                               int max_depth = 16);

}  // namespace moe

#endif  // MOE_COMMON_JSON_UTIL_H_
