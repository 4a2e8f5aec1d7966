// A wake-up for many waiters that costs the notifier one system call however many of
// them sleep, and none when none does. The batch scheduler's step thread hands each of
// a step's streams its token and then wakes their callers with one NotifyAll, instead
// of one condition-variable broadcast (a futex call each, expensive on a paravirtualised
// guest) per stream on the step's critical path.
//
// The pattern, for a condition guarded by the waiter's own lock:
//
//   for (;;) {
//     const uint32_t seen = signal.epoch();
//     { lock; if (condition) break; }
//     signal.Wait(seen);  // returns at once if NotifyAll ran since epoch()
//   }
//
// and the notifier makes the condition true (under that lock), then calls NotifyAll.
// Every waiter wakes on every NotifyAll and checks its own condition: meant for waiters
// whose conditions mostly come true together. Linux futex; thread-safe.
#ifndef MOE_COORDINATOR_EPOCH_BROADCAST_H_
#define MOE_COORDINATOR_EPOCH_BROADCAST_H_

#include <atomic>
#include <cstdint>

namespace moe::coordinator {

class EpochBroadcast {
 public:
  // Read before checking the condition; hand it to Wait.
  uint32_t epoch() const { return epoch_.load(); }
  // Sleeps until a NotifyAll after the one `seen` was read at (at once if there was
  // one). May return spuriously: the caller checks its condition again.
  void Wait(uint32_t seen);
  // Wakes every waiter: one futex call if any sleeps, none otherwise.
  void NotifyAll();
  // NotifyAll calls that made a system call (tests).
  uint64_t wake_calls() const { return wake_calls_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint32_t> epoch_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<uint64_t> wake_calls_{0};
};

}  // namespace moe::coordinator

#endif  // MOE_COORDINATOR_EPOCH_BROADCAST_H_
