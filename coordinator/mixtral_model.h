// The coordinator's half of a Mixtral forward pass: embeddings, attention with its KV
// cache, norms, routers and the LM head, computed through backend::Kernels on one
// backend::Device (the CPU, bit-identical to the CPU engine's functions, or CUDA). Each
// MoE layer's expert FFN is delegated to an ExpertBackend, which owns the experts.
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
#include "common/backend/device.h"
#include "common/backend/kernels.h"
#include "common/expert_backend.h"
#include "common/model_config.h"
#include "coordinator/dense_weights.h"
#include "coordinator/device_scratch.h"
#include "coordinator/device_weights.h"
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

// Replaces the router's choice of one layer (e.g. to replay a recorded routing trace):
// called with the router's ids and weights, [n, experts_per_tok] host memory each, which
// it may overwrite. A non-OK status ends the pass with it. Ids must stay in
// [0, num_local_experts) (checked; INVALID_ARGUMENT otherwise).
using RoutingOverride = std::function<absl::Status(int layer, int64_t start, int64_t n,
                                                   absl::Span<int32_t> ids,
                                                   absl::Span<float> weights)>;

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

// Immutable after Create but for the hooks, the speculation settings and the context
// limit (set between passes) and the totals (under a lock). Forward may run
// concurrently on different caches (both ExpertBackends are thread-safe): each pass
// computes on a stream and scratch of its own.
class MixtralModel {
 public:
  // On the CPU device. `experts` must outlive the model.
  static absl::StatusOr<std::unique_ptr<MixtralModel>> Create(const ModelConfig& config,
                                                              DenseWeights weights,
                                                              ExpertBackend* experts);
  // On `device` (which, like `experts`, must outlive the model): the dense weights are
  // uploaded to it. `experts` receives x/out as memory of `device` (expert_backend.h).
  static absl::StatusOr<std::unique_ptr<MixtralModel>> Create(const ModelConfig& config,
                                                              DenseWeights weights,
                                                              ExpertBackend* experts,
                                                              backend::Device& device);

  // Device scratch one pass of `n` tokens needs, `logits_rows` of them with logits, at
  // `lookahead` layers of speculation (for budgeting the device's memory).
  static int64_t ScratchBytes(const ModelConfig& config, int64_t n, int64_t logits_rows,
                              int lookahead);

  // A KV cache of `capacity` positions on the model's device. INVALID_ARGUMENT when
  // capacity exceeds max_context_tokens(); RESOURCE_EXHAUSTED when it does not fit.
  absl::StatusOr<std::unique_ptr<KvCache>> NewCache(int64_t capacity) const;

  enum class Logits { kLast, kAll };

  // Runs `tokens` at positions cache.length() .. cache.length() + n - 1, appends their
  // keys and values to `cache` and writes logits: [1, V] for the last token or [n, V].
  // Token ids must lie in the vocabulary and the cache must have room and live on the
  // model's device (a host KvCache serves a model on the CPU). `cancelled`, if
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

  // Replaces the router's choice per layer (see RoutingOverride); empty: the router's.
  // The observer, the speculation scores and the experts all see the replaced choice.
  void set_routing_override(RoutingOverride routing_override) {
    routing_override_ = std::move(routing_override);
  }

  // The longest sequence a cache may be made for (the KV reservation per stream);
  // 0 restores the config's max_position_embeddings. Checked: in [0, that].
  void set_max_context_tokens(int64_t tokens);
  int64_t max_context_tokens() const { return max_context_tokens_; }

  // Checked: lookahead in [0, kMaxLookahead], experts >= 1.
  void set_speculation(const SpeculationOptions& options);
  SpeculationOptions speculation() const { return speculation_; }
  // Totals over every pass since Create.
  ForwardStats totals() const;
  SpeculationStats speculation_stats() const { return totals().speculation; }

  const ModelConfig& config() const { return config_; }
  backend::Device& device() const { return *device_; }
  const DeviceWeights& weights() const { return *weights_; }

 private:
  MixtralModel(const ModelConfig& config, ExpertBackend* experts, backend::Device& device);

  ModelConfig config_;
  ExpertBackend* experts_;
  // The CPU device of the first Create; declared first so that it is destroyed last.
  std::unique_ptr<backend::Device> owned_device_;
  backend::Device* device_;
  std::unique_ptr<backend::Kernels> kernels_;
  std::unique_ptr<DeviceWeights> weights_;
  mutable ScratchPool scratch_;
  int64_t max_context_tokens_;
  std::function<void(const LayerRouting&)> observer_;
  RoutingOverride routing_override_;
  SpeculationOptions speculation_;
  mutable std::mutex totals_mu_;
  mutable ForwardStats totals_;  // guarded by totals_mu_
};

}  // namespace moe::coordinator

#endif  // MOE_COORDINATOR_MIXTRAL_MODEL_H_
