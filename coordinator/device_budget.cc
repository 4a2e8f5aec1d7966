#include "coordinator/device_budget.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"
#include "coordinator/kv_cache.h"
#include "coordinator/mixtral_model.h"

namespace moe::coordinator {
namespace {

std::string Bytes(int64_t bytes) {
  return absl::StrFormat("%d bytes (%.2f GiB)", bytes, double(bytes) / double(1LL << 30));
}

}  // namespace

std::string DeviceBudget::ToString() const {
  return absl::StrCat("dense weights ", Bytes(weights_bytes), " + KV cache ", streams,
                      " streams x ", context_tokens, " tokens x ",
                      kv_bytes_per_stream / std::max<int64_t>(context_tokens, 1),
                      " bytes = ", Bytes(kv_bytes()), " + scratch ", Bytes(scratch_bytes),
                      " = ", Bytes(total_bytes()), "; budget ",
                      budget_bytes > 0 ? Bytes(budget_bytes) : std::string("unlimited"));
}

absl::StatusOr<int64_t> ResolveBudgetBytes(const backend::Device& device, double budget_gib) {
  if (!(budget_gib >= 0) || !std::isfinite(budget_gib)) {
    return absl::InvalidArgumentError(
        absl::StrCat("device memory budget ", budget_gib, " GiB: must be >= 0 (0: the device's free memory)"));
  }
  if (budget_gib > 0) return int64_t(budget_gib * double(1LL << 30));
  if (device.kind() == backend::DeviceKind::kCpu) return 0;
  MOE_ASSIGN_OR_RETURN(backend::MemoryInfo memory, device.Memory());
  return memory.free_bytes;
}

absl::StatusOr<DeviceBudget> CheckDeviceBudget(const ModelConfig& config, int64_t weights_bytes,
                                               int64_t streams, int64_t context_tokens,
                                               int lookahead, int64_t budget_bytes,
                                               int64_t batch_tokens) {
  if (streams < 1 || context_tokens < 1 || context_tokens > config.max_position_embeddings ||
      batch_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "device budget: ", streams, " streams of ", context_tokens, " context tokens, ",
        batch_tokens, " tokens per pass (need >= 1 stream, 1..",
        config.max_position_embeddings, " tokens and a pass of >= 0 tokens)"));
  }
  DeviceBudget b;
  b.weights_bytes = weights_bytes;
  b.streams = streams;
  b.context_tokens = context_tokens;
  b.kv_bytes_per_stream = KvCache::Bytes(config, context_tokens);
  b.scratch_bytes =
      batch_tokens > 0
          ? MixtralModel::ScratchBytes(config, batch_tokens, std::min(streams, batch_tokens),
                                       lookahead)
          : MixtralModel::ScratchBytes(config, context_tokens, 1, lookahead);
  b.budget_bytes = budget_bytes;
  if (budget_bytes > 0 && b.total_bytes() > budget_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the model does not fit the device memory budget: ", b.ToString()));
  }
  return b;
}

}  // namespace moe::coordinator
