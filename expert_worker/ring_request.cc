#include "expert_worker/ring_request.h"

#include <cmath>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/checked_math.h"

namespace moe::expert_worker {
namespace {

// [offset, offset + bytes) of an arena of `arena_bytes`, 4-byte aligned.
absl::Status CheckRange(absl::string_view what, uint64_t offset, uint64_t bytes,
                        uint64_t arena_bytes) {
  if (offset % sizeof(float) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("ring call: ", what, " offset ", offset, " is not 4-byte aligned"));
  }
  if (!RangeWithin(offset, bytes, arena_bytes)) {
    return absl::OutOfRangeError(absl::StrCat("ring call: ", what, " [", offset, ", +", bytes,
                                              ") is outside the ", arena_bytes, "-byte arena"));
  }
  return absl::OkStatus();
}

// Whether two ranges that each lie inside one arena share a byte (their ends cannot wrap).
bool Overlap(uint64_t a, uint64_t a_bytes, uint64_t b, uint64_t b_bytes) {
  return a < b + b_bytes && b < a + a_bytes;
}

}  // namespace

absl::StatusOr<RingShape> CheckRingRequest(const ring::RingRequest& request,
                                           const RingLimits& limits) {
  if (request.epoch != limits.epoch) {
    return absl::FailedPreconditionError(absl::StrCat(
        "ring call of attach ", request.epoch, " reached the ring of attach ", limits.epoch,
        " (attach again)"));
  }
  RingShape shape;
  if (request.layer >= uint32_t(limits.num_layers)) {
    return absl::InvalidArgumentError(absl::StrCat("ring call: layer ", request.layer,
                                                   " out of range [0, ", limits.num_layers, ")"));
  }
  shape.layer = static_cast<int>(request.layer);
  shape.tokens = request.num_tokens;
  if (shape.tokens == 0 || shape.tokens > limits.max_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("ring call: num_tokens ", shape.tokens,
                                                   " is not in [1, ", limits.max_tokens,
                                                   "] (the per-call limit)"));
  }
  shape.experts_per_token = request.experts_per_token;
  if (shape.experts_per_token < 1 || shape.experts_per_token > limits.num_experts) {
    return absl::InvalidArgumentError(absl::StrCat("ring call: experts_per_token ",
                                                   shape.experts_per_token, " is not in [1, ",
                                                   limits.num_experts, "]"));
  }
  if (request.on_device > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("ring call: on_device is ", request.on_device, ", not 0 or 1"));
  }
  shape.on_device = request.on_device == 1;
  if (shape.on_device && limits.device_arena_bytes == 0) {
    return absl::FailedPreconditionError("ring call names a device arena that is not attached");
  }
  // Both factors are bounded (tokens by max_tokens < 2^32, k by num_experts), but the
  // limits come from the caller too: every product is checked.
  const std::optional<uint64_t> routes =
      CheckedMul(uint64_t(shape.tokens), uint64_t(shape.experts_per_token));
  const std::optional<uint64_t> route_bytes =
      routes ? CheckedMul(*routes, sizeof(float)) : std::nullopt;
  const std::optional<uint64_t> row_bytes = CheckedMul(uint64_t(limits.hidden), sizeof(float));
  const std::optional<uint64_t> tensor_bytes =
      row_bytes ? CheckedMul(uint64_t(shape.tokens), *row_bytes) : std::nullopt;
  if (!route_bytes || !tensor_bytes || limits.hidden <= 0) {
    return absl::InvalidArgumentError("ring call: the tensors' size overflows");
  }
  shape.routes = *routes;
  shape.tensor_bytes = *tensor_bytes;

  const uint64_t tensor_arena = shape.on_device ? limits.device_arena_bytes : limits.arena_bytes;
  const absl::string_view where = shape.on_device ? " (device arena)" : "";
  if (auto s = CheckRange(absl::StrCat("x", where), request.x_offset, shape.tensor_bytes, tensor_arena);
      !s.ok()) {
    return s;
  }
  if (auto s = CheckRange(absl::StrCat("out", where), request.out_offset, shape.tensor_bytes,
                          tensor_arena);
      !s.ok()) {
    return s;
  }
  if (auto s = CheckRange("expert ids", request.ids_offset, *route_bytes, limits.arena_bytes);
      !s.ok()) {
    return s;
  }
  if (auto s = CheckRange("weights", request.weights_offset, *route_bytes, limits.arena_bytes);
      !s.ok()) {
    return s;
  }
  // out is written while x is read: they must not share a byte. The routes are copied
  // before the call, but out must not run over them either (nor over the ring itself:
  // the worker would be answering into its own control words).
  if (Overlap(request.x_offset, shape.tensor_bytes, request.out_offset, shape.tensor_bytes)) {
    return absl::InvalidArgumentError("ring call: x and out overlap");
  }
  struct Named {
    const char* what;
    uint64_t offset, bytes;
  };
  std::vector<Named> host = {{"expert ids", request.ids_offset, *route_bytes},
                             {"weights", request.weights_offset, *route_bytes}};
  if (!shape.on_device) {
    for (const Named& r : host) {
      if (Overlap(r.offset, r.bytes, request.out_offset, shape.tensor_bytes)) {
        return absl::InvalidArgumentError(absl::StrCat("ring call: ", r.what, " and out overlap"));
      }
    }
    host.push_back({"x", request.x_offset, shape.tensor_bytes});
    host.push_back({"out", request.out_offset, shape.tensor_bytes});
  }
  for (const Named& r : host) {
    if (limits.ring_bytes != 0 &&
        Overlap(r.offset, r.bytes, limits.ring_offset, limits.ring_bytes)) {
      return absl::OutOfRangeError(absl::StrCat("ring call: ", r.what, " [", r.offset, ", +",
                                                r.bytes, ") runs over the ring itself"));
    }
  }
  return shape;
}

absl::Status CheckRoutes(absl::Span<const uint32_t> ids, absl::Span<const float> weights,
                         int num_experts) {
  if (ids.size() != weights.size()) {
    return absl::InvalidArgumentError(absl::StrCat("ring call: ", ids.size(), " expert ids but ",
                                                   weights.size(), " weights"));
  }
  for (uint32_t id : ids) {
    if (num_experts <= 0 || id >= uint32_t(num_experts)) {
      return absl::InvalidArgumentError(
          absl::StrCat("ring call: expert id ", id, " out of range [0, ", num_experts, ")"));
    }
  }
  for (float w : weights) {
    if (!std::isfinite(w)) {
      return absl::InvalidArgumentError(absl::StrCat("ring call: router weight ", w, " is not finite"));
    }
  }
  return absl::OkStatus();
}

}  // namespace moe::expert_worker
