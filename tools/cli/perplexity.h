// Teacher-forced perplexity of a model over a token stream: `moe perplexity` and the
// quantization quality tests.
#ifndef MOE_TOOLS_CLI_PERPLEXITY_H_
#define MOE_TOOLS_CLI_PERPLEXITY_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/mixtral_model.h"

namespace moe {

struct PerplexityResult {
  int64_t tokens = 0;      // tokens predicted
  double mean_nll = 0;     // nats per token
  double perplexity = 0;   // exp(mean_nll)
  double seconds = 0;
};

// The stream is cut into consecutive windows of at most `window` tokens; each window is
// one forward pass over [BOS, w_0 .. w_{n-2}] predicting w_0 .. w_{n-1} (as the bundled
// model's trainer evaluates held-out text). `window` must be in [1, context].
absl::StatusOr<PerplexityResult> ComputePerplexity(const coordinator::MixtralModel& model,
                                                   const std::vector<int>& stream, int64_t window);

}  // namespace moe

#endif  // MOE_TOOLS_CLI_PERPLEXITY_H_
