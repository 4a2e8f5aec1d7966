#include "expert_worker/run_experts_request.h"

#include <cmath>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/checked_math.h"

namespace moe::expert_worker {
namespace {

absl::Status CheckSlice(absl::string_view what, const v1::ArenaSlice& slice, uint64_t bytes,
                        uint64_t arena_bytes) {
  if (slice.size_bytes() != bytes) {
    return absl::InvalidArgumentError(absl::StrCat("RunExperts: ", what, " slice is ",
                                                   slice.size_bytes(), " bytes, the tokens need ",
                                                   bytes));
  }
  if (slice.offset() % sizeof(float) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("RunExperts: ", what, " slice offset ",
                                                   slice.offset(), " is not 4-byte aligned"));
  }
  if (!RangeWithin(slice.offset(), bytes, arena_bytes)) {
    return absl::OutOfRangeError(absl::StrCat(
        "RunExperts: ", what, " slice [", slice.offset(), ", +", bytes,
        ") is outside the ", arena_bytes, "-byte arena"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<RunExpertsShape> CheckRunExpertsRequest(const v1::RunExpertsRequest& request,
                                                       const RunExpertsLimits& limits) {
  RunExpertsShape shape;
  if (request.layer() >= uint32_t(limits.num_layers)) {
    return absl::InvalidArgumentError(absl::StrCat("RunExperts: layer ", request.layer(),
                                                   " out of range [0, ", limits.num_layers, ")"));
  }
  shape.layer = static_cast<int>(request.layer());
  shape.tokens = request.num_tokens();
  if (shape.tokens == 0) return absl::InvalidArgumentError("RunExperts: num_tokens is 0");
  if (shape.tokens > limits.max_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("RunExperts: num_tokens ", shape.tokens,
                                                   " is above the per-call limit of ",
                                                   limits.max_tokens));
  }
  shape.experts_per_token = request.experts_per_token();
  if (shape.experts_per_token < 1 || shape.experts_per_token > limits.num_experts) {
    return absl::InvalidArgumentError(absl::StrCat("RunExperts: experts_per_token ",
                                                   shape.experts_per_token, " is not in [1, ",
                                                   limits.num_experts, "]"));
  }
  if (request.expert_ids_size() != shape.tokens * shape.experts_per_token ||
      request.weights_size() != request.expert_ids_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "RunExperts: ", request.expert_ids_size(), " expert ids and ", request.weights_size(),
        " weights for ", shape.tokens, " tokens x ", shape.experts_per_token, " experts"));
  }
  for (uint32_t id : request.expert_ids()) {
    if (id >= uint32_t(limits.num_experts)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "RunExperts: expert id ", id, " out of range [0, ", limits.num_experts, ")"));
    }
  }
  for (float w : request.weights()) {
    if (!std::isfinite(w)) {
      return absl::InvalidArgumentError(absl::StrCat("RunExperts: router weight ", w, " is not finite"));
    }
  }
  const std::optional<uint64_t> tensor_bytes =
      CheckedMul(uint64_t(shape.tokens), uint64_t(limits.hidden) * sizeof(float));
  if (!tensor_bytes.has_value()) {
    return absl::InvalidArgumentError("RunExperts: the tensors' size overflows");
  }
  shape.tensor_bytes = *tensor_bytes;

  if (request.has_input_slice() || request.has_output_slice()) {
    if (limits.arena_bytes == 0 || limits.arena_id.empty() || request.arena_id() != limits.arena_id) {
      return absl::FailedPreconditionError(absl::StrCat(
          "RunExperts: arena ", request.arena_id(), " is not attached (attach it again)"));
    }
  }
  if (request.has_input_slice()) {
    if (auto s = CheckSlice("input", request.input_slice(), shape.tensor_bytes, limits.arena_bytes);
        !s.ok()) {
      return s;
    }
  } else if (request.input_inline().size() != shape.tensor_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("RunExperts: inline input is ",
                                                   request.input_inline().size(),
                                                   " bytes, expected ", shape.tensor_bytes));
  }
  if (request.has_output_slice()) {
    if (auto s = CheckSlice("output", request.output_slice(), shape.tensor_bytes, limits.arena_bytes);
        !s.ok()) {
      return s;
    }
    // The output is zeroed before the input is read: the two must not share a byte.
    if (request.has_input_slice()) {
      const uint64_t in = request.input_slice().offset(), out = request.output_slice().offset();
      // Both lie inside the arena, so these sums cannot wrap.
      if (in < out + shape.tensor_bytes && out < in + shape.tensor_bytes) {
        return absl::InvalidArgumentError("RunExperts: input and output slices overlap");
      }
    }
  }
  return shape;
}

}  // namespace moe::expert_worker
