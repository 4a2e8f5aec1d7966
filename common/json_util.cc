#include "common/json_util.h"

#include "absl/strings/str_cat.h"

namespace moe {

absl::StatusOr<nlohmann::json> ParseJsonObject(absl::string_view text, absl::string_view what,
                                               int max_depth) {
  bool too_deep = false;
  // The callback drops values nested too deeply: bounded memory on hostile input.
  auto limit_depth = [&](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
    if (depth > max_depth) {
      too_deep = true;
      return false;
    }
    return true;
  };
  nlohmann::json value =
      nlohmann::json::parse(text.begin(), text.end(), limit_depth, /*allow_exceptions=*/false);
  if (too_deep) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " nests JSON deeper than ", max_depth, " levels"));
  }
  if (value.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is not valid JSON"));
  }
  if (!value.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is not a JSON object"));
  }
  return value;
}

}  // namespace moe
