// What expert calls cost: the one statistics type for a RunExperts call and for sums of
// them, from the runner that computes it (ExpertRunner) through the worker's reply
// (RunExpertsResponse, the ring's RingReply) and the coordinator's backend to
// GenerationStats and /metrics. The hit-ratio formula lives here and nowhere else.
#ifndef MOE_COMMON_EXPERT_STATS_H_
#define MOE_COMMON_EXPERT_STATS_H_

#include <cstdint>

namespace moe {

// hits / (hits + misses), 0 without uses: for every counter of expert uses.
inline double HitRatio(uint64_t hits, uint64_t misses) {
  return hits + misses ? double(hits) / double(hits + misses) : 0.0;
}
// Of the experts used (hits + misses), the share a prefetch had loaded; 0 without uses.
inline double PrefetchRecall(uint64_t prefetch_hits, uint64_t uses) {
  return uses ? double(prefetch_hits) / double(uses) : 0.0;
}
// Of the experts prefetches loaded, the share then used; 0 without prefetches.
inline double PrefetchPrecision(uint64_t prefetch_hits, uint64_t prefetch_loads) {
  return prefetch_loads ? double(prefetch_hits) / double(prefetch_loads) : 0.0;
}

struct ExpertCallStats {
  uint64_t calls = 0;
  uint64_t ring_calls = 0;     // of calls, those through the activation ring (no RPC)
  uint64_t hits = 0;           // experts found resident in the cache
  uint64_t misses = 0;         // experts loaded on demand
  uint64_t prefetch_hits = 0;  // of hits, experts a prefetch had loaded
  double stall_s = 0;          // waiting for expert copies
  double compute_s = 0;        // expert FFNs
  double rpc_s = 0;            // calls as the caller saw them, transport included (0 in-process)

  uint64_t uses() const { return hits + misses; }
  double hit_ratio() const { return HitRatio(hits, misses); }
  // Of the experts used, the share a prefetch had loaded.
  double prefetch_recall() const { return PrefetchRecall(prefetch_hits, uses()); }
  // The worker's own time (copies waited for and compute), without the transport.
  double worker_s() const { return stall_s + compute_s; }

  ExpertCallStats& operator+=(const ExpertCallStats& o) {
    calls += o.calls;
    ring_calls += o.ring_calls;
    hits += o.hits;
    misses += o.misses;
    prefetch_hits += o.prefetch_hits;
    stall_s += o.stall_s;
    compute_s += o.compute_s;
    rpc_s += o.rpc_s;
    return *this;
  }
};

}  // namespace moe

#endif  // MOE_COMMON_EXPERT_STATS_H_
