#include "expert_worker/expert_runner.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "expert_worker/expert_ffn.h"

namespace moe::expert_worker {

absl::Status ExpertRunner::Run(int layer, absl::Span<const float> x, int64_t n,
                               absl::Span<const int32_t> ids, absl::Span<const float> weights,
                               absl::Span<float> out, RunCounters* counters,
                               ActivationPlacement placement) const {
  using Clock = std::chrono::steady_clock;
  const ExpertStore& store = cache_->store();
  const int64_t h = store.layout().hidden;
  if (layer < 0 || layer >= store.num_layers()) {
    return absl::InvalidArgumentError(
        absl::StrCat("RunExperts: layer ", layer, " out of range [0, ", store.num_layers(), ")"));
  }
  if (n <= 0 || ids.empty() || ids.size() % n != 0 || ids.size() != weights.size() ||
      x.size() != size_t(n * h) || out.size() != size_t(n * h)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "RunExperts: inconsistent sizes (tokens=", n, ", x=", x.size(), ", ids=", ids.size(),
        ", weights=", weights.size(), ", out=", out.size(), ", hidden=", h, ")"));
  }
  const int64_t k = static_cast<int64_t>(ids.size()) / n;
  for (int32_t id : ids) {
    if (id < 0 || id >= store.num_experts()) {
      return absl::InvalidArgumentError(absl::StrCat("RunExperts: expert id ", id,
                                                     " out of range [0, ", store.num_experts(), ")"));
    }
  }
  RunCounters local;
  std::fill(out.begin(), out.end(), 0.0f);
  FfnScratch scratch;
  std::vector<float> rows, result, gains;
  std::vector<int64_t> tokens;
  // Group tokens by expert, in the order experts are first needed: each expert is
  // leased once per call, and prefill becomes one matrix product per expert.
  std::vector<int32_t> order;
  for (int32_t id : ids) {
    if (std::find(order.begin(), order.end(), id) == order.end()) order.push_back(id);
  }
  if (load_whole_layer_) {
    for (int32_t e = 0; e < store.num_experts(); ++e) {
      if (std::find(order.begin(), order.end(), e) == order.end()) order.push_back(e);
    }
  }
  for (int32_t expert : order) {
    tokens.clear();
    gains.clear();
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t j = 0; j < k; ++j) {
        if (ids[t * k + j] == expert) {
          tokens.push_back(t);
          gains.push_back(weights[t * k + j]);
        }
      }
    }
    const int64_t m = static_cast<int64_t>(tokens.size());
    if (m == 0) {  // loaded for the baseline's sake only
      const auto t0 = Clock::now();
      SlotCache::Lease lease = cache_->Acquire(layer, expert);
      local.load_wait_s += std::chrono::duration<double>(Clock::now() - t0).count();
      ++(lease.hit() ? local.hits : local.misses);
      continue;
    }
    rows.resize(m * h);
    result.resize(m * h);
    for (int64_t r = 0; r < m; ++r) std::memcpy(&rows[r * h], &x[tokens[r] * h], h * sizeof(float));

    const auto t0 = Clock::now();
    SlotCache::Lease lease = cache_->Acquire(layer, expert);
    const auto t1 = Clock::now();
    RunExpertFfn(lease.data(), store.layout(), rows.data(), m, scratch, result.data());
    const auto t2 = Clock::now();
    local.load_wait_s += std::chrono::duration<double>(t1 - t0).count();
    local.compute_s += std::chrono::duration<double>(t2 - t1).count();
    ++(lease.hit() ? local.hits : local.misses);
    local.prefetch_hits += lease.prefetched();

    for (int64_t r = 0; r < m; ++r) {
      float* dst = &out[tokens[r] * h];
      const float* src = &result[r * h];
      const float g = gains[r];
      for (int64_t d = 0; d < h; ++d) dst[d] += g * src[d];
    }
  }
  if (counters != nullptr) *counters = local;
  return absl::OkStatus();
}

absl::Status InProcessBackend::RunExperts(int layer, absl::Span<const float> x, int64_t n,
                                          absl::Span<const int32_t> ids,
                                          absl::Span<const float> weights, absl::Span<float> out,
                                          ExpertCallStats* stats) {
  RunCounters counters;
  MOE_RETURN_IF_ERROR(runner_.Run(layer, x, n, ids, weights, out, &counters));
  if (stats != nullptr) {
    stats->calls += 1;
    stats->hits += counters.hits;
    stats->misses += counters.misses;
    stats->prefetch_hits += counters.prefetch_hits;
    stats->stall_s += counters.load_wait_s;
    stats->compute_s += counters.compute_s;
  }
  return absl::OkStatus();
}

}  // namespace moe::expert_worker
