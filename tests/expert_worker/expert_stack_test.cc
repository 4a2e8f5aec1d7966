#include "expert_worker/expert_stack.h"

#include <cmath>
#include <string>

#include "common/backend/cpu/cpu_device.h"
#include "common/model_dir.h"
#include "gtest/gtest.h"

namespace moe::expert_worker {
namespace {

// Each bad setting is refused before any model loads, naming its flag.
void ExpectRefused(const ExpertStackOptions& options, const std::string& flag) {
  const absl::Status s = CheckExpertStackOptions(options);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << flag << ": " << s;
  EXPECT_NE(s.message().find(flag), absl::string_view::npos) << s;
}

TEST(ExpertStackOptionsTest, DefaultsAreAccepted) {
  EXPECT_TRUE(CheckExpertStackOptions(ExpertStackOptions{}).ok());
}

TEST(ExpertStackOptionsTest, EachBadValueIsRefusedNamingItsFlag) {
  ExpertStackOptions o;
  o.cache_per_layer = -1;
  ExpectRefused(o, "--cache-per-layer -1");
  o = {};
  o.cache_bytes = -5;
  ExpectRefused(o, "--cache-bytes -5");
  o = {};
  o.vram_budget_gib = -1;
  ExpectRefused(o, "--vram-budget-gib");
  o.vram_budget_gib = NAN;
  ExpectRefused(o, "--vram-budget-gib");
  o = {};
  o.policy = "mru";
  ExpectRefused(o, "--policy: unknown cache policy \"mru\"");
  for (const LinkModel bad : {LinkModel{-1, 0}, LinkModel{0, -5}, LinkModel{NAN, 0},
                              LinkModel{INFINITY, 0}, LinkModel{1, NAN}}) {
    o = {};
    o.link = bad;
    ExpectRefused(o, "--link-gbps/--link-latency-us: a link model needs a bandwidth and a latency >= 0");
  }
}

TEST(ExpertStackOptionsTest, TwoSizesAreRefusedNamingBoth) {
  ExpertStackOptions o;
  o.cache_per_layer = 2;
  o.cache_bytes = 1 << 20;
  ExpectRefused(o, "(got --cache-per-layer 2 and --cache-bytes 1048576)");
  o.cache_bytes = 0;
  o.vram_budget_gib = 1;
  o.workspace_tokens = 16;
  ExpectRefused(o, "--cache-per-layer 2 and --vram-budget-gib 1");
}

TEST(ExpertStackOptionsTest, ABudgetNeedsWorkspaceRows) {
  ExpertStackOptions o;
  o.vram_budget_gib = 1;
  ExpectRefused(o, "--workspace-tokens must be >= 1");
  o.workspace_tokens = 1;
  EXPECT_TRUE(CheckExpertStackOptions(o).ok());
}

// An 8-expert, 2-layer random checkpoint made by the ctest fixture.
class ExpertStackTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = ModelDir::Open(std::string(MOE_BINARY_DIR) + "/random_checkpoints/bf16_gqa4_e8_top2");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_ = *std::move(dir);
  }
  absl::StatusOr<std::unique_ptr<ExpertStack>> Load(const ExpertStackOptions& options) {
    return ExpertStack::Load(dir_, &device_, options);
  }
  ModelDir dir_;
  cpu::CpuDevice device_;
};

TEST_F(ExpertStackTest, BuildsTheCacheTheOptionsAskFor) {
  ExpertStackOptions o;
  auto all = Load(o);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ((*all)->cache().slots_per_layer(), 8);  // none given: every expert
  EXPECT_EQ((*all)->cache().Stats().policy, "lru");
  EXPECT_EQ(&(*all)->cache().device(), &device_);  // no link model: the store's device

  o.cache_per_layer = 3;
  o.policy = "lfu";
  o.link = {16, 5};
  o.retention = Retention::kDrop;
  auto stack = Load(o);
  ASSERT_TRUE(stack.ok()) << stack.status();
  SlotCache& cache = (*stack)->cache();
  EXPECT_EQ(cache.slots_per_layer(), 3);
  EXPECT_EQ(cache.Stats().policy, "lfu");
  // The cache copies through the store's device across the modelled link.
  const auto* link = dynamic_cast<const ModelledLinkDevice*>(&cache.device());
  ASSERT_NE(link, nullptr) << cache.device().name();
  EXPECT_EQ(link->link().gbps, 16);
  EXPECT_EQ(link->link().latency_us, 5);
  EXPECT_EQ(link->kind(), backend::DeviceKind::kCpu);
  EXPECT_EQ(cache.retention(), Retention::kDrop);
  EXPECT_EQ(&cache.store(), &(*stack)->store());
}

TEST_F(ExpertStackTest, SizesByBytesAndByBudget) {
  auto probe = Load(ExpertStackOptions{});
  ASSERT_TRUE(probe.ok()) << probe.status();
  const ExpertStore& store = (*probe)->store();
  const int64_t row = int64_t(store.blob_stride()) * store.num_layers();
  ExpertStackOptions o;
  o.cache_bytes = 2 * row + row / 2;
  EXPECT_EQ(*ResolveSlotsPerLayer(store, o), 2);
  o = {};
  o.workspace_tokens = 4;
  o.vram_budget_gib = 1;  // far more than 8 experts: all of them
  EXPECT_EQ(*ResolveSlotsPerLayer(store, o), 8);
}

TEST_F(ExpertStackTest, SizesTheModelCannotHaveAreRefusedNamingTheFlag) {
  auto probe = Load(ExpertStackOptions{});
  ASSERT_TRUE(probe.ok()) << probe.status();
  const ExpertStore& store = (*probe)->store();
  ExpertStackOptions o;
  o.cache_per_layer = 9;
  absl::Status s = ResolveSlotsPerLayer(store, o).status();
  EXPECT_NE(s.message().find("--cache-per-layer 9: must be in [1, 8]"), absl::string_view::npos) << s;
  EXPECT_FALSE(Load(o).ok());
  o = {};
  o.cache_bytes = 1;
  s = ResolveSlotsPerLayer(store, o).status();
  EXPECT_NE(s.message().find("--cache-bytes: a cache of 1 bytes cannot hold one expert per layer"),
            absl::string_view::npos) << s;
  o = {};
  o.vram_budget_gib = 1e-9;
  o.workspace_tokens = 4;
  s = ResolveSlotsPerLayer(store, o).status();
  EXPECT_NE(s.message().find("cannot hold the workspace"), absl::string_view::npos) << s;
}

// The CPU claiming to be a GPU, to take the cache's off-CPU paths on any machine.
class ClaimsCudaDevice : public cpu::CpuDevice {
 public:
  backend::DeviceKind kind() const override { return backend::DeviceKind::kCuda; }
  std::string name() const override { return "claims-cuda"; }
};

TEST_F(ExpertStackTest, AModelledLinkOffTheCpuIsRefusedNamingTheFlags) {
  ClaimsCudaDevice gpu;
  ExpertStackOptions o;
  o.cache_per_layer = 2;
  o.link = {16, 0};
  const absl::Status s = ExpertStack::Load(dir_, &gpu, o).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("--link-gbps/--link-latency-us: a modelled link (16 GB/s, 0 us) is "
                             "for the CPU device only; claims-cuda copies over its real link"),
            absl::string_view::npos)
      << s;
  o.link = {};
  auto stack = ExpertStack::Load(dir_, &gpu, o);  // no model: the real link
  ASSERT_TRUE(stack.ok()) << stack.status();
  EXPECT_EQ((*stack)->cache().slots_per_layer(), 2);
}

TEST_F(ExpertStackTest, BadOptionsFailBeforeTheExpertsLoad) {
  ExpertStackOptions o;
  o.link = {-1, 0};
  ModelDir missing;  // no checkpoint: loading it would fail differently
  const absl::Status s = ExpertStack::Load(missing, &device_, o).status();
  EXPECT_NE(s.message().find("--link-gbps"), absl::string_view::npos) << s;
}

}  // namespace
}  // namespace moe::expert_worker
