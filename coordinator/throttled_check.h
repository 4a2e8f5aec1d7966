// A yes/no question that is costly to ask, asked from a hot loop: whether a client went
// away. The batch scheduler asks every stream's `cancelled` before each layer of each
// step, and a gRPC context's IsCancelled plucks its completion queue (a lock and a timed
// futex wait, tens of microseconds on a paravirtualised guest): at 32 streams that was
// 160 such calls per step, on the step thread. Here the question is put to `ask` at
// most once per `interval` (the first call asks), and a yes is kept for good, so a
// client that went away is still seen, at most `interval` late.
#ifndef MOE_COORDINATOR_THROTTLED_CHECK_H_
#define MOE_COORDINATOR_THROTTLED_CHECK_H_

#include <atomic>
#include <cstdint>
#include <functional>

#include "absl/time/time.h"

namespace moe::coordinator {

// Thread-safe: when several threads call at once, one asks and the others take the
// last answer.
class ThrottledCheck {
 public:
  ThrottledCheck(std::function<bool()> ask, absl::Duration interval);
  ThrottledCheck(const ThrottledCheck&) = delete;
  ThrottledCheck& operator=(const ThrottledCheck&) = delete;

  bool operator()();
  // The same, but asks once the last question is half an interval old. For a thread off
  // the hot loop that comes by about once per loop (the stream's caller, after each
  // token): it keeps the answer fresh, so that the hot loop (the step thread) seldom
  // finds it expired and asks itself. A client that left is still seen within
  // `interval`.
  bool AskEarly();
  // Times `ask` was put the question (for tests).
  int64_t asked() const { return asked_.load(std::memory_order_relaxed); }

 private:
  const std::function<bool()> ask_;
  const int64_t interval_ns_;
  std::atomic<bool> yes_{false};
  // Steady-clock time (ns) from which the question may be asked again.
  std::atomic<int64_t> next_ns_{0};
  std::atomic<int64_t> asked_{0};

  // Asks when now >= next_ns_ - `early_ns` (the one thread that moves next_ns_ on).
  bool Check(int64_t early_ns);
};

}  // namespace moe::coordinator

#endif  // MOE_COORDINATOR_THROTTLED_CHECK_H_
