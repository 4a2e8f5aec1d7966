// The expert worker's gRPC service: a thin adapter from moe.v1.ExpertWorker onto the
// ExpertRunner and SlotCache. Runs on gRPC's synchronous server (each call on a pool
// thread), since RunExperts computes for milliseconds and must not block a reactor.
#ifndef MOE_EXPERT_WORKER_WORKER_SERVICE_H_
#define MOE_EXPERT_WORKER_WORKER_SERVICE_H_

#include <atomic>
#include <chrono>
#include <string>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/time/time.h"
#include "common/backend/device.h"
#include "common/activation_arena.h"
#include "common/backend/device_ipc_arena.h"
#include "common/prometheus_text.h"
#include "common/shared_arena.h"
#include "expert_worker/attach_arena_request.h"
#include "expert_worker/expert_runner.h"
#include "expert_worker/prefetch_queue.h"
#include "expert_worker/ring_request.h"
#include "expert_worker/ring_server.h"
#include "expert_worker/slot_cache.h"
#include "moe/v1/expert_worker.grpc.pb.h"

namespace moe::expert_worker {

// Thread-safe. `cache` must outlive the service, and so must `device` (the device the
// experts compute on; nullptr: the CPU). A background thread checks every
// `owner_check_interval` whether the coordinator that owns the attached arena still
// runs, and drops the arena (unmapping it) when it does not.
//
// The arena is shared host memory, or, when the coordinator offers a CUDA IPC handle and
// `device` is that very GPU, the coordinator's device memory: RunExperts then computes
// on it in place (MemoryPlace::On(device)) and replies only once ExpertRunner::Run
// has returned, i.e. once out is written; that reply (an RPC's, or the ring entry's
// kDone with the ring in the shared-memory ring_arena beside it) is the coordinator's
// signal to read it. Any other worker refuses the CUDA handle with FAILED_PRECONDITION naming why, so
// the coordinator falls back to shared host memory.
struct WorkerServiceOptions {
  // The device the experts compute on (must outlive the service); nullptr: the CPU.
  backend::Device* device = nullptr;
  absl::Duration owner_check_interval = absl::Milliseconds(250);
  // The runner's scratch rows per expert pass (ExpertRunner; 0: its default, which on
  // the CPU is as large as the call).
  int64_t workspace_tokens = 0;
  // Whose arenas may be attached, and how large.
  ArenaAttachPolicy arena_policy;
  // The most tokens one RunExperts may carry, whatever the arena holds: bounds the
  // worker's time and scratch memory per call (inline tensors are also bounded by the
  // gRPC message size).
  int64_t max_call_tokens = 4096;
  // Serve a ring the coordinator offers with a shared-memory arena (else every call is
  // an RPC), and how its thread waits for the doorbell (common/ring_wait.h).
  bool serve_ring = true;
  ring::WaitOptions ring_wait;
};

class WorkerService final : public moe::v1::ExpertWorker::Service {
 public:
  static constexpr absl::Duration kOwnerCheckInterval = absl::Milliseconds(250);
  explicit WorkerService(SlotCache* cache, const WorkerServiceOptions& options = {});
  ~WorkerService() override;

  grpc::Status AttachArena(grpc::ServerContext* context, const v1::AttachArenaRequest* request,
                           v1::AttachArenaResponse* response) override;
  grpc::Status RunExperts(grpc::ServerContext* context, const v1::RunExpertsRequest* request,
                          v1::RunExpertsResponse* response) override;
  grpc::Status Prefetch(grpc::ServerContext* context, const v1::PrefetchRequest* request,
                        v1::PrefetchResponse* response) override;
  grpc::Status SetCachePolicy(grpc::ServerContext* context,
                              const v1::SetCachePolicyRequest* request,
                              v1::SetCachePolicyResponse* response) override;
  grpc::Status GetStats(grpc::ServerContext* context, const v1::GetStatsRequest* request,
                        v1::WorkerStats* response) override;

  // Everything GetStats reports.
  v1::WorkerStats Stats() const;
  // The same figures as Prometheus text (names moe_worker_...), for /metrics.
  std::string RenderMetrics() const;

 private:
  // Attaches; returns the tokens per call accepted.
  absl::StatusOr<int64_t> DoAttachArena(const v1::AttachArenaRequest& request);
  absl::Status AttachDeviceArena(const v1::AttachArenaRequest& request,
                                 const AttachArenaShape& shape);
  // A server of the ring the request offers in `host` (the attached shared-memory arena,
  // or the ring_arena beside a device arena), whose calls' x and out lie in `device`
  // when it is set (a CUDA IPC arena), else in `host`. nullptr when the worker serves
  // no ring or none was offered.
  absl::StatusOr<std::unique_ptr<RingServer>> StartRing(const AttachArenaShape& shape,
                                                        std::shared_ptr<ActivationArena> host,
                                                        std::shared_ptr<ActivationArena> device);
  absl::Status DoRunExperts(const v1::RunExpertsRequest& request, v1::RunExpertsResponse* response);
  // Counts the call and fills the response's figures.
  absl::Status FinishRunExperts(std::chrono::steady_clock::time_point start,
                                const ExpertCallStats& stats, v1::RunExpertsResponse* response);
  // Counts a served call (RPC or ring).
  void CountCall(std::chrono::steady_clock::time_point start);
  // One call taken from the ring: checked against `limits`, its routes read from `host`,
  // computed on x and out in `device` (the CUDA IPC arena) when the entry says on_device,
  // else in `host`.
  ring::RingReply ServeRingCall(const ActivationArena& host, const ActivationArena* device,
                                const RingLimits& limits, const ring::RingRequest& request);
  absl::Status DoServeRingCall(const ActivationArena& host, const ActivationArena* device,
                               const RingLimits& limits, const ring::RingRequest& request,
                               ExpertCallStats* stats);
  void WatchArenaOwner();


  SlotCache* cache_;
  const WorkerServiceOptions options_;
  backend::Device* const device_;  // nullptr: the CPU
  ExpertRunner runner_;
  PrefetchQueue prefetch_;
  const std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  std::atomic<uint64_t> calls_{0};
  std::atomic<uint64_t> prefetch_requests_{0};
  std::atomic<uint64_t> run_experts_ns_{0};
  LatencyHistogram run_experts_latency_;  // for /metrics
  mutable std::mutex mu_;
  // The attached arena (shared host memory or a CUDA IPC mapping). In-flight calls hold
  // their own reference, so a re-attach never unmaps under them.
  std::shared_ptr<ActivationArena> arena_;  // guarded by mu_
  uint64_t arenas_released_ = 0;       // guarded by mu_
  bool stopping_ = false;              // guarded by mu_
  std::condition_variable stop_;
  // Tokens per call the attached arena's slots hold (AttachArena's
  // max_tokens_per_call, capped by options_.max_call_tokens).
  int64_t arena_call_tokens_ = 0;  // guarded by mu_
  // Counted by the ring's thread: declared before ring_, so it outlives that thread's join.
  std::atomic<uint64_t> ring_calls_{0};
  // Serves the attached host arena's ring, if the coordinator offered one; stopped and
  // replaced with the arena. Declared after runner_: stopped before it goes.
  std::unique_ptr<RingServer> ring_;  // guarded by mu_
  std::thread owner_watch_;
};

}  // namespace moe::expert_worker

#endif  // MOE_EXPERT_WORKER_WORKER_SERVICE_H_
