#include "expert_worker/in_process_backend.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace moe::expert_worker {

absl::Status InProcessBackend::RunExperts(int layer, absl::Span<const float> x, int64_t n,
                                          absl::Span<const int32_t> ids,
                                          absl::Span<const float> weights,
                                          absl::Span<float> out) {
  const int64_t h = store_->layout().hidden;
  if (layer < 0 || layer >= store_->num_layers()) {
    return absl::InvalidArgumentError(absl::StrCat("RunExperts: layer ", layer,
                                                   " out of range [0, ", store_->num_layers(), ")"));
  }
  if (n <= 0 || ids.size() % n != 0 || ids.size() != weights.size() ||
      x.size() != size_t(n * h) || out.size() != size_t(n * h)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "RunExperts: inconsistent sizes (n=", n, ", x=", x.size(), ", ids=", ids.size(),
        ", weights=", weights.size(), ", out=", out.size(), ", hidden=", h, ")"));
  }
  const int64_t k = static_cast<int64_t>(ids.size()) / n;
  for (int32_t id : ids) {
    if (id < 0 || id >= store_->num_experts()) {
      return absl::InvalidArgumentError(absl::StrCat("RunExperts: expert id ", id,
                                                     " out of range [0, ", store_->num_experts(), ")"));
    }
  }
  std::fill(out.begin(), out.end(), 0.0f);
  // Group tokens by expert: each expert's weights are read once per call, and prefill
  // becomes one matrix product per expert instead of one per token.
  for (int expert = 0; expert < store_->num_experts(); ++expert) {
    tokens_.clear();
    gains_.clear();
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t j = 0; j < k; ++j) {
        if (ids[t * k + j] == expert) {
          tokens_.push_back(t);
          gains_.push_back(weights[t * k + j]);
        }
      }
    }
    if (tokens_.empty()) continue;
    const int64_t m = static_cast<int64_t>(tokens_.size());
    rows_.resize(m * h);
    result_.resize(m * h);
    for (int64_t r = 0; r < m; ++r) {
      std::memcpy(&rows_[r * h], &x[tokens_[r] * h], h * sizeof(float));
    }
    RunExpertFfn(store_->Expert(layer, expert), store_->layout(), rows_.data(), m, scratch_,
                 result_.data());
    for (int64_t r = 0; r < m; ++r) {
      float* dst = &out[tokens_[r] * h];
      const float* src = &result_[r * h];
      const float g = gains_[r];
      for (int64_t d = 0; d < h; ++d) dst[d] += g * src[d];
    }
  }
  return absl::OkStatus();
}

}  // namespace moe::expert_worker
