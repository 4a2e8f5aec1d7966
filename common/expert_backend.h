// The coordinator's view of the experts: whoever owns them (the worker linked in, or a
// worker process over gRPC) implements this. The coordinator never sees expert weights.
#ifndef MOE_COMMON_EXPERT_BACKEND_H_
#define MOE_COMMON_EXPERT_BACKEND_H_

#include <cstdint>
#include <functional>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace moe {

// What RunExperts calls cost, summed over calls (the caller zeroes it).
struct ExpertCallStats {
  uint64_t calls = 0;
  uint64_t hits = 0;      // experts found resident in the cache
  uint64_t misses = 0;    // experts loaded on demand
  uint64_t prefetch_hits = 0;  // of hits, experts a prefetch had loaded
  double stall_s = 0;     // waiting for expert copies
  double compute_s = 0;   // expert FFNs
  double rpc_s = 0;       // round trips as the caller saw them (0 in-process)

  ExpertCallStats& operator+=(const ExpertCallStats& o) {
    calls += o.calls;
    hits += o.hits;
    misses += o.misses;
    prefetch_hits += o.prefetch_hits;
    stall_s += o.stall_s;
    compute_s += o.compute_s;
    rpc_s += o.rpc_s;
    return *this;
  }
};

class ExpertBackend {
 public:
  virtual ~ExpertBackend() = default;

  // One MoE layer for n tokens:
  //   out[t] = sum_j weights[t, j] * Expert(layer, ids[t, j])(x[t])
  // x: [n, hidden] (already RMS-normalised), ids/weights: [n, experts_per_tok],
  // out: [n, hidden], overwritten. ids and weights are host memory; x and out are memory
  // of the device the caller computes on (host memory on the CPU; device memory when a
  // CUDA model calls a backend on the same device). The call is synchronous: out is complete on return.
  // `stats`, if not null, has this call's figures added to it.
  [[nodiscard]] virtual absl::Status RunExperts(int layer, absl::Span<const float> x,
                                                int64_t n, absl::Span<const int32_t> ids,
                                                absl::Span<const float> weights,
                                                absl::Span<float> out,
                                                ExpertCallStats* stats) = 0;

  // A hint that `experts` of `layer` will be needed soon: start loading them. Never
  // blocks and never fails (a wrong guess costs only copy bandwidth). Default: ignore.
  virtual void Prefetch(int layer, absl::Span<const int32_t> experts) {}

  // After RunExperts answered UNAVAILABLE (the experts' owner went away): blocks until
  // the backend can serve again (OK; the caller then redoes the call with the same
  // inputs), it gives up (UNAVAILABLE, e.g. past a grace period), or `cancelled` says
  // true (CANCELLED; asked every few tens of milliseconds). Default: no recovery.
  [[nodiscard]] virtual absl::Status AwaitRecovery(const std::function<bool()>& cancelled) {
    return absl::UnavailableError("the expert backend cannot recover");
  }
};

}  // namespace moe

#endif  // MOE_COMMON_EXPERT_BACKEND_H_
