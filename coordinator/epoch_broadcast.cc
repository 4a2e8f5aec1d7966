#include "coordinator/epoch_broadcast.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>

namespace moe::coordinator {

static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t) &&
                  std::atomic<uint32_t>::is_always_lock_free,
              "the futex word is the atomic's own storage");

void EpochBroadcast::Wait(uint32_t seen) {
  // Counted before the kernel compares the word: a NotifyAll that bumps the epoch after
  // this either sees a sleeper (and wakes it) or the kernel sees the new epoch (and
  // does not sleep). Both sides are sequentially consistent.
  sleepers_.fetch_add(1);
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(&epoch_), FUTEX_WAIT_PRIVATE, seen, nullptr,
            nullptr, 0);
  sleepers_.fetch_sub(1);
}

void EpochBroadcast::NotifyAll() {
  epoch_.fetch_add(1);
  if (sleepers_.load() == 0) return;
  wake_calls_.fetch_add(1, std::memory_order_relaxed);
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(&epoch_), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr,
            nullptr, 0);
}

}  // namespace moe::coordinator
