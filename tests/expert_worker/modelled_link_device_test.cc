#include "expert_worker/modelled_link_device.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "common/backend/cpu/cpu_device.h"
#include "gtest/gtest.h"

namespace moe::expert_worker {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

class ClaimsCudaDevice : public cpu::CpuDevice {
 public:
  backend::DeviceKind kind() const override { return backend::DeviceKind::kCuda; }
  std::string name() const override { return "claims-cuda"; }
};

TEST(ModelledLinkDeviceTest, RefusesBadFiguresALinkOfNothingAndAnyDeviceButTheCpu) {
  cpu::CpuDevice cpu;
  for (const LinkModel bad : {LinkModel{-1, 0}, LinkModel{0, -5}, LinkModel{NAN, 0},
                              LinkModel{INFINITY, 0}, LinkModel{1, NAN}}) {
    const absl::Status s = ModelledLinkDevice::Create(&cpu, bad).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad.gbps << " " << bad.latency_us;
    EXPECT_NE(s.message().find(">= 0"), std::string::npos) << s;
  }
  const absl::Status nothing = ModelledLinkDevice::Create(&cpu, LinkModel{0, 0}).status();
  EXPECT_EQ(nothing.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(nothing.message().find("models nothing"), std::string::npos) << nothing;
  ClaimsCudaDevice gpu;
  const absl::Status off = ModelledLinkDevice::Create(&gpu, LinkModel{16, 5}).status();
  EXPECT_EQ(off.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(off.message().find("claims-cuda copies over its real link"), std::string::npos) << off;

  auto link = ModelledLinkDevice::Create(&cpu, LinkModel{16, 5});
  ASSERT_TRUE(link.ok()) << link.status();
  EXPECT_EQ((*link)->kind(), backend::DeviceKind::kCpu);  // the CPU's kernels and memory
  EXPECT_FALSE((*link)->HostMemoryIsDeviceMemory());       // across a link
  EXPECT_TRUE((*link)->AsyncCopiesForRead());
  EXPECT_NE((*link)->name().find("16 GB/s"), std::string::npos) << (*link)->name();
}

// Copies of 200 ms (latency only): the bounds hold on a loaded machine.
constexpr double kOne = 0.2;

TEST(ModelledLinkDeviceTest, ACopyForReadIsReadInPlaceOnceTheLinkHasCarriedIt) {
  cpu::CpuDevice cpu;
  auto link = ModelledLinkDevice::Create(&cpu, LinkModel{0, kOne * 1e6});
  ASSERT_TRUE(link.ok()) << link.status();
  auto stream = (*link)->CreateStream(backend::StreamPriority::kHigh);
  auto ready = (*link)->CreateEvent(false);
  ASSERT_TRUE(stream.ok() && ready.ok());
  std::vector<char> src(1000, 7), dst(1000, 0);
  const auto t0 = Clock::now();
  auto view = (*link)->CopyToDeviceForRead(dst.data(), src.data(), src.size(), **stream);
  ASSERT_TRUE(view.ok()) << view.status();
  EXPECT_EQ(*view, src.data());  // no bytes move
  EXPECT_EQ(dst[0], 0);
  ASSERT_TRUE((*ready)->Record(**stream).ok());
  EXPECT_FALSE(*(*ready)->Query());  // the link still carries it
  ASSERT_TRUE((*ready)->Synchronize().ok());
  EXPECT_GE(Since(t0), kOne);
  EXPECT_TRUE(*(*ready)->Query());
  // Other copies are the CPU's: they move at once, and nothing waits for them.
  ASSERT_TRUE((*link)->CopyToDevice(dst.data(), src.data(), src.size(), **stream).ok());
  EXPECT_EQ(dst, src);
}

TEST(ModelledLinkDeviceTest, AHighPriorityCopyOvertakesQueuedNormalOnesAndPushesThemBack) {
  cpu::CpuDevice cpu;
  auto link = ModelledLinkDevice::Create(&cpu, LinkModel{0, kOne * 1e6});
  ASSERT_TRUE(link.ok()) << link.status();
  auto prefetch = (*link)->CreateStream();
  auto demand = (*link)->CreateStream(backend::StreamPriority::kHigh);
  ASSERT_TRUE(prefetch.ok() && demand.ok());
  std::vector<std::unique_ptr<backend::Event>> events;
  for (int i = 0; i < 3; ++i) events.push_back(*(*link)->CreateEvent(false));
  char byte = 0;
  const auto t0 = Clock::now();
  for (int i = 0; i < 2; ++i) {  // the first moves at once, the second queues behind it
    ASSERT_TRUE((*link)->CopyToDeviceForRead(&byte, &byte, 1, **prefetch).ok());
    ASSERT_TRUE(events[i]->Record(**prefetch).ok());
  }
  ASSERT_TRUE((*link)->CopyToDeviceForRead(&byte, &byte, 1, **demand).ok());
  ASSERT_TRUE(events[2]->Record(**demand).ok());
  ASSERT_TRUE(events[2]->Synchronize().ok());  // after the moving one, before the queued one
  const double demand_done = Since(t0);
  EXPECT_GE(demand_done, 2 * kOne);
  EXPECT_LT(demand_done, 3 * kOne);
  EXPECT_TRUE(*events[0]->Query());
  EXPECT_FALSE(*events[1]->Query());  // pushed back by one copy
  ASSERT_TRUE((*prefetch)->Synchronize().ok());
  EXPECT_GE(Since(t0), 3 * kOne);
  EXPECT_TRUE(*events[1]->Query());
}

}  // namespace
}  // namespace moe::expert_worker
