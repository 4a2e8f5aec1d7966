// CheckRingRequest and CheckRoutes: the worker's checks of a call taken from the
// activation ring. Each hostile entry is refused with the code the header promises,
// before any memory is touched; offsets and sizes near 2^64 never wrap a check.
#include "expert_worker/ring_request.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moe::expert_worker {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kMax = ~uint64_t{0};

RingLimits Limits() {
  RingLimits l;
  l.epoch = 3;
  l.num_layers = 4;
  l.num_experts = 8;
  l.hidden = 16;        // 64 bytes a row
  l.max_tokens = 4;     // 256 bytes of x at most
  l.arena_bytes = 4096;
  l.ring_offset = 3072;
  l.ring_bytes = 1024;
  return l;
}

ring::RingRequest Good() {
  ring::RingRequest r;
  r.epoch = 3;
  r.layer = 1;
  r.num_tokens = 2;        // x and out 128 bytes each
  r.experts_per_token = 2; // 4 routes, 16 bytes each of ids and weights
  r.x_offset = 0;
  r.out_offset = 256;
  r.ids_offset = 1024;
  r.weights_offset = 1040;
  return r;
}

TEST(RingRequestTest, AWellFormedCallHasItsShape) {
  const auto shape = CheckRingRequest(Good(), Limits());
  ASSERT_TRUE(shape.ok()) << shape.status();
  EXPECT_EQ(shape->layer, 1);
  EXPECT_EQ(shape->tokens, 2);
  EXPECT_EQ(shape->experts_per_token, 2);
  EXPECT_EQ(shape->routes, 4u);
  EXPECT_EQ(shape->tensor_bytes, 128u);
  EXPECT_FALSE(shape->on_device);
}

TEST(RingRequestTest, HostileEntriesAreRefusedWithTheirReason) {
  struct Case {
    const char* name;
    void (*edit)(ring::RingRequest&);
    absl::StatusCode code;
    const char* message;
  };
  const Case cases[] = {
      {"stale epoch", [](ring::RingRequest& r) { r.epoch = 2; },
       absl::StatusCode::kFailedPrecondition, "attach again"},
      {"layer", [](ring::RingRequest& r) { r.layer = 4; }, absl::StatusCode::kInvalidArgument,
       "layer 4"},
      {"no tokens", [](ring::RingRequest& r) { r.num_tokens = 0; },
       absl::StatusCode::kInvalidArgument, "num_tokens 0"},
      {"too many tokens", [](ring::RingRequest& r) { r.num_tokens = 5; },
       absl::StatusCode::kInvalidArgument, "per-call limit"},
      {"huge tokens", [](ring::RingRequest& r) { r.num_tokens = 0xffffffff; },
       absl::StatusCode::kInvalidArgument, "per-call limit"},
      {"k 0", [](ring::RingRequest& r) { r.experts_per_token = 0; },
       absl::StatusCode::kInvalidArgument, "experts_per_token"},
      {"k 9", [](ring::RingRequest& r) { r.experts_per_token = 9; },
       absl::StatusCode::kInvalidArgument, "experts_per_token"},
      {"on_device 2", [](ring::RingRequest& r) { r.on_device = 2; },
       absl::StatusCode::kInvalidArgument, "on_device"},
      {"no device arena", [](ring::RingRequest& r) { r.on_device = 1; },
       absl::StatusCode::kFailedPrecondition, "device arena"},
      {"x wraps", [](ring::RingRequest& r) { r.x_offset = kMax - 63; },
       absl::StatusCode::kOutOfRange, "x ["},
      {"x misaligned", [](ring::RingRequest& r) { r.x_offset = 2; },
       absl::StatusCode::kInvalidArgument, "not 4-byte aligned"},
      {"out past the end", [](ring::RingRequest& r) { r.out_offset = 4096 - 64; },
       absl::StatusCode::kOutOfRange, "out ["},
      {"ids wrap", [](ring::RingRequest& r) { r.ids_offset = kMax - 3; },
       absl::StatusCode::kOutOfRange, "expert ids"},
      {"weights past the end", [](ring::RingRequest& r) { r.weights_offset = 4088; },
       absl::StatusCode::kOutOfRange, "weights"},
      {"x and out overlap", [](ring::RingRequest& r) { r.out_offset = 64; },
       absl::StatusCode::kInvalidArgument, "x and out overlap"},
      {"ids under out", [](ring::RingRequest& r) { r.ids_offset = 300; },
       absl::StatusCode::kInvalidArgument, "expert ids and out overlap"},
      {"out over the ring", [](ring::RingRequest& r) { r.out_offset = 3000; },
       absl::StatusCode::kOutOfRange, "over the ring"},
      {"weights in the ring", [](ring::RingRequest& r) { r.weights_offset = 3072; },
       absl::StatusCode::kOutOfRange, "over the ring"},
  };
  for (const Case& c : cases) {
    ring::RingRequest r = Good();
    c.edit(r);
    const auto shape = CheckRingRequest(r, Limits());
    EXPECT_EQ(shape.status().code(), c.code) << c.name << ": " << shape.status();
    EXPECT_THAT(shape.status().message(), HasSubstr(c.message)) << c.name;
  }
}

TEST(RingRequestTest, DeviceTensorsAreBoundedByTheDeviceArena) {
  RingLimits limits = Limits();
  limits.device_arena_bytes = 256;
  ring::RingRequest r = Good();
  r.on_device = 1;
  r.x_offset = 0;
  r.out_offset = 128;
  // In device memory x and out may sit where the host arena's ring is.
  EXPECT_TRUE(CheckRingRequest(r, limits).ok());
  r.out_offset = 192;
  EXPECT_EQ(CheckRingRequest(r, limits).status().code(), absl::StatusCode::kOutOfRange);
}

TEST(RingRequestTest, RoutesNeedKnownExpertsAndFiniteWeights) {
  const std::vector<uint32_t> ids = {0, 7, 3};
  const std::vector<float> weights = {0.5f, 0.25f, 0.25f};
  EXPECT_TRUE(CheckRoutes(ids, weights, 8).ok());
  EXPECT_THAT(CheckRoutes({0, 8, 3}, weights, 8).message(), HasSubstr("expert id 8"));
  EXPECT_THAT(CheckRoutes({0, 0xffffffff, 3}, weights, 8).message(), HasSubstr("out of range"));
  EXPECT_THAT(CheckRoutes(ids, {0.5f, std::nanf(""), 0.1f}, 8).message(), HasSubstr("not finite"));
  EXPECT_THAT(CheckRoutes(ids, {0.5f, std::numeric_limits<float>::infinity(), 0.1f}, 8).message(),
              HasSubstr("not finite"));
  EXPECT_THAT(CheckRoutes(ids, {0.5f}, 8).message(), HasSubstr("3 expert ids but 1 weights"));
}

}  // namespace
}  // namespace moe::expert_worker
