// libFuzzer target: the expert worker's RunExperts request check
// (expert_worker/run_experts_request) on arbitrary wire bytes and worker limits. It must
// never crash; a request it accepts must be safe to serve: every id and layer in range,
// tensors of the right size, slices inside the arena and apart. The accepted slices are
// then read and written in a real buffer of the arena's size, so ASan sees any overrun.
// Seeds: tests/data/run_experts_corpus (serialized requests, behind 16 bytes of limits).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "expert_worker/run_experts_request.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

constexpr size_t kLimitBytes = 16;
constexpr uint64_t kMaxArena = 1 << 20;  // real buffers stay small

uint32_t Read32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < kLimitBytes) return 0;
  moe::expert_worker::RunExpertsLimits limits;
  limits.num_layers = 1 + Read32(data) % 64;
  limits.num_experts = 1 + Read32(data + 4) % 64;
  limits.hidden = 1 + Read32(data + 8) % 4096;
  limits.max_tokens = 1 + (Read32(data + 8) >> 12) % 1024;
  const uint32_t arena = Read32(data + 12);
  limits.arena_bytes = arena % 5 == 0 ? 0 : arena % (kMaxArena + 1);  // sometimes none
  limits.arena_id = "0123456789abcdef0123456789abcdef";
  moe::v1::RunExpertsRequest request;
  if (!request.ParseFromArray(data + kLimitBytes, static_cast<int>(size - kLimitBytes))) return 0;

  const auto shape = moe::expert_worker::CheckRunExpertsRequest(request, limits);
  if (!shape.ok()) {
    const auto code = shape.status().code();
    FUZZ_CHECK(code == absl::StatusCode::kInvalidArgument ||
               code == absl::StatusCode::kOutOfRange ||
               code == absl::StatusCode::kFailedPrecondition);
    FUZZ_CHECK(!shape.status().message().empty());
    return 0;
  }
  FUZZ_CHECK(shape->layer >= 0 && shape->layer < limits.num_layers);
  FUZZ_CHECK(shape->tokens >= 1 && shape->experts_per_token >= 1 &&
             shape->experts_per_token <= limits.num_experts);
  FUZZ_CHECK(request.expert_ids_size() == shape->tokens * shape->experts_per_token);
  FUZZ_CHECK(request.weights_size() == request.expert_ids_size());
  for (uint32_t id : request.expert_ids()) FUZZ_CHECK(id < uint32_t(limits.num_experts));
  for (float w : request.weights()) FUZZ_CHECK(std::isfinite(w));
  FUZZ_CHECK(shape->tensor_bytes == uint64_t(shape->tokens) * limits.hidden * sizeof(float));
  if (!request.has_input_slice()) FUZZ_CHECK(request.input_inline().size() == shape->tensor_bytes);

  // Touch what the worker would: read the input, zero the output.
  std::vector<uint8_t> buffer(limits.arena_bytes);
  if (request.has_input_slice()) {
    const auto& in = request.input_slice();
    FUZZ_CHECK(in.offset() % 4 == 0 && in.offset() + shape->tensor_bytes <= limits.arena_bytes);
    volatile uint8_t sink = 0;
    for (uint64_t i = 0; i < shape->tensor_bytes; ++i) sink ^= buffer[in.offset() + i];
  }
  if (request.has_output_slice()) {
    const auto& out = request.output_slice();
    FUZZ_CHECK(out.offset() % 4 == 0 && out.offset() + shape->tensor_bytes <= limits.arena_bytes);
    std::memset(buffer.data() + out.offset(), 0, shape->tensor_bytes);
  }
  return 0;
}
