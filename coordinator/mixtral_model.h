// The coordinator's half of a forward pass of any family read (Mixtral, Qwen2/3-MoE,
// OLMoE; their differences are ModelFamilyOps' hooks): embeddings, attention with its KV
// cache, norms, routers, shared experts, dense MLP layers and the LM head, computed
// through backend::Kernels on one backend::Device (the CPU, bit-identical to the CPU
// engine's functions, or CUDA). Each sparse layer's routed experts are delegated to an
// ExpertBackend, which owns them and numbers layers by ModelConfig::ExpertLayer.
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
#include "coordinator/speculator.h"

namespace moe::coordinator {

// The router's choice for one layer of one sequence: ids and weights, [n,
// experts_per_tok] each.
struct LayerRouting {
  int layer = 0;  // an expert layer (ModelConfig::ExpertLayer), as the worker numbers them
  int64_t start = 0;  // position of the first token
  absl::Span<const int32_t> ids;
  absl::Span<const float> weights;
};

// Replaces the router's choice of one expert layer (ModelConfig::ExpertLayer) (e.g. to replay a recorded routing trace):
// called per sequence of the pass with the router's ids and weights for its n tokens at
// positions start.., [n, experts_per_tok] host memory each, which it may overwrite. A non-OK status ends the pass with it. Ids must stay in
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

// The sparse layers' normalised hidden state is written straight into an activation
// batch the expert backend lends (ExpertBackend::Lend), one per pass, and their output is
// read from it: nothing is staged between the model and the experts.
//
// Immutable after Create but for the hooks, the speculation settings and the context
// limit (set between passes) and the totals (under a lock). Forward may run
// concurrently on different caches (both ExpertBackends are thread-safe): each pass
// computes on a stream and scratch of its own.
//
// A pass may carry several sequences (continuous batching, batch_scheduler.h): their
// rows go through one matrix product per dense projection, one routing and one
// RunExperts per layer; attention runs per sequence over its own KV cache. On the CPU
// every kernel's per-row arithmetic is independent of the other rows, so a sequence's
// logits are bit-identical whatever shares its pass.
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
  // `lookahead` layers of speculation (for budgeting the device's memory; several
  // sequences in one pass need no more than one of n tokens).
  static int64_t ScratchBytes(const ModelConfig& config, int64_t n, int64_t logits_rows,
                              int lookahead);

  // A KV cache of `capacity` positions on the model's device. INVALID_ARGUMENT when
  // capacity exceeds max_context_tokens(); RESOURCE_EXHAUSTED when it does not fit.
  absl::StatusOr<std::unique_ptr<KvCache>> NewCache(int64_t capacity) const;

  // kNone: no logits (a prompt chunk that is not the prompt's end).
  enum class Logits { kLast, kAll, kNone };

  // One sequence's part of a pass.
  struct Sequence {
    absl::Span<const int> tokens;  // at positions cache->length() ..
    KvCache* cache = nullptr;
    Logits which = Logits::kLast;
    std::vector<float>* logits = nullptr;  // [1, V] or [n, V]; unused for kNone
  };

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
  // The same for several sequences in one pass (distinct caches, each with at least one
  // token). Any failure leaves every cache at its previous length; a pass stopped by
  // `cancelled` may simply be run again (without the sequence that asked for it): the
  // keys it wrote past the caches' lengths are overwritten.
  absl::Status Forward(absl::Span<const Sequence> batch,
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
  struct Pass;  // one pass in progress (mixtral_model.cc)

  MixtralModel(const ModelConfig& config, ExpertBackend* experts, backend::Device& device);

  // The steps of a pass, in order. CheckBatch validates the sequences and lays out their
  // rows; StartPass lends the expert batch, takes scratch and embeds the tokens; then per
  // layer AttentionStep and MoeStep (or a dense MLP); LogitsStep last.
  absl::Status CheckBatch(absl::Span<const Sequence> batch, Pass& pass) const;
  absl::Status StartPass(Pass& pass) const;
  absl::Status AttentionStep(Pass& pass, int l) const;
  absl::Status MoeStep(Pass& pass, int l, int expert_layer,
                       const std::function<bool()>& cancelled) const;
  absl::Status LogitsStep(Pass& pass) const;
  // Parts of MoeStep: the expert backend's batch for the pass's rows (checked to be
  // memory this model computes on), RMSNorm of layer l into its x, the routing override
  // and observer, and the experts' call with its redo after a lost worker.
  absl::Status LendExpertBatch(Pass& pass) const;
  absl::Status NormForExperts(Pass& pass, int l) const;
  absl::Status ObserveRouting(Pass& pass, int l, int expert_layer) const;
  absl::Status RunExperts(Pass& pass, int l, int expert_layer,
                          const std::function<bool()>& cancelled) const;

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
