#include "expert_worker/ring_server.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/checked_math.h"
#include "common/logging.h"
#include "common/status.h"

namespace moe::expert_worker {

absl::StatusOr<std::unique_ptr<RingServer>> RingServer::Start(std::shared_ptr<ActivationArena> arena,
                                                              uint64_t offset, uint32_t slots,
                                                              uint32_t epoch, ring::WaitOptions wait,
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
      new RingServer(std::move(arena), ring, epoch, wait, std::move(handler)));
  server->thread_ = std::thread([s = server.get()] { s->Serve(); });
  return server;
}

RingServer::~RingServer() {
  stop_.store(true);
  // The thread sleeps at most kStopCheck on the doorbell; a wake shortens that.
  ring::FutexWakeAll(&ring_.header().doorbell);
  thread_.join();
  ring_.MarkStopped(epoch_);
  MOE_LOG(INFO) << "ring of epoch " << epoch_ << " served " << calls() << " calls; waited for "
                << spin_.waits() << " of them, spun " << spin_.spins() << " (caught "
                << spin_.caught() << ")";
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
    // Waits for the next call, timed for the policy (a sleep through kStopCheck with
    // nothing posted is an idle pause, which the policy clips).
    const auto t0 = std::chrono::steady_clock::now();
    const bool caught = ring_.AwaitDoorbell(seen, spin_.NextSpin(), kStopCheck);
    spin_.Record(absl::FromChrono(std::chrono::steady_clock::now() - t0), caught);
  }
}

}  // namespace moe::expert_worker
