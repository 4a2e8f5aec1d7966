// Picks the next token from logits: greedy, or temperature / top-k / top-p sampling.
#ifndef MOE_COORDINATOR_SAMPLER_H_
#define MOE_COORDINATOR_SAMPLER_H_

#include <cstdint>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace moe::coordinator {

struct SamplingParams {
  float temperature = 0.0f;  // 0: greedy (argmax)
  int top_k = 0;             // 0: no limit
  float top_p = 1.0f;        // nucleus mass in (0, 1]
  uint64_t seed = 0;

  absl::Status Validate() const;
};

// One per generation; not thread-safe. The same params and seed give the same tokens.
class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  int Sample(absl::Span<const float> logits);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int>> candidates_;
};

}  // namespace moe::coordinator

#endif  // MOE_COORDINATOR_SAMPLER_H_
