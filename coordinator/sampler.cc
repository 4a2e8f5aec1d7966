#include "coordinator/sampler.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/backend/cpu/cpu_kernels.h"

namespace moe::coordinator {

absl::Status SamplingParams::Validate() const {
  if (!(temperature >= 0.0f) || !std::isfinite(temperature)) {
    return absl::InvalidArgumentError(absl::StrCat("temperature must be >= 0, got ", temperature));
  }
  if (top_k < 0) return absl::InvalidArgumentError(absl::StrCat("top_k must be >= 0, got ", top_k));
  if (!(top_p > 0.0f && top_p <= 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("top_p must be in (0, 1], got ", top_p));
  }
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {}

int Sampler::Sample(absl::Span<const float> logits) {
  const int64_t v = static_cast<int64_t>(logits.size());
  if (params_.temperature == 0.0f) return static_cast<int>(cpu::ArgMax(logits.data(), v));

  candidates_.resize(v);
  for (int64_t i = 0; i < v; ++i) candidates_[i] = {logits[i] / params_.temperature, int(i)};
  if (!std::isfinite(candidates_[cpu::ArgMax(logits.data(), v)].first)) {
    // A tiny temperature overflowed the scaled logits (inf - inf is NaN below): scale
    // the distances from the largest instead, which are <= 0 and at worst -inf, so the
    // most likely tokens keep all the mass, as the limit T -> 0 says.
    const float top = logits[cpu::ArgMax(logits.data(), v)];
    for (int64_t i = 0; i < v; ++i) candidates_[i].first = (logits[i] - top) / params_.temperature;
  }
  // Highest first; ties broken by id so that the order is deterministic.
  auto by_logit = [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  };
  int64_t keep = v;
  if (params_.top_k > 0 && params_.top_k < v) {
    keep = params_.top_k;
    std::partial_sort(candidates_.begin(), candidates_.begin() + keep, candidates_.end(), by_logit);
  } else {
    std::sort(candidates_.begin(), candidates_.end(), by_logit);
  }
  candidates_.resize(keep);
  const float max = candidates_[0].first;
  double total = 0.0;
  for (auto& [value, id] : candidates_) {
    value = std::exp(value - max);
    total += value;
  }
  if (params_.top_p < 1.0f) {
    // The smallest prefix whose mass reaches top_p (always at least one token).
    double mass = 0.0;
    int64_t cut = 0;
    while (cut < keep) {
      mass += candidates_[cut].first / total;
      ++cut;
      if (mass >= params_.top_p) break;
    }
    candidates_.resize(cut);
    total = 0.0;
    for (const auto& [value, id] : candidates_) total += value;
  }
  const double r = std::uniform_real_distribution<double>(0.0, total)(rng_);
  double acc = 0.0;
  for (const auto& [value, id] : candidates_) {
    acc += value;
    if (r < acc) return id;
  }
  return candidates_.back().second;
}

}  // namespace moe::coordinator
