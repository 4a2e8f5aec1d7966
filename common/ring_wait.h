// How a waiter on the activation ring (common/activation_ring.h) waits: the coordinator
// for a reply, the worker for the next call. A futex sleep costs a wake-up (tens of
// microseconds on a VM: the syscall and the scheduler bringing the thread back), a bounded
// spin avoids it but holds a core. SpinPolicy spins only when that is likely to pay and
// cannot hurt: the expected wait (an average of this waiter's recent waits) is short, the
// recent spins mostly caught the event, and the machine has a core free for the spinner.
// Under load (more runnable threads than cores) it sleeps at once, as a fixed spin did not.
#ifndef MOE_COMMON_RING_WAIT_H_
#define MOE_COMMON_RING_WAIT_H_

#include <cstdint>
#include <functional>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace moe::ring {

struct WaitOptions {
  // true: SpinPolicy decides each wait's spin, at most `spin`. false: every wait spins
  // `spin` (0: sleeps at once, the behaviour before the adaptive wait).
  bool adaptive = true;
  absl::Duration spin = absl::Microseconds(200);
};

// The options `--ring-wait MODE --ring-spin-us US` name: MODE "adaptive" or "fixed", US in
// [0, 10000]. INVALID_ARGUMENT naming the flag otherwise.
absl::StatusOr<WaitOptions> ParseWaitOptions(absl::string_view mode, double spin_us);

// Runnable threads on the machine now, this one included (the 4th field of /proc/loadavg),
// or -1 when unknown.
int RunnableThreads();
// CPUs this process may run on (sched_getaffinity), at least 1.
int AllowedCpus();

// Decides, wait by wait, how long one waiter spins before it sleeps. Not thread-safe: one
// per waiting thread (per ring slot on the coordinator, per ring on the worker).
class SpinPolicy {
 public:
  // Time since some fixed point, in nanoseconds; runnable threads now (the caller
  // included, -1: unknown). Injected so that tests can feed a fake clock and load.
  using Clock = std::function<int64_t()>;
  using Runnable = std::function<int()>;

  // The real clock (steady), /proc/loadavg and the process's CPUs.
  explicit SpinPolicy(WaitOptions options);
  SpinPolicy(WaitOptions options, int cpus, Clock clock, Runnable runnable);

  // How long the next wait spins before sleeping.
  absl::Duration NextSpin();
  // After a wait: how long it took in all, and whether it ended while spinning.
  void Record(absl::Duration waited, bool caught_spinning);

  // The average wait so far (exposed for tests and logs).
  absl::Duration expected() const { return absl::Nanoseconds(expected_ns_); }
  // Waits recorded, how many of them spun, and how many spins caught the event.
  uint64_t waits() const { return waits_; }
  uint64_t spins() const { return spins_; }
  uint64_t caught() const { return caught_; }

  // The load is looked at again after this long (reading it costs a few microseconds).
  static constexpr int64_t kLoadRefreshNs = 2'000'000;
  // After this many spins that mostly missed, the policy sleeps this many waits before
  // it tries a spin again.
  static constexpr int kBackoffWaits = 32;
  // Spins (in the average of recent spins) that must catch the event to keep spinning.
  static constexpr double kMinCatchRate = 0.5;

 private:
  absl::Duration Decide();
  bool CoreFree();

  WaitOptions options_;
  int cpus_;
  Clock clock_;
  Runnable runnable_;
  double expected_ns_ = 0;   // moving average of recent waits, each clipped
  bool have_expected_ = false;
  double catch_rate_ = 1.0;  // moving average over waits that spun: 1 caught, 0 missed
  int backoff_ = 0;          // waits left to sleep through before spinning again
  bool last_spun_ = false;   // whether the wait NextSpin last answered for spins
  uint64_t waits_ = 0, spins_ = 0, caught_ = 0;
  int64_t load_checked_ns_ = 0;
  bool load_known_ = false;
  bool core_free_ = false;
};

}  // namespace moe::ring

#endif  // MOE_COMMON_RING_WAIT_H_
