// The adaptive wait of the activation ring (common/ring_wait.h): fed a fake clock, a fake
// machine load and made-up wait times, it spins only while waits are short, spins catch
// them and a core is free, and backs off when spins miss.
#include "common/ring_wait.h"

#include <cmath>
#include <cstdint>
#include <string>

#include "gtest/gtest.h"

namespace moe::ring {
namespace {

using absl::Microseconds;
using absl::ZeroDuration;

// A policy on `cpus` CPUs whose clock and load the test sets.
struct Fixture {
  explicit Fixture(int cpus = 4, WaitOptions options = WaitOptions{})
      : policy(options, cpus, [this] { return now_ns; }, [this] { ++load_reads; return runnable; }) {}
  // Records `n` waits of `waited`, each spun as the policy says and caught when the spin
  // covered it.
  void Feed(int n, absl::Duration waited) {
    for (int i = 0; i < n; ++i) {
      const absl::Duration spin = policy.NextSpin();
      policy.Record(waited, spin > ZeroDuration() && waited <= spin);
      now_ns += 100'000;
    }
  }
  int64_t now_ns = 0;
  int runnable = 1;
  int load_reads = 0;
  SpinPolicy policy;
};

TEST(SpinPolicyTest, FirstWaitSleepsThenShortWaitsSpinTwiceTheirAverage) {
  Fixture f;
  EXPECT_EQ(f.policy.NextSpin(), ZeroDuration());
  f.policy.Record(Microseconds(40), false);
  EXPECT_EQ(f.policy.expected(), Microseconds(40));
  EXPECT_EQ(f.policy.NextSpin(), Microseconds(80));
}

TEST(SpinPolicyTest, SpinIsBoundedByTheOptionAndNeverBelowTheFloor) {
  Fixture f;
  f.Feed(50, Microseconds(150));  // 2 x 150 > the 200 us bound
  EXPECT_EQ(f.policy.NextSpin(), Microseconds(200));
  Fixture g;
  g.Feed(50, Microseconds(1));
  EXPECT_EQ(g.policy.NextSpin(), Microseconds(10));
}

TEST(SpinPolicyTest, WaitsLongerThanTheBoundSleep) {
  Fixture f;
  f.Feed(50, Microseconds(900));
  EXPECT_GT(f.policy.expected(), Microseconds(200));
  EXPECT_EQ(f.policy.NextSpin(), ZeroDuration());
  // Short waits again: the average comes down and spinning resumes.
  f.Feed(200, Microseconds(30));
  EXPECT_EQ(f.policy.NextSpin(), Microseconds(60));
}

TEST(SpinPolicyTest, OneIdlePauseCountsOnlyAsFourTimesTheBound) {
  Fixture f;
  f.Feed(20, Microseconds(20));
  f.policy.NextSpin();
  f.policy.Record(absl::Seconds(10), false);  // a client that paused between requests
  EXPECT_LE(f.policy.expected(), Microseconds(20) + (Microseconds(800) - Microseconds(20)) / 8 +
                                      Microseconds(1));
  // A few short waits later it spins again (the miss alone does not back it off).
  f.Feed(8, Microseconds(20));
  EXPECT_GT(f.policy.NextSpin(), ZeroDuration());
}

TEST(SpinPolicyTest, NoSpinWhenRunnableThreadsFillTheCpus) {
  Fixture f(/*cpus=*/2);
  f.Feed(10, Microseconds(30));
  EXPECT_GT(f.policy.NextSpin(), ZeroDuration());
  f.policy.Record(Microseconds(30), true);
  f.runnable = 3;           // two others want both CPUs
  f.now_ns += SpinPolicy::kLoadRefreshNs;
  EXPECT_EQ(f.policy.NextSpin(), ZeroDuration());
  f.policy.Record(Microseconds(30), false);
  f.runnable = 2;           // one other: a CPU is left for the spinner
  f.now_ns += SpinPolicy::kLoadRefreshNs;
  EXPECT_GT(f.policy.NextSpin(), ZeroDuration());
}

TEST(SpinPolicyTest, LoadIsReadAtMostOncePerRefreshPeriod) {
  Fixture f;
  f.Feed(1, Microseconds(30));
  const int before = f.load_reads;
  for (int i = 0; i < 100; ++i) {
    f.policy.NextSpin();
    f.policy.Record(Microseconds(30), true);
    f.now_ns += 1000;  // 100 waits within 0.1 ms
  }
  EXPECT_EQ(f.load_reads - before, 1);
}

TEST(SpinPolicyTest, UnknownLoadTrustsTheCpuCount) {
  Fixture f(/*cpus=*/2);
  f.runnable = -1;
  f.Feed(10, Microseconds(30));
  EXPECT_GT(f.policy.NextSpin(), ZeroDuration());
}

TEST(SpinPolicyTest, OneCpuNeverSpins) {
  Fixture f(/*cpus=*/1);
  f.Feed(20, Microseconds(30));
  EXPECT_EQ(f.policy.NextSpin(), ZeroDuration());
}

TEST(SpinPolicyTest, SpinsThatMissBackOffThenProbeOnce) {
  Fixture f;
  f.Feed(10, Microseconds(30));
  // The average says 30 us, but the peer now answers late: every spin misses.
  int missed = 0;
  while (f.policy.NextSpin() > ZeroDuration()) {
    f.policy.Record(Microseconds(30), false);
    ++missed;
    ASSERT_LT(missed, 10);
  }
  EXPECT_GE(missed, 1);
  // Backed off: the next kBackoffWaits waits sleep (the first one was just answered).
  f.policy.Record(Microseconds(30), false);
  for (int i = 1; i < SpinPolicy::kBackoffWaits; ++i) {
    EXPECT_EQ(f.policy.NextSpin(), ZeroDuration()) << i;
    f.policy.Record(Microseconds(30), false);
  }
  // Then one probe; a miss sends it straight back to sleeping.
  EXPECT_GT(f.policy.NextSpin(), ZeroDuration());
  f.policy.Record(Microseconds(30), false);
  EXPECT_EQ(f.policy.NextSpin(), ZeroDuration());
}

TEST(SpinPolicyTest, ProbeThatCatchesResumesSpinning) {
  Fixture f;
  f.Feed(10, Microseconds(30));
  while (f.policy.NextSpin() > ZeroDuration()) f.policy.Record(Microseconds(30), false);
  f.policy.Record(Microseconds(30), false);
  for (int i = 1; i < SpinPolicy::kBackoffWaits; ++i) {
    f.policy.NextSpin();
    f.policy.Record(Microseconds(30), false);
  }
  ASSERT_GT(f.policy.NextSpin(), ZeroDuration());
  f.policy.Record(Microseconds(30), true);
  for (int i = 0; i < 10; ++i) {
    EXPECT_GT(f.policy.NextSpin(), ZeroDuration()) << i;
    f.policy.Record(Microseconds(30), true);
  }
}

TEST(SpinPolicyTest, MostlyCaughtSpinsKeepSpinning) {
  // Decode: seven short gaps per token and one long one; spins catch 7 of 8.
  Fixture f;
  f.Feed(1, Microseconds(20));
  int spun = 0;
  for (int i = 0; i < 800; ++i) {
    const absl::Duration waited = i % 8 == 7 ? Microseconds(400) : Microseconds(20);
    const absl::Duration spin = f.policy.NextSpin();
    spun += spin > ZeroDuration();
    f.policy.Record(waited, spin > ZeroDuration() && waited <= spin);
  }
  EXPECT_GT(spun, 700);
}

TEST(SpinPolicyTest, FixedModeAlwaysSpinsItsBoundAndZeroNeverSpins) {
  Fixture f(4, WaitOptions{.adaptive = false, .spin = Microseconds(50)});
  EXPECT_EQ(f.policy.NextSpin(), Microseconds(50));
  f.Feed(10, Microseconds(900));
  f.runnable = 100;
  f.now_ns += SpinPolicy::kLoadRefreshNs;
  EXPECT_EQ(f.policy.NextSpin(), Microseconds(50));
  Fixture zero(4, WaitOptions{.adaptive = true, .spin = ZeroDuration()});
  zero.Feed(10, Microseconds(5));
  EXPECT_EQ(zero.policy.NextSpin(), ZeroDuration());
}

TEST(ParseWaitOptionsTest, NamesTheFlagOfABadValue) {
  auto adaptive = ParseWaitOptions("adaptive", 150);
  ASSERT_TRUE(adaptive.ok());
  EXPECT_TRUE(adaptive->adaptive);
  EXPECT_EQ(adaptive->spin, Microseconds(150));
  auto fixed = ParseWaitOptions("fixed", 0);
  ASSERT_TRUE(fixed.ok());
  EXPECT_FALSE(fixed->adaptive);
  EXPECT_EQ(fixed->spin, ZeroDuration());
  auto mode = ParseWaitOptions("spin", 50);
  EXPECT_EQ(mode.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(mode.status().message().find("--ring-wait"), std::string::npos);
  for (double bad : {-1.0, 10001.0, std::nan("")}) {
    auto spin = ParseWaitOptions("adaptive", bad);
    EXPECT_EQ(spin.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(spin.status().message().find("--ring-spin-us"), std::string::npos);
  }
}

TEST(RunnableThreadsTest, CountsAtLeastTheCallerOnLinux) {
  EXPECT_GE(RunnableThreads(), 1);
  EXPECT_GE(AllowedCpus(), 1);
}

}  // namespace
}  // namespace moe::ring
