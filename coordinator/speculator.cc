#include "coordinator/speculator.h"

#include <algorithm>

#include "common/status.h"

namespace moe::coordinator {

SpeculationStats& SpeculationStats::operator+=(const SpeculationStats& o) {
  hinted += o.hinted;
  nearest += o.nearest;
  for (int d = 0; d < kMaxLookahead; ++d) by_distance[d] += o.by_distance[d];
  return *this;
}

int Speculator::GuessWidth(const ModelConfig& config, const SpeculationOptions& options) {
  return static_cast<int>(std::min<int64_t>(options.experts, config.num_local_experts));
}

Speculator::Buffers Speculator::Carve(const ModelConfig& config, const SpeculationOptions& options,
                                      int64_t n, ScratchCarver& device, ScratchCarver& host) {
  Buffers b;
  if (options.lookahead <= 0) return b;
  const int64_t m = GuessWidth(config, options);
  b.xn = device.Take<float>(n * config.hidden_size);
  b.logits = device.Take<float>(n * config.num_local_experts);
  b.ids = device.Take<int32_t>(options.lookahead * n * m);
  b.weights = device.Take<float>(n * m);
  b.host_ids = host.Take<int32_t>(options.lookahead * n * m);
  return b;
}

absl::StatusOr<Speculator> Speculator::Create(const ModelConfig& config,
                                              const DeviceWeights& weights,
                                              backend::Kernels& kernels, backend::Device& device,
                                              ExpertBackend& experts,
                                              const SpeculationOptions& options, int64_t n,
                                              const Buffers& buffers) {
  Speculator s;
  s.config_ = &config;
  s.weights_ = &weights;
  s.kernels_ = &kernels;
  s.device_ = &device;
  s.experts_ = &experts;
  s.lookahead_ = std::max(0, options.lookahead);
  s.m_ = GuessWidth(config, options);
  s.n_ = n;
  s.b_ = buffers;
  if (s.lookahead_ > 0) {
    MOE_ASSIGN_OR_RETURN(s.guessed_, device.CreateEvent());
    s.guesses_.assign(s.lookahead_,
                      std::vector<std::vector<int32_t>>(size_t(config.num_expert_layers())));
  }
  return s;
}

absl::Status Speculator::Guess(int layer, const float* x, backend::Stream& stream) {
  const ModelConfig& c = *config_;
  const int64_t n = n_, m = m_, e = c.num_local_experts;
  const float eps = static_cast<float>(c.rms_norm_eps);
  pending_ = 0;
  for (int j = 1; j <= lookahead_ && layer + j < c.num_expert_layers(); ++j, ++pending_) {
    const DeviceLayerWeights& next = weights_->layer(c.DecoderLayer(layer + j));
    int32_t* ids = b_.ids + (j - 1) * n * m;
    MOE_RETURN_IF_ERROR(kernels_->RmsNorm(x, next.post_norm, b_.xn, n, c.hidden_size, eps, stream));
    MOE_RETURN_IF_ERROR(kernels_->MatMul(next.gate, b_.xn, b_.logits, n, /*accumulate=*/false, stream));
    MOE_RETURN_IF_ERROR(kernels_->TopKRouting(b_.logits, n, e, m, c.norm_topk_prob, ids,
                                              b_.weights, stream));
    MOE_RETURN_IF_ERROR(device_->CopyToHost(b_.host_ids + (j - 1) * n * m, ids,
                                            n * m * sizeof(int32_t), stream));
  }
  if (pending_ > 0) MOE_RETURN_IF_ERROR(guessed_->Record(stream));
  return absl::OkStatus();
}

absl::Status Speculator::Hint(int layer) {
  if (pending_ == 0) return absl::OkStatus();
  MOE_RETURN_IF_ERROR(guessed_->Synchronize());
  const int64_t count = n_ * m_;
  for (int j = 1; j <= pending_; ++j) {
    const int32_t* ids = b_.host_ids + (j - 1) * count;
    std::vector<int32_t>& guess = guesses_[j - 1][layer + j];
    guess.assign(ids, ids + count);
    // The batch's guesses, most-guessed first (ties: first guessed, so one token's hint
    // keeps the router's rank): the slots may hold fewer than the batch guesses, and the
    // worker loads a hint in order.
    std::vector<int32_t> unique;
    std::vector<int> votes;
    for (int32_t id : guess) {
      const auto it = std::find(unique.begin(), unique.end(), id);
      if (it == unique.end()) {
        unique.push_back(id);
        votes.push_back(1);
      } else {
        ++votes[it - unique.begin()];
      }
    }
    std::vector<size_t> rank(unique.size());
    for (size_t r = 0; r < rank.size(); ++r) rank[r] = r;
    std::stable_sort(rank.begin(), rank.end(),
                     [&](size_t a, size_t b) { return votes[a] > votes[b]; });
    std::vector<int32_t> hint;
    hint.reserve(rank.size());
    for (size_t r : rank) hint.push_back(unique[r]);
    experts_->Prefetch(layer + j, hint);
    stats_.hinted += guess.size();
  }
  pending_ = 0;
  return absl::OkStatus();
}

void Speculator::Score(int layer, absl::Span<const int32_t> route_ids) {
  const int64_t n = n_, m = m_;
  const int64_t k = n > 0 ? int64_t(route_ids.size()) / n : 0;
  // The nearest guess is the round the backend acted on last.
  bool nearest_scored = false;
  for (int d = 1; d <= lookahead_; ++d) {
    const std::vector<int32_t>& guess = guesses_[d - 1][layer];
    if (guess.empty()) continue;
    GuessScore score;
    for (int64_t t = 0; t < n; ++t) {
      const int32_t* g = &guess[t * m];
      for (int64_t a = 0; a < k; ++a) score.hits += std::find(g, g + m, route_ids[t * k + a]) != g + m;
    }
    score.needed = n * k;
    score.scored = guess.size();
    stats_.by_distance[d - 1] += score;
    if (!nearest_scored) stats_.nearest += score;
    nearest_scored = true;
  }
}

}  // namespace moe::coordinator
