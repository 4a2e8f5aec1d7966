// Runs one MoE layer for a batch of tokens against the slot cache, through the device's
// kernels: tokens grouped by expert, each expert leased, computed and released in turn.
// Shared by the in-process backend and the worker's gRPC service.
//
// Per expert, resident ones first, on the call's compute stream: wait for the slot's
// copy (its ready event), GatherRows of its tokens, MatMul w1 and w3, SiluMul, MatMul w2
// into each entry's own row of scratch; then record the slot's use, so that a refill of
// the slot waits for these kernels. Then ScatterAddRows of every expert's rows with the
// routing weights into out, experts in ascending id order. The stream is synchronised
// once, at the end of the call. On the CPU device this is the same float arithmetic, in
// the same order, as the engine has always done (bit-identical results), whatever was
// resident.
#ifndef MOE_EXPERT_WORKER_EXPERT_RUNNER_H_
#define MOE_EXPERT_WORKER_EXPERT_RUNNER_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "common/activation_batch.h"
#include "common/backend/kernels.h"
#include "common/expert_backend.h"
#include "expert_worker/prefetch_queue.h"
#include "expert_worker/slot_cache.h"

namespace moe::expert_worker {

// Thread-safe: each call takes its own workspace (stream and scratch) from a pool.
class ExpertRunner {
 public:
  // Workspace rows per expert pass on a GPU when none is given.
  static constexpr int64_t kDefaultWorkspaceTokens = 256;

  // `cache` must outlive the runner; the runner computes on cache->device(). With
  // `load_whole_layer`, every expert of the layer is brought into the cache for each
  // call, used or not: what generic layer offloading does (the "naive" baseline of the
  // benchmarks). `workspace_tokens`: rows of scratch per expert pass, larger groups are
  // computed in chunks of that many; 0: kDefaultWorkspaceTokens on a GPU, and on the CPU
  // scratch as large as the call (one pass per expert, as the engine always did).
  explicit ExpertRunner(SlotCache* cache, bool load_whole_layer = false,
                        int64_t workspace_tokens = 0);
  ~ExpertRunner();

  // out[t] = sum_j weights[t, j] * Expert(layer, ids[t, j])(x[t]); shapes as in
  // ExpertBackend::RunExperts. Ids, layer and sizes are validated. ids and weights are
  // host memory; x and out are in `place`: computed on in place when the runner's device
  // can (its own memory; host memory on the CPU), else staged through its device (host
  // memory of a CUDA worker: inline tensors, the shared arena). out is complete on return. `stats`, if
  // not null, has this call's figures added (stall_s: time inside SlotCache::Acquire;
  // compute_s: queuing the kernels and waiting for them).
  absl::Status Run(int layer, absl::Span<const float> x, int64_t n, absl::Span<const int32_t> ids,
                   absl::Span<const float> weights, absl::Span<float> out,
                   ExpertCallStats* stats = nullptr,
                   MemoryPlace place = MemoryPlace::Host()) const;

  SlotCache& cache() const { return *cache_; }
  // Rows of scratch per expert pass (0: as many as the call needs).
  int64_t workspace_tokens() const { return workspace_tokens_; }
  // Device bytes the scratch of one call takes with `tokens` workspace rows (x/out
  // staging, the per-entry outputs [n * k, H] and index arrays not included: they scale
  // with the call).
  static uint64_t WorkspaceBytes(const ExpertLayout& layout, int64_t tokens);

 private:
  struct Workspace;  // one call's stream and scratch
  absl::StatusOr<std::unique_ptr<Workspace>> TakeWorkspace() const;
  void ReturnWorkspace(std::unique_ptr<Workspace> workspace) const;

  SlotCache* cache_;
  bool load_whole_layer_;
  int64_t workspace_tokens_;
  // The device's kernels; when they could not be made, every Run answers kernels_status_.
  std::unique_ptr<backend::Kernels> kernels_;
  absl::Status kernels_status_;
  mutable std::mutex pool_mu_;
  mutable std::vector<std::unique_ptr<Workspace>> pool_;  // guarded by pool_mu_
};

// The expert worker linked into the caller's process. Thread-safe. It lends activation
// batches in memory of the cache's device (host memory on the CPU): the caller computes
// on that device, and the experts read x and write out in place.
class InProcessBackend : public ExpertBackend {
 public:
  explicit InProcessBackend(SlotCache* cache, bool load_whole_layer = false,
                            int64_t workspace_tokens = 0)
      : runner_(cache, load_whole_layer, workspace_tokens), prefetch_(cache) {}
  ~InProcessBackend() override;
  absl::StatusOr<std::unique_ptr<ActivationBatch>> Lend(int64_t rows) override;
  absl::Status RunExperts(int layer, ActivationBatch& batch, absl::Span<const int32_t> ids,
                          absl::Span<const float> weights, ExpertCallStats* stats) override;
  void Prefetch(int layer, absl::Span<const int32_t> experts) override {
    prefetch_.Enqueue(layer, std::vector<int>(experts.begin(), experts.end()));
  }
  PrefetchQueue& prefetch_queue() { return prefetch_; }
  backend::Device& device() const { return runner_.cache().device(); }

 private:
  class Batch;  // a lent batch: one buffer of the pool, x then out
  void GiveBack(std::unique_ptr<backend::DeviceBuffer> buffer);

  ExpertRunner runner_;
  PrefetchQueue prefetch_;
  // Buffers of returned batches, reused by the next Lend that fits; at most
  // kIdleBuffers are kept. Guarded by pool_mu_.
  static constexpr size_t kIdleBuffers = 4;
  std::mutex pool_mu_;
  std::vector<std::unique_ptr<backend::DeviceBuffer>> idle_;
};

}  // namespace moe::expert_worker

#endif  // MOE_EXPERT_WORKER_EXPERT_RUNNER_H_
