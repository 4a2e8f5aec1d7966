// HostStagedExperts: a host-only expert backend behind copies from and to the device
// (here the CPU device, where a copy is a memcpy into separate memory).
#include <memory>
#include <vector>

#include "common/backend/device.h"
#include "coordinator/device_staged_experts.h"
#include "gtest/gtest.h"

namespace moe::coordinator {
namespace {

// out = weights[t, 0] * x + ids[t, 0]; remembers where x was and what it held.
class FakeHostExperts : public ExpertBackend {
 public:
  absl::Status RunExperts(int layer, absl::Span<const float> x, int64_t n,
                          absl::Span<const int32_t> ids, absl::Span<const float> weights,
                          absl::Span<float> out, ExpertCallStats* stats) override {
    seen_x.assign(x.begin(), x.end());
    seen_x_at = x.data();
    const int64_t h = int64_t(x.size()) / n, k = int64_t(ids.size()) / n;
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t i = 0; i < h; ++i) out[t * h + i] = weights[t * k] * x[t * h + i] + ids[t * k];
    }
    if (stats != nullptr) ++stats->calls;
    last_layer = layer;
    return absl::OkStatus();
  }
  void Prefetch(int layer, absl::Span<const int32_t> experts) override {
    prefetched.assign(experts.begin(), experts.end());
  }
  absl::Status AwaitRecovery(const std::function<bool()>&) override {
    return absl::DeadlineExceededError("gave up");
  }
  std::vector<float> seen_x;
  const float* seen_x_at = nullptr;
  std::vector<int32_t> prefetched;
  int last_layer = -1;
};

TEST(HostStagedExpertsTest, CopiesXToTheHostAndOutBack) {
  auto device = backend::OpenDevice("cpu");
  ASSERT_TRUE(device.ok());
  FakeHostExperts host;
  HostStagedExperts staged(&host, **device);
  const int64_t n = 2, h = 3;
  auto x = (*device)->Allocate(n * h * sizeof(float));
  auto out = (*device)->Allocate(n * h * sizeof(float));
  ASSERT_TRUE(x.ok() && out.ok());
  const std::vector<float> values = {1, 2, 3, 4, 5, 6};
  ASSERT_TRUE(backend::CopyToDeviceSync(**device, (*x)->data(), values.data(), 6 * 4).ok());
  const std::vector<int32_t> ids = {7, 1, 3, 0};
  const std::vector<float> weights = {2, 0, 0.5f, 0};
  ExpertCallStats stats;
  ASSERT_TRUE(staged
                  .RunExperts(4, absl::MakeConstSpan((*x)->as<float>(), n * h), n, ids, weights,
                              absl::MakeSpan((*out)->as<float>(), n * h), &stats)
                  .ok());
  EXPECT_EQ(host.seen_x, values);
  EXPECT_NE(host.seen_x_at, (*x)->as<float>());  // the wrapped backend read a host copy
  EXPECT_EQ(host.last_layer, 4);
  EXPECT_EQ(stats.calls, 1u);
  std::vector<float> result(n * h);
  ASSERT_TRUE(backend::CopyToHostSync(**device, result.data(), (*out)->data(), 6 * 4).ok());
  EXPECT_EQ(result, (std::vector<float>{9, 11, 13, 5, 5.5f, 6}));
}

TEST(HostStagedExpertsTest, MismatchedSpansAreRefusedAndHintsAndRecoveryPassThrough) {
  auto device = backend::OpenDevice("cpu");
  ASSERT_TRUE(device.ok());
  FakeHostExperts host;
  HostStagedExperts staged(&host, **device);
  std::vector<float> x(6), out(4);
  const std::vector<int32_t> ids = {0, 1};
  const std::vector<float> weights = {1, 0};
  const absl::Status s =
      staged.RunExperts(0, x, 1, ids, weights, absl::MakeSpan(out), nullptr);
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_EQ(host.last_layer, -1);
  const std::vector<int32_t> hint = {3, 5};
  staged.Prefetch(2, hint);
  EXPECT_EQ(host.prefetched, hint);
  EXPECT_TRUE(absl::IsDeadlineExceeded(staged.AwaitRecovery(nullptr)));
}

}  // namespace
}  // namespace moe::coordinator
