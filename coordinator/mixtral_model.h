// The coordinator's half of a Mixtral forward pass: embeddings, attention with its KV
// cache, norms, routers and the LM head. Each MoE layer's expert FFN is delegated to an
// ExpertBackend, which owns the experts.
#ifndef MOE_COORDINATOR_MIXTRAL_MODEL_H_
#define MOE_COORDINATOR_MIXTRAL_MODEL_H_

#include <cstdint>
#include <array>
#include <mutex>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/backend/cpu/cpu_kernels.h"
#include "common/expert_backend.h"
#include "common/model_config.h"
#include "coordinator/dense_weights.h"
#include "coordinator/kv_cache.h"

namespace moe::coordinator {

// The router's choice for one layer: ids and weights, [n, experts_per_tok] each.
struct LayerRouting {
  int layer = 0;
  int64_t start = 0;  // position of the first token
  absl::Span<const int32_t> ids;
  absl::Span<const float> weights;
};

// Speculative expert loading (Eliseev & Mazur): after layer L's attention, the gates of
// layers L+1..L+lookahead applied to the current hidden state (each through its own
// post-attention norm) guess those layers' experts; the top `experts` per token are
// prefetched while layer L computes.
inline constexpr int kMaxLookahead = 8;
struct SpeculationOptions {
  int lookahead = 0;  // layers ahead to guess, in [0, kMaxLookahead]; 0 turns it off
  int experts = 2;    // experts prefetched per token and guessed layer, >= 1
};

// How good the guesses were: a guess for layer L counts as used when layer L's router
// then picks it for the same token.
struct GuessScore {
  uint64_t scored = 0;  // (token, expert) guesses compared with the router's choice
  uint64_t needed = 0;  // router choices that had a guess
  uint64_t hits = 0;    // guesses the router then chose
  double recall() const { return needed ? double(hits) / needed : 0; }
  double precision() const { return scored ? double(hits) / scored : 0; }
  GuessScore& operator+=(const GuessScore& o) {
    scored += o.scored;
    needed += o.needed;
    hits += o.hits;
    return *this;
  }
};

struct SpeculationStats {
  uint64_t hinted = 0;  // (token, layer, expert) guesses sent as prefetch hints
  // The nearest guess of each layer (made one layer before when lookahead >= 1).
  GuessScore nearest;
  // by_distance[d - 1]: guesses made d layers ahead of the layer they are for.
  std::array<GuessScore, kMaxLookahead> by_distance{};
  double recall() const { return nearest.recall(); }
  double precision() const { return nearest.precision(); }
  SpeculationStats& operator+=(const SpeculationStats& o);
};

// Figures of one or more forward passes (the caller zeroes it; Forward adds).
struct ForwardStats {
  ExpertCallStats experts;
  SpeculationStats speculation;
  ForwardStats& operator+=(const ForwardStats& o) {
    experts += o.experts;
    speculation += o.speculation;
    return *this;
  }
};

// Immutable after Create but for the speculation settings and totals (set_speculation
// between passes; totals under a lock). Forward may run concurrently on different
// caches (both ExpertBackends are thread-safe).
class MixtralModel {
 public:
  // `experts` must outlive the model.
  static absl::StatusOr<std::unique_ptr<MixtralModel>> Create(const ModelConfig& config,
                                                              DenseWeights weights,
                                                              ExpertBackend* experts);

  enum class Logits { kLast, kAll };

  // Runs `tokens` at positions cache.length() .. cache.length() + n - 1, appends their
  // keys and values to `cache` and writes logits: [1, V] for the last token or [n, V].
  // Token ids must lie in the vocabulary and the cache must have room. `cancelled`, if
  // set, is asked before every layer; when it says true the pass stops with CANCELLED
  // (the cache keeps its previous length). When the expert backend answers UNAVAILABLE,
  // the pass waits in ExpertBackend::AwaitRecovery and redoes the layer's experts. `stats`, if set, has the pass's figures added.
  absl::Status Forward(absl::Span<const int> tokens, KvCache& cache, Logits which,
                       std::vector<float>* logits,
                       const std::function<bool()>& cancelled = nullptr,
                       ForwardStats* stats = nullptr) const;

  // Called once per layer and forward pass with the router's decisions (for statistics
  // and studies); may be empty.
  void set_routing_observer(std::function<void(const LayerRouting&)> observer) {
    observer_ = std::move(observer);
  }

  // Checked: lookahead in [0, kMaxLookahead], experts >= 1.
  void set_speculation(const SpeculationOptions& options);
  SpeculationOptions speculation() const { return speculation_; }
  // Totals over every pass since Create.
  ForwardStats totals() const;
  SpeculationStats speculation_stats() const { return totals().speculation; }

  const ModelConfig& config() const { return config_; }

 private:
  MixtralModel(const ModelConfig& config, DenseWeights weights, ExpertBackend* experts);

  ModelConfig config_;
  DenseWeights weights_;
  ExpertBackend* experts_;
  cpu::RopeTable rope_;
  std::function<void(const LayerRouting&)> observer_;
  SpeculationOptions speculation_;
  mutable std::mutex totals_mu_;
  mutable ForwardStats totals_;  // guarded by totals_mu_
};

}  // namespace moe::coordinator

#endif  // MOE_COORDINATOR_MIXTRAL_MODEL_H_
