// ScratchPool: a pass's stream and scratch are reused by the next pass, grown when too
// small, and concurrent passes get sets of their own.
#include <memory>

#include "common/backend/device.h"
#include "coordinator/device_scratch.h"
#include "gtest/gtest.h"

namespace moe::coordinator {
namespace {

TEST(ScratchPoolTest, ReusesASetAndGrowsItWhenTooSmall) {
  auto device = backend::OpenDevice("cpu");
  ASSERT_TRUE(device.ok());
  ScratchPool pool(**device);
  void* first_memory = nullptr;
  backend::Stream* first_stream = nullptr;
  {
    auto lease = pool.Acquire(1024, 64);
    ASSERT_TRUE(lease.ok()) << lease.status();
    first_memory = lease->device_memory();
    first_stream = &lease->stream();
    ASSERT_NE(first_memory, nullptr);
    ASSERT_NE(lease->host_memory(), nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(first_memory) % 256, 0u);
  }
  {
    auto lease = pool.Acquire(512, 64);  // fits: the same set, the same memory
    ASSERT_TRUE(lease.ok());
    EXPECT_EQ(lease->device_memory(), first_memory);
    EXPECT_EQ(&lease->stream(), first_stream);
  }
  {
    auto lease = pool.Acquire(1 << 20, 64);  // grown; the stream stays
    ASSERT_TRUE(lease.ok());
    EXPECT_EQ(&lease->stream(), first_stream);
    static_cast<char*>(lease->device_memory())[(1 << 20) - 1] = 1;  // all of it is there
  }
}

TEST(ScratchPoolTest, ConcurrentLeasesGetSetsOfTheirOwn) {
  auto device = backend::OpenDevice("cpu");
  ASSERT_TRUE(device.ok());
  ScratchPool pool(**device, /*max_idle=*/1);
  auto a = pool.Acquire(256, 0);
  auto b = pool.Acquire(256, 0);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->device_memory(), b->device_memory());
  EXPECT_NE(&a->stream(), &b->stream());
  EXPECT_EQ(a->host_memory(), nullptr);  // none asked for
}

TEST(ScratchPoolTest, AnImpossibleSizeIsResourceExhaustedNamingIt) {
  auto device = backend::OpenDevice("cpu");
  ASSERT_TRUE(device.ok());
  ScratchPool pool(**device);
  auto lease = pool.Acquire(size_t(1) << 62, 0);
  ASSERT_FALSE(lease.ok());
  EXPECT_TRUE(absl::IsResourceExhausted(lease.status())) << lease.status();
  EXPECT_NE(lease.status().message().find("4611686018427387904 bytes"), std::string::npos)
      << lease.status();
  EXPECT_TRUE(pool.Acquire(256, 0).ok());  // and the pool still serves
}

}  // namespace
}  // namespace moe::coordinator
