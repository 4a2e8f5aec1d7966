// The flags of the expert stack (expert_stack.h), declared once for every binary that
// builds one: moe-expert-worker, `moe` (generate, logits, bench, perplexity; set-policy
// reads --policy and --cache-per-layer as "what to change") and mixtral_scale_bench.
//   --cache-per-layer K   --cache-bytes N   --policy P   --link-gbps X   --link-latency-us U
#ifndef MOE_EXPERT_WORKER_EXPERT_STACK_FLAGS_H_
#define MOE_EXPERT_WORKER_EXPERT_STACK_FLAGS_H_

#include <cstdint>
#include <string>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"
#include "expert_worker/expert_stack.h"

ABSL_DECLARE_FLAG(int, cache_per_layer);
ABSL_DECLARE_FLAG(int64_t, cache_bytes);
ABSL_DECLARE_FLAG(std::string, policy);
ABSL_DECLARE_FLAG(double, link_gbps);
ABSL_DECLARE_FLAG(double, link_latency_us);

namespace moe::expert_worker {

// The options the flags give (the rest at their defaults), checked by
// CheckExpertStackOptions: INVALID_ARGUMENT naming the flag for a bad value.
absl::StatusOr<ExpertStackOptions> ExpertStackFlags();

}  // namespace moe::expert_worker

#endif  // MOE_EXPERT_WORKER_EXPERT_STACK_FLAGS_H_
