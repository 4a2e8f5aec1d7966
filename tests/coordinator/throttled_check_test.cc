#include "coordinator/throttled_check.h"

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace moe::coordinator {
namespace {

TEST(ThrottledCheckTest, AsksAtOnceThenAtMostOncePerInterval) {
  int asked = 0;
  ThrottledCheck check([&] { return ++asked, false; }, absl::Hours(1));
  for (int i = 0; i < 1000; ++i) EXPECT_FALSE(check());
  EXPECT_EQ(asked, 1);
  EXPECT_EQ(check.asked(), 1);
}

// The caller's thread refreshes the answer from half the interval on, so the hot loop's
// calls within the interval then ask nothing.
TEST(ThrottledCheckTest, AskEarlyAsksFromHalfTheIntervalOnAndTheHotLoopDoesNot) {
  int asked = 0;
  ThrottledCheck check([&] { return ++asked, false; }, absl::Seconds(4));
  EXPECT_FALSE(check());  // asks
  EXPECT_FALSE(check.AskEarly());  // the answer is fresh: no
  EXPECT_EQ(asked, 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(2100));  // past half the interval
  EXPECT_FALSE(check.AskEarly());  // asks
  EXPECT_EQ(asked, 2);
  for (int i = 0; i < 100; ++i) EXPECT_FALSE(check());  // fresh again
  EXPECT_FALSE(check.AskEarly());
  EXPECT_EQ(asked, 2);
}

TEST(ThrottledCheckTest, AYesIsSeenWithinTheIntervalAndKept) {
  std::atomic<bool> gone{false};
  int asked = 0;
  ThrottledCheck check([&] { return ++asked, gone.load(); }, absl::Milliseconds(5));
  EXPECT_FALSE(check());
  gone = true;
  const auto start = std::chrono::steady_clock::now();
  while (!check()) {
    ASSERT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  }
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(4));
  gone = false;  // kept: a client that went away does not come back
  const int before = asked;
  for (int i = 0; i < 100; ++i) EXPECT_TRUE(check());
  EXPECT_EQ(asked, before);
}

TEST(ThrottledCheckTest, ZeroIntervalAsksEveryTime) {
  int asked = 0;
  ThrottledCheck check([&] { return ++asked >= 3; }, absl::ZeroDuration());
  EXPECT_FALSE(check());
  EXPECT_FALSE(check());
  EXPECT_TRUE(check());
  EXPECT_EQ(asked, 3);
}

TEST(ThrottledCheckTest, ThreadsAskingAtOnceAskOnce) {
  std::atomic<int> asked{0};
  ThrottledCheck check([&] { return ++asked, false; }, absl::Hours(1));
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) check();
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(asked.load(), 1);
}

}  // namespace
}  // namespace moe::coordinator
