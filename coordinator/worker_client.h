// The coordinator's ExpertBackend over gRPC: each MoE layer is one RunExperts call to an
// expert worker. On a unix socket the hidden states live in an activation arena,
// attached once, and calls carry only offsets, ids and weights; on TCP they travel
// inline. The batch the model norms into is lent from the arena (Lend), so nothing is
// copied on the way. With a CUDA device the arena is device memory exported by CUDA
// IPC, offered first; a worker that cannot map it (another GPU, a CPU worker) refuses it
// and the client stages through the shared host arena instead.
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
#include "common/backend/device.h"
#include "common/backend/device_ipc_arena.h"
#include "common/expert_backend.h"
#include "common/grpc_security.h"
#include "common/activation_ring.h"
#include "common/ring_wait.h"
#include "common/model_config.h"
#include "common/process_watch.h"
#include "common/shared_arena.h"
#include "moe/v1/expert_worker.grpc.pb.h"

namespace moe::coordinator {

struct WorkerClientOptions {
  std::string address;              // "unix:PATH" (zero-copy) or "HOST:PORT" (inline)
  TlsFiles tls;                     // TCP: verify the worker (ca), prove ourselves (cert, key)
  int arena_slots = 8;              // RunExperts calls that may be in flight at once
  int64_t max_tokens_per_call = 256;  // longer batches (prefill) go in chunks
  // RunExperts' deadline is the smaller of this and worker_grace; a call past it counts
  // as a hung worker (UNAVAILABLE, waited for within the grace), never DEADLINE_EXCEEDED.
  absl::Duration rpc_timeout = absl::Seconds(60);
  bool force_inline = false;        // carry tensors inline even on a unix socket
  // How long a layer step that lost its worker waits for one to answer again (counted
  // from when the loss was first seen) before it fails with UNAVAILABLE.
  absl::Duration worker_grace = absl::Seconds(30);
  // The device the coordinator computes on, where RunExperts' x and out live; it must
  // outlive the client. nullptr or a CPU device: host memory, as before.
  backend::Device* device = nullptr;
  // With the shared host arena: offer the worker a ring in it (common/activation_ring.h),
  // so that RunExperts is a doorbell instead of an RPC when the worker serves it; and how
  // a call waits for its reply (common/ring_wait.h).
  bool use_ring = true;
  ring::WaitOptions ring_wait;
};

// Where the host arena's bytes go: per slot the input then the output rows, then per slot
// the expert ids and weights of a ring call, then the ring. Offsets 64-byte aligned.
struct HostArenaLayout {
  uint64_t slot_bytes = 0;     // input then output, each [max_tokens, hidden] fp32
  uint64_t routes_offset = 0;  // slot s's ids at routes_offset + s * route_bytes
  uint64_t route_bytes = 0;    // ids then weights, each [max_tokens, experts_per_tok]
  uint64_t ring_offset = 0;
  uint64_t total = 0;
  static HostArenaLayout For(int slots, int64_t max_tokens, const ModelConfig& config);
};

// How a call's activations reach the worker.
enum class ActivationPath {
  kInline,       // inside the RPC bytes (TCP, or force_inline)
  kHostArena,    // a shared host (memfd) arena; device activations are staged through it
  kDeviceArena,  // the coordinator's device arena, mapped by the worker (CUDA IPC)
};

// Thread-safe: each lent batch holds an arena slot of its own (and, on a CUDA device, a
// stream for its copies) until it is destroyed. On a device, x must be complete when
// RunExperts is called (the caller has synchronised the stream that wrote it); out is
// complete on return. Ordering with the worker is the RPC or ring boundary: any input
// copy is waited for before the request goes out, and the worker replies only once out
// is written.
class WorkerClient : public ExpertBackend {
 public:
  // Connects lazily: the worker need not be up yet.
  static absl::StatusOr<std::unique_ptr<WorkerClient>> Create(const WorkerClientOptions& options,
                                                              const ModelConfig& config);
  // Waits for Prefetch hints still in flight.
  ~WorkerClient() override;

  // A slot of the activation arena when the batch fits one and the caller computes on
  // the arena's memory (the host arena on the CPU, the device arena on a CUDA device):
  // the worker then reads x and writes out in place. Otherwise memory of the caller's
  // device held by the slot, staged to the worker per call. Blocks while every slot is
  // lent; rows beyond a slot are sent in chunks.
  absl::StatusOr<std::unique_ptr<ActivationBatch>> Lend(int64_t rows) override;
  absl::Status RunExperts(int layer, ActivationBatch& batch, absl::Span<const int32_t> ids,
                          absl::Span<const float> weights, ExpertCallStats* stats) override;
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
  // Whether calls go through the activation ring now (the worker serves it).
  bool ring_active() const { return ring_active_.load(); }
  // The path calls take now (the device arena until a worker refuses it).
  ActivationPath path() const;
  // Every call's figures since the client was made (rpc_s: calls as seen from here).
  ExpertCallStats Stats() const;
  // Times a lost worker answered again within the grace.
  uint64_t recoveries() const;
  // Activation bytes this client has copied since it was made (into the arena, into or
  // out of inline tensors, back into a batch): 0 while every lent batch lives in its slot.
  uint64_t staged_bytes() const { return staged_bytes_.load(std::memory_order_relaxed); }
  v1::ExpertWorker::Stub& stub() { return *stub_; }

 private:
  WorkerClient(const WorkerClientOptions& options, const ModelConfig& config,
               std::shared_ptr<grpc::Channel> channel, std::unique_ptr<SharedArena> arena,
               std::unique_ptr<backend::DeviceIpcArena> device_arena,
               std::vector<std::unique_ptr<backend::Stream>> streams);
  absl::Status EnsureAttached();
  absl::Status Attach();
  // The AttachArena call; then whether the worker serves this model.
  absl::StatusOr<v1::AttachArenaResponse> AttachRpc(const v1::AttachArenaRequest& request);
  // AttachArena for the shared host arena.
  v1::AttachArenaRequest HostArenaRequest() const;
  absl::Status CheckWorkerModel(const v1::AttachArenaResponse& response) const;
  // Chunks calls to the tokens the worker accepted at attach time.
  void AdoptCallTokens(const v1::AttachArenaResponse& response);
  // With use_ring: resets the host arena's ring under a new epoch and offers it in
  // `request` (beside a device arena, with the host arena as its ring_arena).
  absl::Status OfferRing(v1::AttachArenaRequest* request);
  // After an attach: calls go through the ring when the worker serves it and its process
  // can be watched. Guarded by attach_mu_ (as Attach is).
  void AdoptRing(const v1::AttachArenaResponse& response);
  class Lease;
  // Where one chunk's rows are for the worker: offsets in `arena` (null: inline), and
  // whether they were copied there from the lease (staged).
  struct ChunkSlices {
    const ActivationArena* arena = nullptr;
    uint64_t x_offset = 0, out_offset = 0, bytes = 0;
    bool staged = false;
  };
  // Where the caller computes: host memory, or its CUDA device's.
  MemoryPlace CallerPlace() const;
  // The arena a path uses (null inline), and where its bytes are.
  const ActivationArena* ArenaOf(ActivationPath path) const;
  MemoryPlace ArenaPlace(ActivationPath path) const;
  // Any two places; a device copy runs on the slot's stream and is waited for.
  absl::Status Copy(int slot, void* dst, MemoryPlace dst_place, const void* src,
                    MemoryPlace src_place, size_t bytes);
  // Rows [start, start + n) of the lease for the arena of `path`: named in place, or
  // copied into the slot's rows of it.
  absl::Status StageInput(Lease& lease, ActivationPath path, int64_t start, int64_t n,
                          ChunkSlices* slices);
  // The worker's result into the lease's out rows, unless it wrote them in place.
  absl::Status ReadOutput(Lease& lease, ActivationPath path, int64_t start,
                          const ChunkSlices& slices, const std::string* inline_out);
  // One chunk as an RPC, or through the ring; its out rows are written when OK. Both
  // retire the lease when the worker may still write into its slot (a call that timed
  // out), and answer UNAVAILABLE for a lost or hung worker.
  absl::Status RpcCall(Lease& lease, ActivationPath path, int64_t start,
                       v1::RunExpertsRequest* request, ExpertCallStats* figures);
  // `path`: the host arena, or the device arena (x and out there, the ring and the routes
  // in the host arena).
  absl::Status RingCall(Lease& lease, ActivationPath path, int layer, int64_t start, int64_t n,
                        absl::Span<const int32_t> ids, absl::Span<const float> weights,
                        ExpertCallStats* figures);
  // The ring in the current host arena.
  absl::StatusOr<ring::Ring> RingView() const;
  absl::Status RunChunk(Lease& lease, int layer, int64_t start, int64_t n,
                        absl::Span<const int32_t> ids, absl::Span<const float> weights,
                        ExpertCallStats* stats);
  // A free arena slot; once every slot is retired, a fresh arena first.
  absl::StatusOr<int> AcquireSlot();
  void ReleaseSlot(int slot, bool retire);
  // Replaces the host arena (no slot in use; slot_mu_ held).
  absl::Status RenewArena();
  void NoteWorker(bool answered);
  void NoteWorkerLostSince(absl::Time when);
  // RunExperts' deadline: the worker grace (or rpc_timeout if shorter).
  absl::Duration CallTimeout() const;
  // Now + CallTimeout(), but never past the end of a grace already running.
  absl::Time CallDeadline();

  const WorkerClientOptions options_;
  const ModelConfig config_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::ExpertWorker::Stub> stub_;
  // Null in inline mode. Replaced (RenewArena) only while no slot is in use.
  std::unique_ptr<SharedArena> arena_;
  // Same layout as arena_, another id; null unless the caller computes on a CUDA device.
  std::unique_ptr<backend::DeviceIpcArena> device_arena_;
  // One per arena slot when the caller computes on a CUDA device (its copies), else empty.
  std::vector<std::unique_ptr<backend::Stream>> streams_;
  // Per slot, the memory of a batch that does not live in an arena (grown as needed;
  // only the slot's holder touches it): host memory, or the caller's device memory.
  struct Staging {
    std::vector<float> host;
    std::unique_ptr<backend::DeviceBuffer> device;
  };
  std::vector<Staging> staging_;
  // Per arena slot, how a ring call in it waits for its reply: the slot's lease holder
  // is its only user.
  std::vector<ring::SpinPolicy> ring_waits_;
  std::atomic<uint64_t> staged_bytes_{0};
  const HostArenaLayout layout_;
  uint64_t slot_bytes_ = 0;             // per slot: input then output, each [max_tokens, H]
  // Tokens per RunExperts: max_tokens_per_call, or less if the worker said so.
  std::atomic<int64_t> call_tokens_;

  std::mutex attach_mu_;
  bool attached_ = false;  // guarded by attach_mu_
  // False once a worker refused the device arena: from then on the host arena.
  std::atomic<bool> use_device_arena_{false};
  std::atomic<bool> path_logged_{false};
  // Set at each attach: whether the worker serves the ring, under which epoch, and a
  // watch on its process (a call in the ring learns of its death only from that).
  std::atomic<bool> ring_active_{false};
  uint32_t ring_epoch_ = 0;                     // guarded by attach_mu_
  std::shared_ptr<ProcessWatch> worker_watch_;  // guarded by attach_mu_

  std::mutex slot_mu_;
  std::condition_variable slot_free_;
  std::vector<int> free_slots_;  // guarded by slot_mu_
  // Slots a timed-out call may still be written into by the worker; guarded by slot_mu_.
  std::vector<int> retired_slots_;
  int slots_in_use_ = 0;  // guarded by slot_mu_

  std::mutex prefetch_mu_;
  std::condition_variable prefetch_done_;
  int prefetches_in_flight_ = 0;  // guarded by prefetch_mu_

  std::mutex lost_mu_;
  std::optional<absl::Time> lost_since_;  // guarded by lost_mu_; unset while the worker answers

  mutable std::mutex stats_mu_;
  ExpertCallStats stats_;    // guarded by stats_mu_
  uint64_t recoveries_ = 0;  // guarded by stats_mu_
};

}  // namespace moe::coordinator

#endif  // MOE_COORDINATOR_WORKER_CLIENT_H_
