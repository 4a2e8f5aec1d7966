#include "common/ring_wait.h"

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace moe::ring {
namespace {

// A wait longer than this many times the spin bound counts as this much in the average:
// one idle pause between requests must not hide the short waits around it for long.
constexpr double kClipFactor = 4;
// Weight of the newest wait in the average, and of the newest spin in the catch rate.
constexpr double kExpectedWeight = 1.0 / 8;
constexpr double kCatchWeight = 1.0 / 4;
// A spin covers twice the expected wait (waits vary), and never less than this.
constexpr double kSpinFactor = 2;
constexpr absl::Duration kMinSpin = absl::Microseconds(10);

int64_t SteadyNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

absl::StatusOr<WaitOptions> ParseWaitOptions(absl::string_view mode, double spin_us) {
  WaitOptions options;
  if (mode == "adaptive") {
    options.adaptive = true;
  } else if (mode == "fixed") {
    options.adaptive = false;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--ring-wait \"", mode, "\" is not \"adaptive\" or \"fixed\""));
  }
  if (!(spin_us >= 0 && spin_us <= 10000)) {
    return absl::InvalidArgumentError(absl::StrCat("--ring-spin-us ", spin_us,
                                                   " is not in [0, 10000]"));
  }
  options.spin = absl::Nanoseconds(static_cast<int64_t>(spin_us * 1000));
  return options;
}

int RunnableThreads() {
  // Opened once; pread at offset 0 makes procfs regenerate the line.
  static const int fd = ::open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char text[128];
  const ssize_t n = ::pread(fd, text, sizeof(text) - 1, 0);
  if (n <= 0) return -1;
  text[n] = '\0';
  // "0.20 0.18 0.12 3/80 11206": runnable/total after three averages.
  double a, b, c;
  int runnable, total;
  if (std::sscanf(text, "%lf %lf %lf %d/%d", &a, &b, &c, &runnable, &total) != 5) return -1;
  return runnable;
}

int AllowedCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof(set), &set) != 0) return 1;
  return std::max(1, CPU_COUNT(&set));
}

SpinPolicy::SpinPolicy(WaitOptions options)
    : SpinPolicy(options, AllowedCpus(), SteadyNs, RunnableThreads) {}

SpinPolicy::SpinPolicy(WaitOptions options, int cpus, Clock clock, Runnable runnable)
    : options_(options), cpus_(cpus), clock_(std::move(clock)), runnable_(std::move(runnable)) {}

bool SpinPolicy::CoreFree() {
  const int64_t now = clock_();
  if (!load_known_ || now - load_checked_ns_ >= kLoadRefreshNs) {
    const int runnable = runnable_();
    // The caller is one of the runnable threads: a core is free for it to spin on when
    // the others do not fill every CPU (unknown load: trust the CPU count alone).
    core_free_ = runnable < 0 || runnable <= cpus_;
    load_checked_ns_ = now;
    load_known_ = true;
  }
  return core_free_;
}

absl::Duration SpinPolicy::NextSpin() {
  const absl::Duration spin = Decide();
  last_spun_ = spin > absl::ZeroDuration();
  return spin;
}

absl::Duration SpinPolicy::Decide() {
  if (!options_.adaptive) return options_.spin;
  // One CPU: a spinner always holds the core its peer needs.
  if (options_.spin <= absl::ZeroDuration() || cpus_ < 2) return absl::ZeroDuration();
  if (backoff_ > 0) {
    --backoff_;
    return absl::ZeroDuration();
  }
  // No figure yet: the first wait sleeps and is measured.
  if (!have_expected_) return absl::ZeroDuration();
  const absl::Duration expected = absl::Nanoseconds(static_cast<int64_t>(expected_ns_));
  if (expected > options_.spin) return absl::ZeroDuration();
  if (!CoreFree()) return absl::ZeroDuration();
  return std::min(options_.spin, std::max(kMinSpin, kSpinFactor * expected));
}

void SpinPolicy::Record(absl::Duration waited, bool caught_spinning) {
  ++waits_;
  if (last_spun_) ++spins_;
  if (last_spun_ && caught_spinning) ++caught_;
  if (!options_.adaptive) {
    last_spun_ = false;
    return;
  }
  const double cap_ns = kClipFactor * absl::ToDoubleNanoseconds(options_.spin);
  const double sample = std::min(std::max(0.0, absl::ToDoubleNanoseconds(waited)), cap_ns);
  expected_ns_ = have_expected_ ? expected_ns_ + kExpectedWeight * (sample - expected_ns_) : sample;
  have_expected_ = true;
  if (!last_spun_) return;
  last_spun_ = false;
  catch_rate_ += kCatchWeight * ((caught_spinning ? 1.0 : 0.0) - catch_rate_);
  if (catch_rate_ < kMinCatchRate) {
    // Spins mostly miss (waits longer or more varied than the average says, or a peer
    // that is not scheduled): sleep for a while, then probe with one spin, which a miss
    // sends back here at once.
    backoff_ = kBackoffWaits;
    catch_rate_ = kMinCatchRate + kCatchWeight / 2;
  }
}

}  // namespace moe::ring
