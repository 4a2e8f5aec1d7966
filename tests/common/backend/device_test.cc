// backend::Device on every compiled backend: memory round trips, pinned and registered
// host memory, ordering across streams with events, and errors. CUDA cases skip without
// a GPU.
#include "common/backend/device.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <numeric>
#include <vector>

#include "gtest/gtest.h"
#include "tests/common/backend/backend_test_util.h"

namespace moe::backend {
namespace {

using testing::BackendTest;

class DeviceTest : public BackendTest {};

std::vector<uint8_t> Pattern(size_t bytes, uint8_t seed) {
  std::vector<uint8_t> v(bytes);
  for (size_t i = 0; i < bytes; ++i) v[i] = uint8_t(i * 131 + seed);
  return v;
}

TEST_P(DeviceTest, NamesItselfAndReportsMemory) {
  EXPECT_EQ(device_->name().rfind(GetParam(), 0), 0u) << device_->name();
  EXPECT_EQ(device_->ordinal(), 0);
  EXPECT_TRUE(device_->BindThread().ok());
  auto memory = device_->Memory();
  ASSERT_TRUE(memory.ok()) << memory.status();
  EXPECT_GT(memory->total_bytes, 0);
  EXPECT_GE(memory->free_bytes, 0);
  EXPECT_LE(memory->free_bytes, memory->total_bytes);
}

TEST_P(DeviceTest, CopiesRoundTripThroughDeviceMemory) {
  const size_t bytes = (1 << 20) + 37;  // not a multiple of any vector width
  const std::vector<uint8_t> host = Pattern(bytes, 7);
  auto a = device_->Allocate(bytes);
  auto b = device_->Allocate(bytes);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(reinterpret_cast<uintptr_t>((*a)->data()) % 256, 0u);
  EXPECT_EQ((*a)->size(), bytes);
  ASSERT_TRUE(device_->CopyToDevice((*a)->data(), host.data(), bytes, *stream_).ok());
  ASSERT_TRUE(device_->CopyOnDevice((*b)->data(), (*a)->data(), bytes, *stream_).ok());
  std::vector<uint8_t> back(bytes);
  ASSERT_TRUE(device_->CopyToHost(back.data(), (*b)->data(), bytes, *stream_).ok());
  ASSERT_TRUE(stream_->Synchronize().ok());
  EXPECT_EQ(back, host);
}

TEST_P(DeviceTest, MemsetFillsEveryByte) {
  const size_t bytes = 4099;
  auto a = device_->Allocate(bytes);
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(device_->Memset((*a)->data(), 0x5a, bytes, *stream_).ok());
  ASSERT_TRUE(device_->Memset((*a)->as<uint8_t>() + 100, 0, 10, *stream_).ok());
  std::vector<uint8_t> back(bytes);
  ASSERT_TRUE(device_->CopyToHost(back.data(), (*a)->data(), bytes, *stream_).ok());
  ASSERT_TRUE(stream_->Synchronize().ok());
  for (size_t i = 0; i < bytes; ++i) {
    ASSERT_EQ(back[i], (i >= 100 && i < 110) ? 0 : 0x5a) << "byte " << i;
  }
}

TEST_P(DeviceTest, PinnedHostMemoryIsPageAlignedAndCopies) {
  const size_t bytes = 3 << 20;
  auto pinned = device_->AllocatePinnedHost(bytes);
  ASSERT_TRUE(pinned.ok()) << pinned.status();
  EXPECT_EQ(reinterpret_cast<uintptr_t>((*pinned)->data()) % sysconf(_SC_PAGESIZE), 0u);
  const std::vector<uint8_t> host = Pattern(bytes, 3);
  std::memcpy((*pinned)->data(), host.data(), bytes);
  auto a = device_->Allocate(bytes);
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(device_->CopyToDevice((*a)->data(), (*pinned)->data(), bytes, *stream_).ok());
  ASSERT_TRUE(stream_->Synchronize().ok());  // the copy has read the pinned bytes
  std::memset((*pinned)->data(), 0, bytes);
  ASSERT_TRUE(device_->CopyToHost((*pinned)->data(), (*a)->data(), bytes, *stream_).ok());
  ASSERT_TRUE(stream_->Synchronize().ok());
  EXPECT_EQ(std::memcmp((*pinned)->data(), host.data(), bytes), 0);
}

TEST_P(DeviceTest, RegisteredHostMemoryCopiesBothWays) {
  const size_t page = sysconf(_SC_PAGESIZE), bytes = 64 * page;
  void* mapped = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(mapped, MAP_FAILED);
  const std::vector<uint8_t> host = Pattern(bytes, 11);
  std::memcpy(mapped, host.data(), bytes);
  {
    auto registered = device_->RegisterHost(mapped, bytes, /*read_only=*/true);
    ASSERT_TRUE(registered.ok()) << registered.status();
    EXPECT_EQ((*registered)->data(), mapped);
    EXPECT_EQ((*registered)->size(), bytes);
    auto a = device_->Allocate(bytes);
    ASSERT_TRUE(a.ok());
    ASSERT_TRUE(device_->CopyToDevice((*a)->data(), mapped, bytes, *stream_).ok());
    std::vector<uint8_t> back(bytes);
    ASSERT_TRUE(device_->CopyToHost(back.data(), (*a)->data(), bytes, *stream_).ok());
    ASSERT_TRUE(stream_->Synchronize().ok());
    EXPECT_EQ(back, host);
  }
  {
    // Registered again (the first registration ended with its buffer), read-write.
    auto registered = device_->RegisterHost(mapped, bytes, /*read_only=*/false);
    ASSERT_TRUE(registered.ok()) << registered.status();
    auto a = device_->Allocate(bytes);
    ASSERT_TRUE(a.ok());
    ASSERT_TRUE(device_->Memset((*a)->data(), 0x33, bytes, *stream_).ok());
    ASSERT_TRUE(device_->CopyToHost(mapped, (*a)->data(), bytes, *stream_).ok());
    ASSERT_TRUE(stream_->Synchronize().ok());
    EXPECT_EQ(static_cast<uint8_t*>(mapped)[bytes - 1], 0x33);
  }
  munmap(mapped, bytes);
}

// Work on stream B that waits on an event recorded on stream A sees A's results; repeated
// with a large copy so that on a GPU an unordered read would see stale bytes.
TEST_P(DeviceTest, EventsOrderWorkAcrossStreams) {
  auto other = device_->CreateStream();
  ASSERT_TRUE(other.ok());
  const size_t bytes = 32 << 20;
  auto pinned = device_->AllocatePinnedHost(bytes);
  auto a = device_->Allocate(bytes);
  auto b = device_->Allocate(bytes);
  ASSERT_TRUE(pinned.ok() && a.ok() && b.ok());
  for (uint8_t round = 1; round <= 3; ++round) {
    std::memset((*pinned)->data(), round, bytes);
    auto event = device_->CreateEvent(/*interprocess=*/false);
    ASSERT_TRUE(event.ok());
    ASSERT_TRUE(device_->CopyToDevice((*a)->data(), (*pinned)->data(), bytes, *stream_).ok());
    ASSERT_TRUE(device_->CopyOnDevice((*b)->data(), (*a)->data(), bytes, *stream_).ok());
    ASSERT_TRUE((*event)->Record(*stream_).ok());
    ASSERT_TRUE((**other).Wait(**event).ok());
    std::vector<uint8_t> back(bytes);
    ASSERT_TRUE(device_->CopyToHost(back.data(), (*b)->data(), bytes, **other).ok());
    ASSERT_TRUE((**other).Synchronize().ok());
    auto done = (*event)->Query();
    ASSERT_TRUE(done.ok());
    EXPECT_TRUE(*done);  // B finished after waiting on it, so the event has completed
    EXPECT_TRUE((*event)->Synchronize().ok());
    EXPECT_EQ(back.front(), round);
    EXPECT_EQ(back[bytes / 2], round);
    EXPECT_EQ(back.back(), round);
    ASSERT_TRUE(stream_->Synchronize().ok());
  }
}

TEST_P(DeviceTest, AnEventNeverRecordedIsComplete) {
  auto event = device_->CreateEvent(false);
  ASSERT_TRUE(event.ok());
  auto done = (*event)->Query();
  ASSERT_TRUE(done.ok());
  EXPECT_TRUE(*done);
}

TEST_P(DeviceTest, InterprocessEventsExistOnlyOnCuda) {
  auto event = device_->CreateEvent(/*interprocess=*/true);
  if (device_->kind() == DeviceKind::kCuda) {
    ASSERT_TRUE(event.ok()) << event.status();
    EXPECT_NE((*event)->native(), nullptr);
  } else {
    EXPECT_EQ(event.status().code(), absl::StatusCode::kUnimplemented);
  }
}

TEST_P(DeviceTest, AnAbsurdAllocationIsResourceExhaustedAndNamesItsSize) {
  const size_t absurd = size_t{1} << 50;  // 1 PiB
  auto buffer = device_->Allocate(absurd);
  ASSERT_FALSE(buffer.ok());
  EXPECT_EQ(buffer.status().code(), absl::StatusCode::kResourceExhausted) << buffer.status();
  EXPECT_NE(buffer.status().message().find("1125899906842624"), absl::string_view::npos)
      << buffer.status();
  // The device still works afterwards (the failure left no error behind).
  auto small = device_->Allocate(1024);
  ASSERT_TRUE(small.ok()) << small.status();
  ASSERT_TRUE(device_->Memset((*small)->data(), 1, 1024, *stream_).ok());
  EXPECT_TRUE(stream_->Synchronize().ok());
}

INSTANTIATE_TEST_SUITE_P(Backends, DeviceTest, ::testing::ValuesIn(testing::AllBackends()),
                         testing::BackendName);

TEST(OpenDeviceTest, RejectsUnknownNames) {
  for (const char* spec : {"gpu", "cuda:", "cuda:-1", "cuda:x", ""}) {
    auto device = OpenDevice(spec);
    ASSERT_FALSE(device.ok()) << spec;
    EXPECT_EQ(device.status().code(), absl::StatusCode::kInvalidArgument) << spec;
  }
}

// Without a GPU (or without CUDA compiled in) "cuda" answers why, never crashes; with one,
// an ordinal past the last device is named.
TEST(OpenDeviceTest, CudaAnswersWhyItCannotOpen) {
  auto device = OpenDevice("cuda");
  if (device.ok()) {
    auto missing = OpenDevice("cuda:999");
    ASSERT_FALSE(missing.ok());
    EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument) << missing.status();
    EXPECT_NE(missing.status().message().find("cuda:999"), absl::string_view::npos);
    return;
  }
  EXPECT_TRUE(testing::MeansNoDevice(device.status())) << device.status();
  EXPECT_FALSE(device.status().message().empty());
}

}  // namespace
}  // namespace moe::backend
