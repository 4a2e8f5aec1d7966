#include "coordinator/throttled_check.h"

#include <chrono>
#include <utility>

namespace moe::coordinator {
namespace {

int64_t SteadyNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

ThrottledCheck::ThrottledCheck(std::function<bool()> ask, absl::Duration interval)
    : ask_(std::move(ask)), interval_ns_(absl::ToInt64Nanoseconds(interval)) {}

bool ThrottledCheck::operator()() { return Check(0); }

bool ThrottledCheck::AskEarly() { return Check(interval_ns_ / 2); }

bool ThrottledCheck::Check(int64_t early_ns) {
  if (yes_.load(std::memory_order_acquire)) return true;
  const int64_t now = SteadyNanos();
  int64_t next = next_ns_.load(std::memory_order_relaxed);
  // The thread that moves the time on asks; the others (and every call within the
  // interval) answer what was last heard.
  if (now < next - early_ns || !next_ns_.compare_exchange_strong(next, now + interval_ns_,
                                                      std::memory_order_relaxed)) {
    return yes_.load(std::memory_order_acquire);
  }
  asked_.fetch_add(1, std::memory_order_relaxed);
  if (ask_()) {
    yes_.store(true, std::memory_order_release);
    return true;
  }
  return yes_.load(std::memory_order_acquire);
}

}  // namespace moe::coordinator
