// libFuzzer target for the activation ring's entry check: an arbitrary RingRequest (the
// bytes a hostile coordinator can leave in a ring entry) under arbitrary limits, then
// arbitrary routes. Whatever CheckRingRequest accepts must be safe to compute on: every
// range inside its arena, aligned, of the size its shape needs, off the ring, out apart
// from x and from the routes; whatever CheckRoutes accepts names known experts with
// finite weights.
//
// Input: 32 bytes of limits, sizeof(RingRequest) bytes of entry, then routes (pairs of a
// uint32 id and a float weight).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/activation_ring.h"
#include "common/checked_math.h"
#include "expert_worker/ring_request.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

constexpr size_t kLimitBytes = 32;

template <typename T>
T Read(const uint8_t* data, size_t at) {
  T v;
  std::memcpy(&v, data + at, sizeof v);
  return v;
}

bool Overlap(uint64_t a, uint64_t an, uint64_t b, uint64_t bn) { return a < b + bn && b < a + an; }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using moe::RangeWithin;
  using moe::expert_worker::RingLimits;
  if (size < kLimitBytes + sizeof(moe::ring::RingRequest)) return 0;
  RingLimits limits;
  limits.epoch = Read<uint32_t>(data, 0) % 4;
  limits.num_layers = 1 + data[4] % 64;
  limits.num_experts = 1 + data[5] % 128;
  limits.hidden = 1 + Read<uint16_t>(data, 6) % 8192;
  limits.max_tokens = 1 + Read<uint32_t>(data, 8) % (1 << 20);
  limits.arena_bytes = Read<uint64_t>(data, 12) % (uint64_t{1} << 40);
  limits.device_arena_bytes = Read<uint32_t>(data, 20);
  limits.ring_offset = limits.arena_bytes == 0 ? 0 : Read<uint32_t>(data, 24) % limits.arena_bytes;
  // The worker's ring lies inside its arena (CheckAttachArenaRequest saw to that).
  limits.ring_bytes = std::min<uint64_t>(Read<uint32_t>(data, 28) % (1 << 16),
                                         limits.arena_bytes - limits.ring_offset);
  moe::ring::RingRequest request;
  std::memcpy(&request, data + kLimitBytes, sizeof request);

  const auto shape = moe::expert_worker::CheckRingRequest(request, limits);
  if (!shape.ok()) {
    const absl::StatusCode code = shape.status().code();
    FUZZ_CHECK(code == absl::StatusCode::kInvalidArgument ||
               code == absl::StatusCode::kOutOfRange ||
               code == absl::StatusCode::kFailedPrecondition);
    FUZZ_CHECK(!shape.status().message().empty());
    return 0;
  }
  FUZZ_CHECK(request.epoch == limits.epoch);
  FUZZ_CHECK(shape->layer >= 0 && shape->layer < limits.num_layers);
  FUZZ_CHECK(shape->tokens >= 1 && shape->tokens <= limits.max_tokens);
  FUZZ_CHECK(shape->experts_per_token >= 1 && shape->experts_per_token <= limits.num_experts);
  FUZZ_CHECK(shape->routes == uint64_t(shape->tokens) * uint64_t(shape->experts_per_token));
  FUZZ_CHECK(shape->tensor_bytes == uint64_t(shape->tokens) * uint64_t(limits.hidden) * 4);
  const uint64_t tensor_arena = shape->on_device ? limits.device_arena_bytes : limits.arena_bytes;
  const uint64_t route_bytes = shape->routes * 4;
  for (uint64_t off : {request.x_offset, request.out_offset}) {
    FUZZ_CHECK(off % 4 == 0 && RangeWithin(off, shape->tensor_bytes, tensor_arena));
  }
  for (uint64_t off : {request.ids_offset, request.weights_offset}) {
    FUZZ_CHECK(off % 4 == 0 && RangeWithin(off, route_bytes, limits.arena_bytes));
    FUZZ_CHECK(!Overlap(off, route_bytes, limits.ring_offset, limits.ring_bytes) ||
               limits.ring_bytes == 0);
    if (!shape->on_device) {
      FUZZ_CHECK(!Overlap(off, route_bytes, request.out_offset, shape->tensor_bytes));
    }
  }
  FUZZ_CHECK(!Overlap(request.x_offset, shape->tensor_bytes, request.out_offset, shape->tensor_bytes));
  if (!shape->on_device && limits.ring_bytes != 0) {
    FUZZ_CHECK(!Overlap(request.out_offset, shape->tensor_bytes, limits.ring_offset, limits.ring_bytes));
    FUZZ_CHECK(!Overlap(request.x_offset, shape->tensor_bytes, limits.ring_offset, limits.ring_bytes));
  }

  // The routes, as the worker copies them out of the arena.
  const uint8_t* rest = data + kLimitBytes + sizeof request;
  const size_t pairs = (size - kLimitBytes - sizeof request) / 8;
  std::vector<uint32_t> ids(pairs);
  std::vector<float> weights(pairs);
  for (size_t i = 0; i < pairs; ++i) {
    ids[i] = Read<uint32_t>(rest, 8 * i);
    weights[i] = Read<float>(rest, 8 * i + 4);
  }
  if (moe::expert_worker::CheckRoutes(ids, weights, limits.num_experts).ok()) {
    for (size_t i = 0; i < pairs; ++i) {
      FUZZ_CHECK(ids[i] < uint32_t(limits.num_experts));
      FUZZ_CHECK(std::isfinite(weights[i]));
    }
  }
  return 0;
}
