#include "expert_worker/cache_policy.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace moe::expert_worker {

namespace {

// The candidate with the smallest stamp (unknown experts count as 0, the oldest).
int OldestStamp(const std::map<std::pair<int, int>, uint64_t>& stamps, int layer,
                absl::Span<const int> candidates) {
  int victim = candidates[0];
  uint64_t oldest = UINT64_MAX;
  for (int expert : candidates) {
    const auto it = stamps.find({layer, expert});
    const uint64_t t = it == stamps.end() ? 0 : it->second;
    if (t < oldest) {
      oldest = t;
      victim = expert;
    }
  }
  return victim;
}

}  // namespace

int LruPolicy::ChooseVictim(int layer, absl::Span<const int> candidates) {
  return OldestStamp(last_use_, layer, candidates);
}

void LfuPolicy::OnHit(int layer, int expert) {
  Use& u = stats_[{layer, expert}];
  ++u.count;
  u.last = ++clock_;
}

void LfuPolicy::OnInsert(int layer, int expert) {
  stats_[{layer, expert}] = Use{1, ++clock_};
}

int LfuPolicy::ChooseVictim(int layer, absl::Span<const int> candidates) {
  int victim = candidates[0];
  Use worst{UINT64_MAX, UINT64_MAX};
  for (int expert : candidates) {
    const auto it = stats_.find({layer, expert});
    const Use u = it == stats_.end() ? Use{} : it->second;
    if (u.count < worst.count || (u.count == worst.count && u.last < worst.last)) {
      worst = u;
      victim = expert;
    }
  }
  return victim;
}

int FifoPolicy::ChooseVictim(int layer, absl::Span<const int> candidates) {
  return OldestStamp(inserted_, layer, candidates);
}

int RandomPolicy::ChooseVictim(int, absl::Span<const int> candidates) {
  return candidates[std::uniform_int_distribution<size_t>(0, candidates.size() - 1)(rng_)];
}

double DecayingLfuPolicy::Current(const Score& s, uint64_t now) const {
  return s.value * std::exp2(-double(now - s.at) / half_life_);
}

void DecayingLfuPolicy::Use(int layer, int expert) {
  const uint64_t now = ++layer_clock_[layer];
  Score& s = scores_[{layer, expert}];
  s.value = Current(s, now) + 1.0;
  s.at = now;
}

int DecayingLfuPolicy::ChooseVictim(int layer, absl::Span<const int> candidates) {
  const uint64_t now = layer_clock_[layer];
  int victim = candidates[0];
  double lowest = INFINITY;
  for (int expert : candidates) {
    const auto it = scores_.find({layer, expert});
    const double v = it == scores_.end() ? 0.0 : Current(it->second, now);
    if (v < lowest) {
      lowest = v;
      victim = expert;
    }
  }
  return victim;
}

absl::StatusOr<std::unique_ptr<CachePolicy>> MakeCachePolicy(absl::string_view name) {
  if (name == "lru") return std::make_unique<LruPolicy>();
  if (name == "lfu") return std::make_unique<LfuPolicy>();
  if (name == "fifo") return std::make_unique<FifoPolicy>();
  if (name == "random") return std::make_unique<RandomPolicy>();
  if (name == "lfu-decay") return std::make_unique<DecayingLfuPolicy>();
  return absl::InvalidArgumentError(
      absl::StrCat("unknown cache policy \"", name, "\" (", kCachePolicyNames, ")"));
}

}  // namespace moe::expert_worker
