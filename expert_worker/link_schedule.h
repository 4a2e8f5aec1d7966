// The modelled link (--link-gbps, --link-latency-us; CPU device only): makes copies into
// the expert cache cost what they would over a link such as PCIe, so cache and prefetch
// effects are measurable without a GPU. It is a copy engine's timetable, not a copy: no
// bytes move (modelled_link_device.h, the device it times, lets the expert be read in
// place once its copy is "done"), so a prefetch costs no CPU time, as a DMA engine takes
// none from the SMs where a memcpy here would take a core from compute.
#ifndef MOE_EXPERT_WORKER_LINK_SCHEDULE_H_
#define MOE_EXPERT_WORKER_LINK_SCHEDULE_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"

namespace moe::expert_worker {

struct LinkModel {
  double gbps = 0;          // GB/s (1e9 bytes); 0 (and no latency): a real memcpy
  double latency_us = 0;    // per copy
  bool modelled() const { return gbps > 0 || latency_us > 0; }
  // Seconds one copy of `bytes` occupies the link.
  double Seconds(uint64_t bytes) const {
    return gbps > 0 ? latency_us * 1e-6 + double(bytes) / (gbps * 1e9) : 0;
  }
};

// The one check of a link model, whichever binary's flags it came from: INVALID_ARGUMENT
// for a negative or non-finite figure (CheckExpertStackOptions names the flags).
absl::Status CheckLinkModel(const LinkModel& link);

// The link's timetable. Each copy takes latency + bytes / bandwidth. Demand copies queue
// among themselves; a demand copy overtakes every scheduled prefetch, and one already
// moving bytes gives way at its next kChunkBytes boundary (a copy engine cannot stop
// mid-chunk): the prefetches then end later by the demand copy's duration. Prefetches
// are issued at once and queue behind each other, as on a copy stream. No thread sleeps
// for a prefetch, so none wakes up to preempt compute.
//
// Not thread-safe: its owner serialises every call (ModelledLinkDevice, under its mutex),
// and keeps each scheduled Copy at a stable address until it is done.
class LinkSchedule {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr size_t kChunkBytes = 256 << 10;

  // One modelled copy: its bytes move from `start` and it is done at `ready`; both move
  // later while it is a prefetch that a demand copy overtakes.
  struct Copy {
    Clock::time_point start{}, ready{};
    bool in_flight(Clock::time_point now) const { return ready > now; }
  };

  // Puts a copy of `bytes` over `link` (modelled) on the timetable, into `copy`.
  void Schedule(bool prefetch, const LinkModel& link, uint64_t bytes, Copy* copy);

  // Blocks until `end`, for a copy the caller needs: sleeps, then polls the last stretch
  // (the caller has nothing else to do, and a wake-up on a busy machine takes tens of
  // microseconds).
  static void WaitUntil(Clock::time_point end);

 private:
  Clock::time_point demand_free_{};  // end of the last demand copy
  std::vector<Copy*> prefetches_;    // prefetch copies not done, in link order
};

}  // namespace moe::expert_worker

#endif  // MOE_EXPERT_WORKER_LINK_SCHEDULE_H_
