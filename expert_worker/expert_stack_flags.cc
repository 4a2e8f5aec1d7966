#include "expert_worker/expert_stack_flags.h"

#include "absl/flags/flag.h"
#include "common/status.h"

ABSL_FLAG(int, cache_per_layer, 0,
          "Experts kept resident per layer (0: every expert, or what --cache-bytes holds)");
ABSL_FLAG(int64_t, cache_bytes, 0,
          "Expert cache budget in bytes: the slots per layer that fit (alternative to "
          "--cache-per-layer)");
ABSL_FLAG(std::string, policy, "",
          "Cache eviction policy: lru, lfu, fifo, random or lfu-decay (empty: lru)");
ABSL_FLAG(double, link_gbps, 0,
          "Link model (CPU device only): host-to-cache copy bandwidth in GB/s (0: a real "
          "memcpy)");
ABSL_FLAG(double, link_latency_us, 0, "Link model (CPU device only): fixed cost per copy in microseconds");

namespace moe::expert_worker {

absl::StatusOr<ExpertStackOptions> ExpertStackFlags() {
  ExpertStackOptions options;
  options.cache_per_layer = absl::GetFlag(FLAGS_cache_per_layer);
  options.cache_bytes = absl::GetFlag(FLAGS_cache_bytes);
  options.policy = absl::GetFlag(FLAGS_policy);
  options.link = {absl::GetFlag(FLAGS_link_gbps), absl::GetFlag(FLAGS_link_latency_us)};
  MOE_RETURN_IF_ERROR(CheckExpertStackOptions(options));
  return options;
}

}  // namespace moe::expert_worker
