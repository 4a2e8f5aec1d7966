// The worker's end of the activation ring (common/activation_ring.h): one thread that
// waits on the ring's doorbell, claims posted calls and answers each in its entry. It
// holds its own reference to the arena, so the mapping outlives a re-attach or a release
// by the owner watch until the thread has stopped.
#ifndef MOE_EXPERT_WORKER_RING_SERVER_H_
#define MOE_EXPERT_WORKER_RING_SERVER_H_

#include <atomic>
#include <functional>
#include <memory>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/activation_ring.h"
#include "common/ring_wait.h"
#include "common/activation_arena.h"

namespace moe::expert_worker {

class RingServer {
 public:
  // Serves one call: the request as copied out of the ring (unchecked), and the reply.
  using Handler = std::function<ring::RingReply(const ring::RingRequest&)>;

  // Starts serving the ring of `slots` entries at `offset` in `arena`. `wait`: how the
  // thread waits for the doorbell (a spin is a shorter wake-up for a coordinator that
  // posts again soon, at the price of a busy core meanwhile; common/ring_wait.h).
  // INVALID_ARGUMENT when the ring does not lie inside the arena, 64-byte aligned, or
  // the arena is device memory (the ring's words are host memory).
  static absl::StatusOr<std::unique_ptr<RingServer>> Start(std::shared_ptr<ActivationArena> arena,
                                                           uint64_t offset, uint32_t slots,
                                                           uint32_t epoch, ring::WaitOptions wait,
                                                           Handler handler);
  // Stops the thread (after the call it is serving, if any), joins it, and marks the
  // ring's epoch stopped so that a caller waiting on it attaches again at once.
  ~RingServer();
  RingServer(const RingServer&) = delete;
  RingServer& operator=(const RingServer&) = delete;

  uint64_t calls() const { return calls_.load(std::memory_order_relaxed); }

 private:
  RingServer(std::shared_ptr<ActivationArena> arena, ring::Ring ring, uint32_t epoch,
             ring::WaitOptions wait, Handler handler)
      : arena_(std::move(arena)), ring_(ring), epoch_(epoch), spin_(wait),
        handler_(std::move(handler)) {}
  void Serve();

  // How long one sleep on the doorbell lasts before the thread looks at stop_ again.
  static constexpr absl::Duration kStopCheck = absl::Milliseconds(100);

  std::shared_ptr<ActivationArena> arena_;
  ring::Ring ring_;
  uint32_t epoch_;
  ring::SpinPolicy spin_;  // used by the serving thread only
  Handler handler_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> calls_{0};
  std::thread thread_;
};

}  // namespace moe::expert_worker

#endif  // MOE_EXPERT_WORKER_RING_SERVER_H_
