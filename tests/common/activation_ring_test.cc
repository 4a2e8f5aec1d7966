// The activation ring's mechanics without a worker: an entry's life (post, claim,
// complete, release), the futex doorbells across two real processes (the words are in a
// MAP_SHARED mapping, so the wakes must not be process-private), bounded waits, replies
// that carry a status, and ProcessWatch noticing a SIGKILLed process.
#include "common/activation_ring.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include "common/process_watch.h"
#include "common/shared_arena.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moe::ring {
namespace {

using ::testing::HasSubstr;

constexpr uint32_t kSlots = 4;

absl::StatusOr<std::pair<std::unique_ptr<SharedArena>, Ring>> NewRing(uint32_t slots) {
  auto arena = SharedArena::Create(RingBytes(slots) + 64);
  if (!arena.ok()) return arena.status();
  auto base = (*arena)->At(64, RingBytes(slots), 64);
  if (!base.ok()) return base.status();
  auto ring = Ring::At(*base, slots);
  if (!ring.ok()) return ring.status();
  ring->Reset(7);
  return std::make_pair(*std::move(arena), *ring);
}

TEST(ActivationRingTest, RingsMustBeAlignedAndOfABoundedSize) {
  alignas(64) static uint8_t buffer[RingBytes(2) + 64];
  EXPECT_TRUE(Ring::At(buffer, 2).ok());
  EXPECT_EQ(Ring::At(buffer + 4, 2).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Ring::At(buffer, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Ring::At(buffer, kMaxRingSlots + 1).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ActivationRingTest, AnEntryGoesPostedRunningDoneFree) {
  auto made = NewRing(kSlots);
  ASSERT_TRUE(made.ok()) << made.status();
  const Ring& ring = made->second;
  EXPECT_EQ(ring.header().magic, kRingMagic);
  EXPECT_EQ(ring.header().epoch.load(), 7u);
  EXPECT_EQ(ring.Claim(), -1);  // nothing posted
  RingRequest request;
  request.epoch = 7;
  request.layer = 3;
  ring.Post(2, request);
  EXPECT_EQ(ring.entry(2).state.load(), kPosted);
  EXPECT_EQ(ring.header().doorbell.load(), 1u);
  EXPECT_EQ(ring.Claim(), 2);
  EXPECT_EQ(ring.Claim(), -1);  // claimed once only
  EXPECT_EQ(ring.entry(2).request.layer, 3u);
  EXPECT_FALSE(ring.AwaitDone(2, absl::ZeroDuration(), absl::Milliseconds(5)));
  RingReply reply;
  reply.hits = 5;
  ring.Complete(2, reply);
  EXPECT_TRUE(ring.AwaitDone(2, absl::ZeroDuration(), absl::Milliseconds(5)));
  EXPECT_EQ(ring.entry(2).reply.hits, 5u);
  ring.Release(2);
  EXPECT_EQ(ring.entry(2).state.load(), kFree);
}

TEST(ActivationRingTest, AWaitWithNoAnswerEndsWithinItsBound) {
  auto made = NewRing(1);
  ASSERT_TRUE(made.ok()) << made.status();
  made->second.Post(0, RingRequest{});
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(made->second.AwaitDone(0, absl::Microseconds(50), absl::Milliseconds(30)));
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GE(s, 0.02);
  EXPECT_LT(s, 2.0);
}

// A child process serves the ring through the shared mapping: the doorbell and the
// entry's state word wake sleepers in the other process.
TEST(ActivationRingTest, DoorbellsWakeAcrossProcesses) {
  auto made = NewRing(kSlots);
  ASSERT_TRUE(made.ok()) << made.status();
  const Ring ring = made->second;
  constexpr int kCalls = 200;
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    int served = 0;
    while (served < kCalls) {
      const uint32_t seen = ring.header().doorbell.load();
      for (int slot; (slot = ring.Claim()) >= 0; ++served) {
        RingReply reply;
        reply.hits = ring.entry(slot).request.layer * 2;
        ring.Complete(static_cast<uint32_t>(slot), reply);
      }
      if (served < kCalls) ring.AwaitDoorbell(seen, absl::ZeroDuration(), absl::Seconds(5));
    }
    ::_exit(0);
  }
  for (int i = 0; i < kCalls; ++i) {
    RingRequest request;
    request.layer = static_cast<uint32_t>(i);
    const uint32_t slot = static_cast<uint32_t>(i) % kSlots;
    ring.Post(slot, request);
    bool done = false;
    for (int tries = 0; tries < 50 && !done; ++tries) {
      done = ring.AwaitDone(slot, absl::ZeroDuration(), absl::Milliseconds(100));
    }
    ASSERT_TRUE(done) << "call " << i;
    EXPECT_EQ(ring.entry(slot).reply.hits, uint32_t(2 * i));
    ring.Release(slot);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST(ActivationRingTest, RepliesCarryAStatusTruncatedToFit) {
  EXPECT_TRUE(StatusOf(ReplyFor(absl::OkStatus())).ok());
  const absl::Status s = StatusOf(ReplyFor(absl::InvalidArgumentError("layer 9 out of range")));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "layer 9 out of range");
  const absl::Status long_one = StatusOf(ReplyFor(absl::InternalError(std::string(1000, 'x'))));
  EXPECT_EQ(long_one.message().size(), kReplyMessageChars - 1);
  RingReply hostile;
  hostile.code = 999;
  for (char& c : hostile.message) c = 'y';  // no terminator
  const absl::Status unknown = StatusOf(hostile);
  EXPECT_EQ(unknown.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(unknown.message(), HasSubstr("unknown status code 999"));
}

TEST(ProcessWatchTest, NoticesAKilledProcessWithinABoundedWait) {
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::pause();
    ::_exit(0);
  }
  auto watch = ProcessWatch::Open(static_cast<uint32_t>(child));
  ASSERT_TRUE(watch.ok()) << watch.status();
  EXPECT_TRUE((*watch)->Alive());
  EXPECT_FALSE((*watch)->WaitExit(absl::Milliseconds(20)));
  ::kill(child, SIGKILL);
  EXPECT_TRUE((*watch)->WaitExit(absl::Seconds(5)));
  EXPECT_FALSE((*watch)->Alive());  // a zombie counts as gone
  ::waitpid(child, nullptr, 0);
  EXPECT_FALSE((*watch)->Alive());
}

TEST(ProcessWatchTest, NoSuchProcessIsRefused) {
  EXPECT_EQ(ProcessWatch::Open(0).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ProcessWatch::Open(1u << 30).status().code(), absl::StatusCode::kFailedPrecondition);
  // A child already reaped: its pid names no process (barring reuse within microseconds).
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ::waitpid(child, nullptr, 0);
  EXPECT_FALSE(ProcessWatch::Open(static_cast<uint32_t>(child)).ok());
}

}  // namespace
}  // namespace moe::ring
