// The activation ring's wait flags, declared once for every binary with an end of the
// ring: moe-expert-worker (waiting for calls), moe-coordinator and split_bench (waiting
// for replies).
//   --ring-wait adaptive|fixed   --ring-spin-us US
#ifndef MOE_COMMON_RING_WAIT_FLAGS_H_
#define MOE_COMMON_RING_WAIT_FLAGS_H_

#include <string>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"
#include "common/ring_wait.h"

ABSL_DECLARE_FLAG(std::string, ring_wait);
ABSL_DECLARE_FLAG(double, ring_spin_us);

namespace moe::ring {

// The options the flags give; INVALID_ARGUMENT naming the flag for a bad value.
absl::StatusOr<WaitOptions> WaitOptionsFromFlags();

}  // namespace moe::ring

#endif  // MOE_COMMON_RING_WAIT_FLAGS_H_
