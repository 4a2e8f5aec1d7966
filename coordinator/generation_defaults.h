// The one set of sampling and length defaults: what a generation uses for a field its
// caller did not give. `moe generate`'s flags default to these, the coordinator applies
// them to moe.v1.GenerateRequest fields left absent (proto3 `optional`), and the HTTP
// API leaves out what a request body leaves out. README ("Defaults") documents them.
#ifndef MOE_COORDINATOR_GENERATION_DEFAULTS_H_
#define MOE_COORDINATOR_GENERATION_DEFAULTS_H_

#include <cstdint>

namespace moe::coordinator {

struct GenerationDefaults {
  uint32_t max_new_tokens = 128;
  // Doubles, as the command-line flags are: the sampler's float of either is the same.
  double temperature = 0.7;  // 0: greedy
  double top_p = 0.95;
  uint32_t top_k = 0;  // 0: no limit
};

inline constexpr GenerationDefaults kGenerationDefaults;

}  // namespace moe::coordinator

#endif  // MOE_COORDINATOR_GENERATION_DEFAULTS_H_
