// The coordinator's view of the experts: whoever owns them (the worker linked in, or a
// worker process over gRPC) implements this. The coordinator never sees expert weights.
#ifndef MOE_COMMON_EXPERT_BACKEND_H_
#define MOE_COMMON_EXPERT_BACKEND_H_

#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "common/activation_batch.h"
#include "common/expert_stats.h"

namespace moe {

class ExpertBackend {
 public:
  virtual ~ExpertBackend() = default;

  // Lends the activation batch of a call of `rows` rows (activation_batch.h): memory
  // that the caller's device computes on (the CPU, or the CUDA device the backend was
  // made for), where the backend reads x and writes out without staging them when it
  // can. Blocks while every buffer the backend can lend at once is out. INVALID_ARGUMENT
  // for rows outside [1, kMaxActivationRows]; RESOURCE_EXHAUSTED when it cannot be had.
  [[nodiscard]] virtual absl::StatusOr<std::unique_ptr<ActivationBatch>> Lend(int64_t rows) = 0;

  // One MoE layer for the batch's n = batch.rows() tokens:
  //   out[t] = sum_j weights[t, j] * Expert(layer, ids[t, j])(x[t])
  // x (already RMS-normalised) and out are the batch's; ids/weights: [n, experts_per_tok]
  // host memory. x must be complete (the caller has synchronised the stream that wrote
  // it); out is complete on return and overwritten. A batch another backend lent is
  // refused (INVALID_ARGUMENT). `stats`, if not null, has this call's figures added.
  // After UNAVAILABLE the batch may still be written by a lost worker: lend a new one
  // to redo the call.
  [[nodiscard]] virtual absl::Status RunExperts(int layer, ActivationBatch& batch,
                                                absl::Span<const int32_t> ids,
                                                absl::Span<const float> weights,
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

// RunExperts for a caller whose x and out are its own host memory [n, hidden] (tests and
// tools): lends a batch, copies x in and out back. FAILED_PRECONDITION when the backend
// lends device memory.
[[nodiscard]] inline absl::Status RunExpertsFromHost(ExpertBackend& backend, int layer,
                                                     absl::Span<const float> x, int64_t n,
                                                     absl::Span<const int32_t> ids,
                                                     absl::Span<const float> weights,
                                                     absl::Span<float> out,
                                                     ExpertCallStats* stats) {
  absl::StatusOr<std::unique_ptr<ActivationBatch>> batch = backend.Lend(n);
  if (!batch.ok()) return batch.status();
  ActivationBatch& b = **batch;
  if (!b.place().is_host()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the expert backend lends ", b.place().name(), ", not host memory"));
  }
  if (x.size() != b.x().size() || out.size() != b.out().size()) {
    return absl::InvalidArgumentError(absl::StrCat("RunExperts: x has ", x.size(), " and out ",
                                                   out.size(), " floats for ", n, " rows of ",
                                                   b.x().size() / size_t(n)));
  }
  std::memcpy(b.x().data(), x.data(), x.size() * sizeof(float));
  if (absl::Status ran = backend.RunExperts(layer, b, ids, weights, stats); !ran.ok()) return ran;
  std::memcpy(out.data(), b.out().data(), out.size() * sizeof(float));
  return absl::OkStatus();
}

}  // namespace moe

#endif  // MOE_COMMON_EXPERT_BACKEND_H_
