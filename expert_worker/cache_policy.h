// Which resident expert a full layer of the slot cache gives up. Policies are
// replaceable at run time; the cache tells them every hit, insert and eviction.
#ifndef MOE_EXPERT_WORKER_CACHE_POLICY_H_
#define MOE_EXPERT_WORKER_CACHE_POLICY_H_

#include <cstdint>
#include <map>
#include <memory>
#include <random>
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

// Least frequently used since insertion; ties go to the least recently used.
class LfuPolicy : public CachePolicy {
 public:
  absl::string_view name() const override { return "lfu"; }
  void OnHit(int layer, int expert) override;
  void OnInsert(int layer, int expert) override;
  void OnEvict(int layer, int expert) override { stats_.erase({layer, expert}); }
  int ChooseVictim(int layer, absl::Span<const int> candidates) override;

 private:
  struct Use {
    uint64_t count = 0;
    uint64_t last = 0;
  };
  uint64_t clock_ = 0;
  std::map<std::pair<int, int>, Use> stats_;
};

// First in, first out: hits do not refresh an expert.
class FifoPolicy : public CachePolicy {
 public:
  absl::string_view name() const override { return "fifo"; }
  void OnHit(int, int) override {}
  void OnInsert(int layer, int expert) override { inserted_[{layer, expert}] = ++clock_; }
  void OnEvict(int layer, int expert) override { inserted_.erase({layer, expert}); }
  int ChooseVictim(int layer, absl::Span<const int> candidates) override;

 private:
  uint64_t clock_ = 0;
  std::map<std::pair<int, int>, uint64_t> inserted_;
};

// A uniformly random victim (the baseline every policy must beat); seeded, so runs
// repeat.
class RandomPolicy : public CachePolicy {
 public:
  explicit RandomPolicy(uint64_t seed = 0) : rng_(seed) {}
  absl::string_view name() const override { return "random"; }
  void OnHit(int, int) override {}
  void OnInsert(int, int) override {}
  void OnEvict(int, int) override {}
  int ChooseVictim(int layer, absl::Span<const int> candidates) override;

 private:
  std::mt19937_64 rng_;
};

// Frequency with exponential decay (beyond the paper): each use adds 1 to a score that
// halves every `half_life` uses of the layer, so an expert popular long ago fades while
// one in steady use stays. Victim: the lowest score.
class DecayingLfuPolicy : public CachePolicy {
 public:
  explicit DecayingLfuPolicy(double half_life = 16.0) : half_life_(half_life) {}
  absl::string_view name() const override { return "lfu-decay"; }
  void OnHit(int layer, int expert) override { Use(layer, expert); }
  void OnInsert(int layer, int expert) override { Use(layer, expert); }
  void OnEvict(int layer, int expert) override { scores_.erase({layer, expert}); }
  int ChooseVictim(int layer, absl::Span<const int> candidates) override;

 private:
  struct Score {
    double value = 0;
    uint64_t at = 0;  // the layer's use count when value was computed
  };
  void Use(int layer, int expert);
  double Current(const Score& s, uint64_t now) const;
  double half_life_;
  std::map<int, uint64_t> layer_clock_;
  std::map<std::pair<int, int>, Score> scores_;
};

// Names MakeCachePolicy accepts.
inline constexpr absl::string_view kCachePolicyNames = "lru, lfu, fifo, random, lfu-decay";

// Builds a policy by name (see kCachePolicyNames).
absl::StatusOr<std::unique_ptr<CachePolicy>> MakeCachePolicy(absl::string_view name);

}  // namespace moe::expert_worker

#endif  // MOE_EXPERT_WORKER_CACHE_POLICY_H_
