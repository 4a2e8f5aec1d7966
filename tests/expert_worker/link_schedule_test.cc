#include "expert_worker/link_schedule.h"

#include <chrono>

#include "gtest/gtest.h"

namespace moe::expert_worker {
namespace {

using Clock = LinkSchedule::Clock;

// 1 MB/s and 1e6-byte copies: each takes a second plus the latency, so the microseconds
// between two Schedule calls do not matter and nothing needs to sleep.
constexpr LinkModel kSlow{0.001, 100};
constexpr uint64_t kBytes = 1'000'000;
const Clock::duration kOne = std::chrono::duration_cast<Clock::duration>(
    std::chrono::duration<double>(1.0001));
const Clock::duration kChunk = std::chrono::duration_cast<Clock::duration>(
    std::chrono::duration<double>(double(LinkSchedule::kChunkBytes) / 1e6));
const Clock::duration kSlack = std::chrono::milliseconds(50);

TEST(LinkScheduleTest, ACopyTakesLatencyPlusBytesOverBandwidth) {
  LinkSchedule link;
  LinkSchedule::Copy copy;
  const Clock::time_point before = Clock::now();
  link.Schedule(/*prefetch=*/false, kSlow, kBytes, &copy);
  EXPECT_GE(copy.start, before);
  EXPECT_LT(copy.start, before + kSlack);
  EXPECT_EQ(copy.ready - copy.start, kOne);
  EXPECT_TRUE(copy.in_flight(Clock::now()));
  EXPECT_FALSE(copy.in_flight(copy.ready));
}

TEST(LinkScheduleTest, PrefetchesQueueBehindEachOtherAndDemandCopies) {
  LinkSchedule link;
  LinkSchedule::Copy demand, first, second;
  link.Schedule(false, kSlow, kBytes, &demand);
  link.Schedule(true, kSlow, kBytes, &first);
  link.Schedule(true, kSlow, kBytes, &second);
  EXPECT_EQ(first.start, demand.ready);
  EXPECT_EQ(second.start, first.ready);
  EXPECT_EQ(second.ready - second.start, kOne);
}

TEST(LinkScheduleTest, ADemandCopyOvertakesQueuedPrefetchesAtTheNextChunk) {
  LinkSchedule link;
  LinkSchedule::Copy moving, queued, demand;
  link.Schedule(true, kSlow, kBytes, &moving);  // starts at once
  link.Schedule(true, kSlow, kBytes, &queued);
  const LinkSchedule::Copy moving_alone = moving, queued_alone = queued;
  link.Schedule(false, kSlow, kBytes, &demand);
  // The moving prefetch gives way at its first chunk boundary at the latest...
  EXPECT_LE(demand.start, moving_alone.start + kChunk);
  EXPECT_EQ(demand.ready - demand.start, kOne);
  // ...and both prefetches end later by the demand copy's duration.
  EXPECT_EQ(moving.ready, moving_alone.ready + kOne);
  EXPECT_EQ(queued.ready, queued_alone.ready + kOne);
  EXPECT_EQ(queued.start, queued_alone.start + kOne);
  // A later demand copy queues behind the first one (and the prefetch it interrupted,
  // counted as moving again from there, gives way at a chunk boundary once more).
  LinkSchedule::Copy next;
  link.Schedule(false, kSlow, kBytes, &next);
  EXPECT_GE(next.start, demand.ready);
  EXPECT_LE(next.start, demand.ready + kChunk);
}

TEST(LinkScheduleTest, LatencyOnlyLinksMoveNoBytesButTakeTheLatency) {
  LinkSchedule link;
  LinkSchedule::Copy copy;
  link.Schedule(false, LinkModel{0, 250}, kBytes, &copy);
  EXPECT_EQ(copy.ready - copy.start, std::chrono::microseconds(250));
}

TEST(LinkScheduleTest, WaitUntilReturnsNoEarlierThanTheEnd) {
  const Clock::time_point end = Clock::now() + std::chrono::milliseconds(2);
  LinkSchedule::WaitUntil(end);
  EXPECT_GE(Clock::now(), end);
}

}  // namespace
}  // namespace moe::expert_worker
