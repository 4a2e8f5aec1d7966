#include "expert_worker/cache_policy.h"

#include "absl/strings/str_cat.h"

namespace moe::expert_worker {

int LruPolicy::ChooseVictim(int layer, absl::Span<const int> candidates) {
  int victim = candidates[0];
  uint64_t oldest = UINT64_MAX;
  for (int expert : candidates) {
    const auto it = last_use_.find({layer, expert});
    const uint64_t t = it == last_use_.end() ? 0 : it->second;
    if (t < oldest) {
      oldest = t;
      victim = expert;
    }
  }
  return victim;
}

absl::StatusOr<std::unique_ptr<CachePolicy>> MakeCachePolicy(absl::string_view name) {
  if (name == "lru") return std::make_unique<LruPolicy>();
  return absl::InvalidArgumentError(absl::StrCat("unknown cache policy \"", name, "\" (lru)"));
}

}  // namespace moe::expert_worker
