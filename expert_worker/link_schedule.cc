#include "expert_worker/link_schedule.h"

#include <sys/prctl.h>

#include <algorithm>
#include <cmath>
#include <thread>

#include "absl/strings/str_cat.h"

namespace moe::expert_worker {
namespace {

using Clock = LinkSchedule::Clock;

Clock::duration Seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

// Modelled copies sleep rather than spin (the cores are for compute); with the thread's
// timer slack cut to 1 ns, wake-ups land within microseconds instead of the default 50.
void SetTimerSlack() {
  thread_local const bool slack_set = prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0) == 0;
  (void)slack_set;
}

// A demand copy polls the clock for its last microseconds, where a sleep would overshoot.
constexpr int kPollUs = 150;

}  // namespace

absl::Status CheckLinkModel(const LinkModel& link) {
  if (!std::isfinite(link.gbps) || link.gbps < 0 || !std::isfinite(link.latency_us) ||
      link.latency_us < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a link model needs a bandwidth and a latency >= 0 (got ", link.gbps, " GB/s and ",
        link.latency_us, " us)"));
  }
  return absl::OkStatus();
}

void LinkSchedule::WaitUntil(Clock::time_point end) {
  SetTimerSlack();
  std::this_thread::sleep_until(end - std::chrono::microseconds(kPollUs));
  while (Clock::now() < end) {
  }
}

void LinkSchedule::Schedule(bool prefetch, const LinkModel& link, uint64_t bytes, Copy* copy) {
  const Clock::time_point now = Clock::now();
  const double bandwidth = link.gbps * 1e9;  // bytes/s; 0: latency only
  const auto duration =
      Seconds(link.latency_us * 1e-6 + (bandwidth > 0 ? double(bytes) / bandwidth : 0));
  // Forget finished prefetches.
  std::erase_if(prefetches_, [&](const Copy* c) { return c->ready <= now; });
  if (prefetch) {
    Clock::time_point start = std::max(now, demand_free_);
    for (const Copy* c : prefetches_) start = std::max(start, c->ready);
    copy->start = start;
    copy->ready = start + duration;
    prefetches_.push_back(copy);
    return;
  }
  Clock::time_point start = std::max(now, demand_free_);
  for (const Copy* c : prefetches_) {
    if (c->start < start && c->ready > start) {  // moving bytes now
      if (bandwidth > 0) {
        const auto chunk = Seconds(double(kChunkBytes) / bandwidth);
        const auto chunks = (start - c->start + chunk - Clock::duration(1)) / chunk;
        start = std::min(c->ready, c->start + chunk * chunks);
      } else {
        start = c->ready;  // latency only: nothing to split
      }
    }
  }
  for (Copy* c : prefetches_) {
    if (c->ready > start) {
      c->ready += duration;
      if (c->start >= start) c->start += duration;
    }
  }
  demand_free_ = start + duration;
  copy->start = start;
  copy->ready = demand_free_;
}

}  // namespace moe::expert_worker
