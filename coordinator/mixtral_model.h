// The coordinator's half of a Mixtral forward pass: embeddings, attention with its KV
// cache, norms, routers and the LM head. Each MoE layer's expert FFN is delegated to an
// ExpertBackend, which owns the experts.
#ifndef MOE_COORDINATOR_MIXTRAL_MODEL_H_
#define MOE_COORDINATOR_MIXTRAL_MODEL_H_

#include <cstdint>
#include <atomic>
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
struct SpeculationOptions {
  int lookahead = 0;  // layers ahead to guess; 0 turns speculation off
  int experts = 2;    // experts prefetched per token and guessed layer
};

// How good the guesses were: a guess for layer L+j counts as used when layer L+j's router
// then picks it for the same token.
// With lookahead > 1 a layer is guessed several times; the nearest guess (made one layer
// before) is the one scored, and `hinted` counts every guess sent.
struct SpeculationStats {
  uint64_t hinted = 0;   // (token, layer, expert) guesses sent as prefetch hints
  uint64_t scored = 0;   // guesses compared with the router's later choice
  uint64_t needed = 0;   // router choices that had a guess
  uint64_t hits = 0;     // scored guesses the router then chose
  double recall() const { return needed ? double(hits) / needed : 0; }
  double precision() const { return scored ? double(hits) / scored : 0; }
};

// Immutable after Create (but for speculation statistics, which are atomic); Forward may run concurrently on different caches only if the
// ExpertBackend allows concurrent calls (the in-process one does not).
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
  // the pass waits in ExpertBackend::AwaitRecovery and redoes the layer's experts.
  absl::Status Forward(absl::Span<const int> tokens, KvCache& cache, Logits which,
                       std::vector<float>* logits,
                       const std::function<bool()>& cancelled = nullptr) const;

  // Called once per layer and forward pass with the router's decisions (for statistics
  // and studies); may be empty.
  void set_routing_observer(std::function<void(const LayerRouting&)> observer) {
    observer_ = std::move(observer);
  }

  void set_speculation(const SpeculationOptions& options) { speculation_ = options; }
  SpeculationStats speculation_stats() const;

  const ModelConfig& config() const { return config_; }

 private:
  MixtralModel(const ModelConfig& config, DenseWeights weights, ExpertBackend* experts);

  ModelConfig config_;
  DenseWeights weights_;
  ExpertBackend* experts_;
  cpu::RopeTable rope_;
  std::function<void(const LayerRouting&)> observer_;
  SpeculationOptions speculation_;
  mutable std::atomic<uint64_t> hinted_{0}, scored_{0}, needed_{0}, hits_{0};
};

}  // namespace moe::coordinator

#endif  // MOE_COORDINATOR_MIXTRAL_MODEL_H_
