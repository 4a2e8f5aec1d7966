#include "coordinator/epoch_broadcast.h"

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace moe::coordinator {
namespace {

// The batch scheduler's use: each waiter has its own lock and condition; the notifier
// makes every condition true, then wakes them all with one call.
struct Waiter {
  std::mutex mu;
  int value = 0;  // guarded by mu
};

int AwaitAtLeast(EpochBroadcast& signal, Waiter& w, int target) {
  for (;;) {
    const uint32_t seen = signal.epoch();
    {
      std::lock_guard<std::mutex> lock(w.mu);
      if (w.value >= target) return w.value;
    }
    signal.Wait(seen);
  }
}

TEST(EpochBroadcastTest, NoSleeperNoSystemCall) {
  EpochBroadcast signal;
  for (int i = 0; i < 100; ++i) signal.NotifyAll();
  EXPECT_EQ(signal.wake_calls(), 0u);
  EXPECT_EQ(signal.epoch(), 100u);
}

TEST(EpochBroadcastTest, AWaitAfterANotifyReturnsAtOnce) {
  EpochBroadcast signal;
  const uint32_t seen = signal.epoch();
  signal.NotifyAll();
  signal.Wait(seen);  // would hang if the notify were lost
  SUCCEED();
}

// Rounds of: the notifier raises every waiter's value, then one NotifyAll. No waiter
// misses a round (a lost wake-up hangs the test), and each round costs at most one
// system call however many threads sleep.
TEST(EpochBroadcastTest, OneCallWakesEveryWaiterRoundAfterRound) {
  constexpr int kWaiters = 16, kRounds = 300;
  EpochBroadcast signal;
  std::vector<Waiter> waiters(kWaiters);
  std::vector<int> seen(kWaiters, 0);
  std::vector<std::thread> threads;
  for (int i = 0; i < kWaiters; ++i) {
    threads.emplace_back([&, i] {
      for (int round = 1; round <= kRounds; ++round) seen[i] = AwaitAtLeast(signal, waiters[i], round);
    });
  }
  for (int round = 1; round <= kRounds; ++round) {
    for (Waiter& w : waiters) {
      std::lock_guard<std::mutex> lock(w.mu);
      w.value = round;
    }
    signal.NotifyAll();
    if (round % 50 == 0) std::this_thread::yield();
  }
  for (std::thread& t : threads) t.join();
  for (int i = 0; i < kWaiters; ++i) EXPECT_EQ(seen[i], kRounds) << i;
  EXPECT_LE(signal.wake_calls(), uint64_t(kRounds));
}

// A waiter whose condition a round did not touch sleeps again and still sees a later one.
TEST(EpochBroadcastTest, AWaiterLeftOutOfARoundWaitsForItsOwn) {
  EpochBroadcast signal;
  Waiter mine, other;
  std::atomic<int> got{0};
  std::thread t([&] { got = AwaitAtLeast(signal, mine, 1); });
  for (int i = 0; i < 20; ++i) {
    {
      std::lock_guard<std::mutex> lock(other.mu);
      ++other.value;
    }
    signal.NotifyAll();
  }
  EXPECT_EQ(got.load(), 0);
  {
    std::lock_guard<std::mutex> lock(mine.mu);
    mine.value = 1;
  }
  signal.NotifyAll();
  t.join();
  EXPECT_EQ(got.load(), 1);
}

}  // namespace
}  // namespace moe::coordinator
