// The coordinator's ExpertBackend over gRPC: each MoE layer is one RunExperts call to an
// expert worker. On a unix socket the hidden states go through a shared activation
// arena, attached once, and calls carry only offsets, ids and weights; on TCP they
// travel inline.
#ifndef MOE_COORDINATOR_WORKER_CLIENT_H_
#define MOE_COORDINATOR_WORKER_CLIENT_H_

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/expert_backend.h"
#include "common/model_config.h"
#include "common/shared_arena.h"
#include "moe/v1/expert_worker.grpc.pb.h"

namespace moe::coordinator {

struct WorkerClientOptions {
  std::string address;              // "unix:PATH" (zero-copy) or "HOST:PORT" (inline)
  int arena_slots = 8;              // RunExperts calls that may be in flight at once
  int64_t max_tokens_per_call = 256;  // longer batches (prefill) go in chunks
  absl::Duration rpc_timeout = absl::Seconds(60);
  bool force_inline = false;        // carry tensors inline even on a unix socket
  // How long a layer step that lost its worker waits for one to answer again (counted
  // from when the loss was first seen) before it fails with UNAVAILABLE.
  absl::Duration worker_grace = absl::Seconds(30);
};

struct WorkerClientStats {
  uint64_t calls = 0;
  double rpc_seconds = 0;     // round trips as the coordinator sees them
  double worker_seconds = 0;  // of which the worker reports loading and computing
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t recoveries = 0;  // times a lost worker answered again within the grace
};

// Thread-safe: concurrent RunExperts calls each use their own arena slot.
class WorkerClient : public ExpertBackend {
 public:
  // Connects lazily: the worker need not be up yet.
  static absl::StatusOr<std::unique_ptr<WorkerClient>> Create(const WorkerClientOptions& options,
                                                              const ModelConfig& config);
  // Waits for Prefetch hints still in flight.
  ~WorkerClient() override;

  absl::Status RunExperts(int layer, absl::Span<const float> x, int64_t n,
                          absl::Span<const int32_t> ids, absl::Span<const float> weights,
                          absl::Span<float> out, ExpertCallStats* stats) override;
  // Sends a Prefetch RPC without waiting for it (a lost hint costs nothing).
  void Prefetch(int layer, absl::Span<const int32_t> experts) override;
  // Polls the worker until it answers (OK: the next RunExperts attaches the arena again),
  // `cancelled` says true (CANCELLED) or `worker_grace` has passed since the worker was
  // first seen gone (UNAVAILABLE). Many callers may wait at once; they share one grace.
  absl::Status AwaitRecovery(const std::function<bool()>& cancelled) override;

  // Whether the worker answers its health check now (SERVING). Also what AwaitRecovery
  // counts the grace from: the first failed answer (or call) after a good one.
  bool WorkerServing(absl::Duration timeout = absl::Milliseconds(500));
  bool zero_copy() const { return arena_ != nullptr; }
  WorkerClientStats Stats() const;
  v1::ExpertWorker::Stub& stub() { return *stub_; }

 private:
  WorkerClient(const WorkerClientOptions& options, const ModelConfig& config,
               std::shared_ptr<grpc::Channel> channel, std::unique_ptr<SharedArena> arena);
  absl::Status EnsureAttached();
  absl::Status Attach();
  absl::Status RunChunk(int slot, int layer, absl::Span<const float> x, int64_t n,
                        absl::Span<const int32_t> ids, absl::Span<const float> weights,
                        absl::Span<float> out, ExpertCallStats* stats);
  int AcquireSlot();
  void ReleaseSlot(int slot);
  void NoteWorker(bool answered);

  const WorkerClientOptions options_;
  const ModelConfig config_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::ExpertWorker::Stub> stub_;
  std::unique_ptr<SharedArena> arena_;  // null in inline mode
  uint64_t slot_bytes_ = 0;             // per slot: input then output, each [max_tokens, H]

  std::mutex attach_mu_;
  bool attached_ = false;  // guarded by attach_mu_

  std::mutex slot_mu_;
  std::condition_variable slot_free_;
  std::vector<int> free_slots_;  // guarded by slot_mu_

  std::mutex prefetch_mu_;
  std::condition_variable prefetch_done_;
  int prefetches_in_flight_ = 0;  // guarded by prefetch_mu_

  std::mutex lost_mu_;
  std::optional<absl::Time> lost_since_;  // guarded by lost_mu_; unset while the worker answers

  mutable std::mutex stats_mu_;
  WorkerClientStats stats_;  // guarded by stats_mu_
};

}  // namespace moe::coordinator

#endif  // MOE_COORDINATOR_WORKER_CLIENT_H_
