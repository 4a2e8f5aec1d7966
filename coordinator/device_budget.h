// Whether a model fits the memory it may use on its device, checked once at start:
// dense weights + a KV cache per concurrent stream + one forward pass's scratch.
#ifndef MOE_COORDINATOR_DEVICE_BUDGET_H_
#define MOE_COORDINATOR_DEVICE_BUDGET_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/backend/device.h"
#include "common/model_config.h"

namespace moe::coordinator {

struct DeviceBudget {
  int64_t weights_bytes = 0;       // dense weights
  int64_t streams = 0;             // concurrent generations
  int64_t context_tokens = 0;      // KV positions reserved per stream
  int64_t kv_bytes_per_stream = 0;
  int64_t scratch_bytes = 0;       // one forward pass (see CheckDeviceBudget)
  int64_t budget_bytes = 0;        // what the device may use; 0: unlimited

  int64_t kv_bytes() const { return streams * kv_bytes_per_stream; }
  int64_t total_bytes() const { return weights_bytes + kv_bytes() + scratch_bytes; }
  // "dense weights W + KV cache S streams x C tokens x B = K + scratch X = T bytes of
  // budget Y bytes"
  std::string ToString() const;
};

// The bytes the model may use on `device`: `budget_gib` GiB when > 0; else the device's
// free memory on a GPU, and 0 (no limit) on the CPU. INVALID_ARGUMENT for a negative or
// non-finite budget.
absl::StatusOr<int64_t> ResolveBudgetBytes(const backend::Device& device, double budget_gib);

// Fills a DeviceBudget for `streams` x `context_tokens` and checks it: INVALID_ARGUMENT
// for streams or context_tokens < 1 or a context beyond the config's
// max_position_embeddings; RESOURCE_EXHAUSTED naming every figure when the total exceeds
// a nonzero budget. Forward passes run one at a time (the BatchScheduler's thread, or
// one CLI stream), so scratch is counted once: for a pass of `batch_tokens` rows with
// logits for min(streams, batch_tokens) of them (the scheduler's steps), or, when
// batch_tokens is 0, for a lone stream's whole context in one pass. weights_bytes comes
// from DeviceWeights::Bytes.
absl::StatusOr<DeviceBudget> CheckDeviceBudget(const ModelConfig& config, int64_t weights_bytes,
                                               int64_t streams, int64_t context_tokens,
                                               int lookahead, int64_t budget_bytes,
                                               int64_t batch_tokens = 0);

}  // namespace moe::coordinator

#endif  // MOE_COORDINATOR_DEVICE_BUDGET_H_
