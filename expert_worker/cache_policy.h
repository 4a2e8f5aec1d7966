// Which resident expert a full layer of the slot cache gives up. Policies are
// replaceable at run time; the cache tells them every hit, insert and eviction.
#ifndef MOE_EXPERT_WORKER_CACHE_POLICY_H_
#define MOE_EXPERT_WORKER_CACHE_POLICY_H_

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace moe::expert_worker {

// Not thread-safe: the SlotCache calls it under its own lock.
class CachePolicy {
 public:
  virtual ~CachePolicy() = default;
  virtual absl::string_view name() const = 0;

  // `expert` of `layer` was used while resident.
  virtual void OnHit(int layer, int expert) = 0;
  // `expert` was loaded into the layer's cache.
  virtual void OnInsert(int layer, int expert) = 0;
  // `expert` left the layer's cache.
  virtual void OnEvict(int layer, int expert) = 0;
  // Picks the victim among `candidates` (resident, unleased experts of `layer`; never
  // empty).
  virtual int ChooseVictim(int layer, absl::Span<const int> candidates) = 0;
};

// Least recently used: the paper's policy.
class LruPolicy : public CachePolicy {
 public:
  absl::string_view name() const override { return "lru"; }
  void OnHit(int layer, int expert) override { Touch(layer, expert); }
  void OnInsert(int layer, int expert) override { Touch(layer, expert); }
  void OnEvict(int layer, int expert) override { last_use_.erase({layer, expert}); }
  int ChooseVictim(int layer, absl::Span<const int> candidates) override;

 private:
  void Touch(int layer, int expert) { last_use_[{layer, expert}] = ++clock_; }
  uint64_t clock_ = 0;
  std::map<std::pair<int, int>, uint64_t> last_use_;
};

// Builds a policy by name ("lru").
absl::StatusOr<std::unique_ptr<CachePolicy>> MakeCachePolicy(absl::string_view name);

}  // namespace moe::expert_worker

#endif  // MOE_EXPERT_WORKER_CACHE_POLICY_H_
