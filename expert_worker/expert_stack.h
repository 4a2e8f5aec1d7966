// The one wiring of the experts' side: host store, cache policy, slot cache and, with a
// modelled link, the device the cache copies through (modelled_link_device.h), built the
// same way for the worker binary, the in-process engine (`moe`) and the
// benchmarks. Its settings are one struct, checked in one place, whose messages name the
// flags (expert_stack_flags.h declares them once for every binary); three hand-written
// copies used to disagree (a negative --link-gbps was clamped by one and refused by
// another, a negative --cache-per-layer became "a quarter" in `moe bench`).
#ifndef MOE_EXPERT_WORKER_EXPERT_STACK_H_
#define MOE_EXPERT_WORKER_EXPERT_STACK_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/backend/device.h"
#include "common/model_dir.h"
#include "expert_worker/expert_store.h"
#include "expert_worker/link_schedule.h"
#include "expert_worker/modelled_link_device.h"
#include "expert_worker/slot_cache.h"

namespace moe::expert_worker {

struct ExpertStackOptions {
  // The cache's size: at most one of the three is set; none means every expert.
  int cache_per_layer = 0;  // --cache-per-layer: slots per layer
  int64_t cache_bytes = 0;  // --cache-bytes: the slots per layer that fit in this many bytes
  // --vram-budget-gib (the worker's): device memory for the slots and the compute
  // workspace of `workspace_tokens` rows; the slots per layer are what fits after it.
  double vram_budget_gib = 0;
  int64_t workspace_tokens = 0;
  std::string policy;  // --policy (kCachePolicyNames); empty: lru
  LinkModel link;      // --link-gbps, --link-latency-us: CPU device only
  Retention retention = Retention::kKeep;
};

// Every check that needs no model, each message naming its flag: a size below 0, more
// than one size, an unknown policy, a negative or non-finite link figure. Binaries call
// it (through ExpertStackFlags) before loading anything; the factories below call it too.
absl::Status CheckExpertStackOptions(const ExpertStackOptions& options);

// The slots per layer `options` asks for over `store` (its checks that need the model:
// a size past the experts per layer, a budget below one slot per layer).
absl::StatusOr<int> ResolveSlotsPerLayer(const ExpertStore& store,
                                         const ExpertStackOptions& options);

// The store, the cache over it and, with a modelled link, the device between them. Not
// copyable; the cache goes first, the link device next, the store last.
class ExpertStack {
 public:
  // Loads the experts of `dir` into host memory registered with `device` (null: the
  // process's CPU device; it must outlive the stack) and builds the cache on it.
  static absl::StatusOr<std::unique_ptr<ExpertStack>> Load(const ModelDir& dir,
                                                           backend::Device* device,
                                                           const ExpertStackOptions& options);
  // The cache (and link) over a store the caller made (a benchmark's synthetic one),
  // which must outlive the stack: size, policy, retention and link as `options` says.
  static absl::StatusOr<std::unique_ptr<ExpertStack>> Over(const ExpertStore* store,
                                                           const ExpertStackOptions& options);
  const ExpertStore& store() const { return *store_; }
  SlotCache& cache() { return *cache_; }

 private:
  ExpertStack() = default;
  // Builds link_ and cache_ over store_.
  absl::Status BuildCache(const ExpertStackOptions& options);
  std::unique_ptr<ExpertStore> owned_store_;  // Load's; null for Over
  const ExpertStore* store_ = nullptr;
  // The store's device across the modelled link, when there is one: the cache's device.
  std::unique_ptr<ModelledLinkDevice> link_;
  std::unique_ptr<SlotCache> cache_;  // reads store_ through link_: declared last
};

}  // namespace moe::expert_worker

#endif  // MOE_EXPERT_WORKER_EXPERT_STACK_H_
