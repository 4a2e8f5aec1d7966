#include "tools/cli/perplexity.h"

#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "coordinator/kv_cache.h"

namespace moe {

absl::StatusOr<PerplexityResult> ComputePerplexity(const coordinator::MixtralModel& model,
                                                   const std::vector<int>& stream, int64_t window) {
  const ModelConfig& c = model.config();
  if (window < 1 || window > c.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("perplexity window ", window,
                                                   " must be in [1, ", c.max_position_embeddings, "]"));
  }
  if (stream.empty()) return absl::InvalidArgumentError("perplexity: no tokens to score");
  const auto start = std::chrono::steady_clock::now();
  const int64_t v = c.vocab_size;
  double nll = 0;
  std::vector<int> input;
  std::vector<float> logits;
  for (size_t s = 0; s < stream.size(); s += window) {
    const size_t n = std::min<size_t>(window, stream.size() - s);
    input.assign(1, static_cast<int>(c.bos_token_id));
    input.insert(input.end(), stream.begin() + s, stream.begin() + s + n - 1);
    MOE_ASSIGN_OR_RETURN(std::unique_ptr<coordinator::KvCache> cache,
                         model.NewCache(static_cast<int64_t>(n)));
    MOE_RETURN_IF_ERROR(model.Forward(input, *cache, coordinator::MixtralModel::Logits::kAll, &logits));
    for (size_t t = 0; t < n; ++t) {
      const float* row = logits.data() + t * v;
      double max = row[0];
      for (int64_t j = 1; j < v; ++j) max = std::max<double>(max, row[j]);
      double sum = 0;
      for (int64_t j = 0; j < v; ++j) sum += std::exp(double(row[j]) - max);
      nll += max + std::log(sum) - row[stream[s + t]];
    }
  }
  PerplexityResult r;
  r.tokens = static_cast<int64_t>(stream.size());
  r.mean_nll = nll / r.tokens;
  r.perplexity = std::exp(r.mean_nll);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

}  // namespace moe
