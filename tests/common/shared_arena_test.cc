// The activation arena's trust boundary (issue 18, items 1 and 2): the attacher maps only
// a sealed memfd of exactly the announced size, owned by an allowed uid, carrying the
// full 128-bit id, and no announced size or offset can wrap an overflow check. Each case
// here was accepted by the arena before the fix (a wrapped size mapped one page and
// recorded 2^64-1 bytes; any file of the worker's could be attached; an empty id matched).
#include "common/shared_arena.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <limits>
#include <string>

#include "common/arena_trust.h"
#include "common/checked_math.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moe {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kBytes = 1 << 16;

uint32_t Pid() { return static_cast<uint32_t>(::getpid()); }

TEST(CheckedMathTest, RangesNeverWrap) {
  EXPECT_TRUE(RangeWithin(0, 10, 10));
  EXPECT_TRUE(RangeWithin(10, 0, 10));
  EXPECT_FALSE(RangeWithin(1, 10, 10));
  EXPECT_FALSE(RangeWithin(~uint64_t{0} - 3, 8, 100));  // offset + length wraps to 4
  EXPECT_FALSE(RangeWithin(4, ~uint64_t{0}, 100));
  EXPECT_FALSE(CheckedAdd(~uint64_t{0}, 1).has_value());
  EXPECT_EQ(CheckedAdd(2, 3), 5u);
  EXPECT_FALSE(CheckedMul(uint64_t{1} << 32, uint64_t{1} << 32).has_value());
  EXPECT_EQ(CheckedMul(uint64_t{1} << 31, 2), uint64_t{1} << 32);
  EXPECT_THAT(CheckRangeWithin("input slice", ~uint64_t{0}, 4, 64).message(),
              HasSubstr("input slice"));
}

TEST(ArenaIdTest, IdsAre128RandomBitsAndOnlyThatFormPasses) {
  const std::string a = NewArenaId(), b = NewArenaId();
  EXPECT_EQ(a.size(), kArenaIdChars);
  EXPECT_NE(a, b);
  EXPECT_TRUE(CheckArenaId(a).ok());
  for (const std::string bad : {std::string(), std::string("0123456789abcdef"), a + "0",
                                std::string(32, 'G'), std::string(31, 'a') + '\0'}) {
    EXPECT_EQ(CheckArenaId(bad).code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(SharedArenaTest, CreatedArenasAreSealedAgainstShrinkingAndGrowing) {
  auto arena = SharedArena::Create(kBytes);
  ASSERT_TRUE(arena.ok()) << arena.status();
  const int seals = ::fcntl((*arena)->fd(), F_GET_SEALS);
  EXPECT_NE(seals & F_SEAL_SHRINK, 0);
  EXPECT_NE(seals & F_SEAL_GROW, 0);
  // Not even the creator can truncate it under a worker's mapping (SIGBUS there).
  EXPECT_NE(::ftruncate((*arena)->fd(), 64), 0);
  EXPECT_EQ(errno, EPERM);
}

TEST(SharedArenaTest, AttachesItsOwnArenaWithTheFullId) {
  auto arena = SharedArena::Create(kBytes);
  ASSERT_TRUE(arena.ok()) << arena.status();
  auto attached = SharedArena::Attach(Pid(), (*arena)->fd(), kBytes, (*arena)->id());
  ASSERT_TRUE(attached.ok()) << attached.status();
  EXPECT_EQ((*attached)->size(), kBytes);
  auto floats = (*attached)->Floats(0, kBytes / 4);
  ASSERT_TRUE(floats.ok());
  (*floats)[3] = 7;
  EXPECT_EQ((*(*arena)->Floats(0, 4))[3], 7.0f);  // the same pages
}

TEST(SharedArenaTest, AWrappingOrOversizedSizeIsRefusedBeforeAnyMapping) {
  auto arena = SharedArena::Create(kBytes);
  ASSERT_TRUE(arena.ok()) << arena.status();
  for (uint64_t bytes : {~uint64_t{0}, ~uint64_t{0} - 63, uint64_t{0}, uint64_t{1} << 50}) {
    auto attached = SharedArena::Attach(Pid(), (*arena)->fd(), bytes, (*arena)->id());
    EXPECT_EQ(attached.status().code(), absl::StatusCode::kInvalidArgument) << bytes;
  }
  ArenaAttachPolicy small;
  small.max_bytes = kBytes / 2;
  auto refused = SharedArena::Attach(Pid(), (*arena)->fd(), kBytes, (*arena)->id(), small);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SharedArenaTest, ASizeOtherThanTheFilesIsRefused) {
  auto arena = SharedArena::Create(kBytes);
  ASSERT_TRUE(arena.ok()) << arena.status();
  for (uint64_t bytes : {kBytes + 4096, kBytes - 4096}) {
    auto attached = SharedArena::Attach(Pid(), (*arena)->fd(), bytes, (*arena)->id());
    EXPECT_EQ(attached.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(attached.status().message(), HasSubstr("not the"));
  }
}

TEST(SharedArenaTest, AnEmptyShortOrWrongIdIsRefused) {
  auto arena = SharedArena::Create(kBytes);
  ASSERT_TRUE(arena.ok()) << arena.status();
  const std::string id = (*arena)->id();
  EXPECT_EQ(SharedArena::Attach(Pid(), (*arena)->fd(), kBytes, "").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SharedArena::Attach(Pid(), (*arena)->fd(), kBytes, id.substr(0, 8)).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::string wrong = id;
  wrong.back() = wrong.back() == '0' ? '1' : '0';  // only the last digit differs
  auto attached = SharedArena::Attach(Pid(), (*arena)->fd(), kBytes, wrong);
  EXPECT_EQ(attached.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(attached.status().message(), HasSubstr("does not carry the announced id"));
}

TEST(SharedArenaTest, AFileThatIsNotAnArenaMemfdIsRefusedNamingWhy) {
  // A regular file of the right size, as the probe attached the worker's own log file.
  char path[] = "/tmp/arena_test_XXXXXX";
  const int file = ::mkstemp(path);
  ASSERT_GE(file, 0);
  ::unlink(path);
  ASSERT_EQ(::ftruncate(file, SharedArena::kHeaderBytes + kBytes), 0);
  const std::string id = NewArenaId();
  ASSERT_EQ(::pwrite(file, id.data(), id.size(), 0), ssize_t(id.size()));
  auto attached = SharedArena::Attach(Pid(), file, kBytes, id);
  EXPECT_EQ(attached.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(attached.status().message(), HasSubstr("not an activation arena memfd"));
  ::close(file);

  // A memfd under the arena's name but without the seals: a truncation could fault us.
  const int unsealed = ::memfd_create("moe-activation-arena", MFD_CLOEXEC);
  ASSERT_GE(unsealed, 0);
  ASSERT_EQ(::ftruncate(unsealed, SharedArena::kHeaderBytes + kBytes), 0);
  ASSERT_EQ(::pwrite(unsealed, id.data(), id.size(), 0), ssize_t(id.size()));
  attached = SharedArena::Attach(Pid(), unsealed, kBytes, id);
  EXPECT_EQ(attached.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(attached.status().message(), HasSubstr("not sealed"));
  ::close(unsealed);

  // No such fd, no such process.
  EXPECT_FALSE(SharedArena::Attach(Pid(), 987654, kBytes, id).ok());
  EXPECT_FALSE(SharedArena::Attach(0, 3, kBytes, id).ok());
}

TEST(SharedArenaTest, AnOwnerOutsideTheAllowListIsRefused) {
  auto arena = SharedArena::Create(kBytes);
  ASSERT_TRUE(arena.ok()) << arena.status();
  ArenaAttachPolicy other;
  other.allowed_uids = {::geteuid() + 1};
  auto attached = SharedArena::Attach(Pid(), (*arena)->fd(), kBytes, (*arena)->id(), other);
  EXPECT_EQ(attached.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(attached.status().message(), HasSubstr("uid"));
}

// A real second user: a child that drops to uid 65534 creates a sealed arena; this
// process (root, able to open anyone's fds) refuses it by default and accepts it only
// when that uid is allowed.
TEST(SharedArenaTest, ASecondUsersArenaIsRefusedUnlessItsUidIsAllowed) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a process as a second uid";
  int to_parent[2], to_child[2];
  ASSERT_EQ(::pipe(to_parent), 0);
  ASSERT_EQ(::pipe(to_child), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) _exit(2);
    auto arena = SharedArena::Create(kBytes);
    if (!arena.ok()) _exit(3);
    const int fd = (*arena)->fd();
    char msg[64];
    const int len = std::snprintf(msg, sizeof msg, "%d %s", fd, (*arena)->id().c_str());
    if (::write(to_parent[1], msg, len) != len) _exit(4);
    char done;
    (void)::read(to_child[0], &done, 1);  // keep the arena alive until the parent is done
    _exit(0);
  }
  char msg[64] = {};
  ASSERT_GT(::read(to_parent[0], msg, sizeof msg - 1), 0);
  int fd = -1;
  char id[40] = {};
  ASSERT_EQ(std::sscanf(msg, "%d %39s", &fd, id), 2);
  auto refused = SharedArena::Attach(static_cast<uint32_t>(child), fd, kBytes, id);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kPermissionDenied) << refused.status();
  EXPECT_THAT(refused.status().message(), HasSubstr("65534"));
  ArenaAttachPolicy allow;
  allow.allowed_uids = {0, 65534};
  auto accepted = SharedArena::Attach(static_cast<uint32_t>(child), fd, kBytes, id, allow);
  EXPECT_TRUE(accepted.ok()) << accepted.status();
  ASSERT_EQ(::write(to_child[1], "x", 1), 1);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

TEST(SharedArenaTest, SlicesThatWrapOrLeaveTheArenaAreRefused) {
  auto arena = SharedArena::Create(kBytes);
  ASSERT_TRUE(arena.ok()) << arena.status();
  EXPECT_TRUE((*arena)->Floats(kBytes - 16, 4).ok());
  EXPECT_FALSE((*arena)->Floats(kBytes - 12, 4).ok());
  EXPECT_FALSE((*arena)->Floats(~uint64_t{0} - 3, 2).ok());
  EXPECT_FALSE((*arena)->Floats(0, ~uint64_t{0} / 2).ok());  // count * 4 wraps
  EXPECT_FALSE((*arena)->Floats(2, 1).ok());                 // unaligned
}

}  // namespace
}  // namespace moe
