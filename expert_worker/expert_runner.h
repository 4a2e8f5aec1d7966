// Runs one MoE layer for a batch of tokens against the slot cache: tokens grouped by
// expert, each expert leased, computed and released in turn. Shared by the in-process
// backend and the worker's gRPC service.
#ifndef MOE_EXPERT_WORKER_EXPERT_RUNNER_H_
#define MOE_EXPERT_WORKER_EXPERT_RUNNER_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "common/expert_backend.h"
#include "expert_worker/prefetch_queue.h"
#include "expert_worker/slot_cache.h"

namespace moe::expert_worker {

struct RunCounters {
  uint32_t hits = 0;
  uint32_t misses = 0;
  uint32_t prefetch_hits = 0;  // of hits, first uses of prefetched experts
  double load_wait_s = 0;  // time inside SlotCache::Acquire
  double compute_s = 0;
};

// Where a call's activations (x and out) live. On the CPU device both are host memory.
enum class ActivationPlacement {
  kHost,    // host memory: the runner stages them to and from its device
  kDevice,  // memory of the runner's device (the in-process engine, a CUDA IPC arena)
};

// Thread-safe (the cache is; scratch is per call).
class ExpertRunner {
 public:
  // `cache` must outlive the runner. With `load_whole_layer`, every expert of the layer
  // is brought into the cache for each call, used or not: what generic layer offloading
  // does (the "naive" baseline of the benchmarks).
  explicit ExpertRunner(SlotCache* cache, bool load_whole_layer = false)
      : cache_(cache), load_whole_layer_(load_whole_layer) {}

  // out[t] = sum_j weights[t, j] * Expert(layer, ids[t, j])(x[t]); shapes as in
  // ExpertBackend::RunExperts. Ids, layer and sizes are validated.
  absl::Status Run(int layer, absl::Span<const float> x, int64_t n, absl::Span<const int32_t> ids,
                   absl::Span<const float> weights, absl::Span<float> out,
                   RunCounters* counters = nullptr,
                   ActivationPlacement placement = ActivationPlacement::kHost) const;

  SlotCache& cache() const { return *cache_; }

 private:
  SlotCache* cache_;
  bool load_whole_layer_;
};

// The expert worker linked into the caller's process. Thread-safe.
class InProcessBackend : public ExpertBackend {
 public:
  explicit InProcessBackend(SlotCache* cache, bool load_whole_layer = false)
      : runner_(cache, load_whole_layer), prefetch_(cache) {}
  absl::Status RunExperts(int layer, absl::Span<const float> x, int64_t n,
                          absl::Span<const int32_t> ids, absl::Span<const float> weights,
                          absl::Span<float> out, ExpertCallStats* stats) override;
  void Prefetch(int layer, absl::Span<const int32_t> experts) override {
    prefetch_.Enqueue(layer, std::vector<int>(experts.begin(), experts.end()));
  }
  PrefetchQueue& prefetch_queue() { return prefetch_; }

 private:
  ExpertRunner runner_;
  PrefetchQueue prefetch_;
};

}  // namespace moe::expert_worker

#endif  // MOE_EXPERT_WORKER_EXPERT_RUNNER_H_
