#include "expert_worker/ring_server.h"

#include "absl/strings/str_cat.h"
#include "common/checked_math.h"
#include "common/status.h"

namespace moe::expert_worker {

absl::StatusOr<std::unique_ptr<RingServer>> RingServer::Start(std::shared_ptr<ActivationArena> arena,
                                                              uint64_t offset, uint32_t slots,
                                                              uint32_t epoch, absl::Duration spin,
                                                              Handler handler) {
  if (slots < 1 || slots > ring::kMaxRingSlots) {
    return absl::InvalidArgumentError(absl::StrCat("a ring of ", slots, " slots is not in [1, ",
                                                   ring::kMaxRingSlots, "]"));
  }
  if (arena->on_device()) {
    return absl::InvalidArgumentError("a ring must lie in host memory, not in a device arena");
  }
  MOE_ASSIGN_OR_RETURN(void* base, arena->At(offset, ring::RingBytes(slots)));
  MOE_ASSIGN_OR_RETURN(ring::Ring ring, ring::Ring::At(base, slots));
  auto server = std::unique_ptr<RingServer>(
      new RingServer(std::move(arena), ring, epoch, spin, std::move(handler)));
  server->thread_ = std::thread([s = server.get()] { s->Serve(); });
  return server;
}

RingServer::~RingServer() {
  stop_.store(true);
  // The thread sleeps at most kStopCheck on the doorbell; a wake shortens that.
  ring::FutexWakeAll(&ring_.header().doorbell);
  thread_.join();
  ring_.MarkStopped(epoch_);
}

void RingServer::Serve() {
  while (!stop_.load(std::memory_order_relaxed)) {
    // Read before looking for work: a call posted after the scan moves it past `seen`.
    const uint32_t seen = ring_.header().doorbell.load(std::memory_order_acquire);
    bool served = false;
    // The stop flag is read before every claim: a peer that re-posts entries as fast as
    // they are answered would otherwise keep this loop (and the joining owner) going.
    for (int slot; !stop_.load(std::memory_order_relaxed) && (slot = ring_.Claim()) >= 0;) {
      // A private copy: the coordinator's memory may change under us.
      const ring::RingRequest request = ring_.entry(static_cast<uint32_t>(slot)).request;
      ring_.Complete(static_cast<uint32_t>(slot), handler_(request));
      calls_.fetch_add(1, std::memory_order_relaxed);
      served = true;
    }
    if (served) continue;
    ring_.AwaitDoorbell(seen, spin_, kStopCheck);
  }
}

}  // namespace moe::expert_worker
