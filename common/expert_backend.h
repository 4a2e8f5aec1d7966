// The coordinator's view of the experts: whoever owns them (the worker linked in, or a
// worker process over gRPC) implements this. The coordinator never sees expert weights.
#ifndef MOE_COMMON_EXPERT_BACKEND_H_
#define MOE_COMMON_EXPERT_BACKEND_H_

#include <cstdint>
#include <functional>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "common/expert_stats.h"

namespace moe {

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
