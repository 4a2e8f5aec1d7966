#include "coordinator/mixtral_model.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/backend/cpu/cpu_device.h"
#include "common/logging.h"
#include "common/status.h"
#include "coordinator/model_family.h"

namespace moe::coordinator {
namespace {

constexpr int kMaxLayerRedos = 5;

// The arrays of one pass of n rows (all sequences together). Device memory: [n, H]
// hidden states and so on; host memory (pinned): what the host writes or reads.
struct PassBuffers {
  int32_t* tokens = nullptr;      // [n]
  float* x = nullptr;             // [n, H], the residual stream
  float* xn = nullptr;            // [n, H], normalised
  float* q = nullptr;             // [n, q_dim]
  float* k = nullptr;             // [n, kv_dim], copied into each sequence's cache
  float* v = nullptr;             // [n, kv_dim]
  float* attn = nullptr;          // [n, q_dim]
  float* moe_out = nullptr;       // [n, H]
  float* router = nullptr;        // [n, E]
  int32_t* route_ids = nullptr;   // [n, k]
  float* route_w = nullptr;       // [n, k]
  int32_t* logit_rows = nullptr;  // [rows]: the rows that get logits
  float* logits = nullptr;        // [rows, V]; null when written straight to the caller
  Speculator::Buffers speculation;
  MlpScratch mlp;  // shared experts and dense layers

  int32_t* host_tokens = nullptr;      // [n]
  int32_t* host_route_ids = nullptr;   // [n, k]
  float* host_route_w = nullptr;       // [n, k]
  int32_t* host_logit_rows = nullptr;  // [rows]
};

void Carve(const ModelConfig& c, int64_t n, int64_t rows, const SpeculationOptions& speculation,
           bool device_logits, ScratchCarver& dev, ScratchCarver& host, PassBuffers& b) {
  const int64_t h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(), e = c.num_local_experts;
  const int64_t k = c.num_experts_per_tok;
  b.tokens = dev.Take<int32_t>(n);
  b.x = dev.Take<float>(n * h);
  b.xn = dev.Take<float>(n * h);
  b.q = dev.Take<float>(n * qd);
  b.k = dev.Take<float>(n * kvd);
  b.v = dev.Take<float>(n * kvd);
  b.attn = dev.Take<float>(n * qd);
  b.moe_out = dev.Take<float>(n * h);
  b.router = dev.Take<float>(n * e);
  b.route_ids = dev.Take<int32_t>(n * k);
  b.route_w = dev.Take<float>(n * k);
  b.logit_rows = dev.Take<int32_t>(rows);
  b.speculation = Speculator::Carve(c, speculation, n, dev, host);
  b.mlp = ModelFamilyOps::Carve(c, n, dev);
  if (device_logits) b.logits = dev.Take<float>(rows * c.vocab_size);
  b.host_tokens = host.Take<int32_t>(n);
  b.host_route_ids = host.Take<int32_t>(n * k);
  b.host_route_w = host.Take<float>(n * k);
  b.host_logit_rows = host.Take<int32_t>(rows);
}

}  // namespace

MixtralModel::MixtralModel(const ModelConfig& config, ExpertBackend* experts,
                           backend::Device& device)
    : config_(config),
      experts_(experts),
      device_(&device),
      scratch_(device),
      max_context_tokens_(config.max_position_embeddings) {}

absl::StatusOr<std::unique_ptr<MixtralModel>> MixtralModel::Create(const ModelConfig& config,
                                                                   DenseWeights weights,
                                                                   ExpertBackend* experts) {
  auto device = std::make_unique<cpu::CpuDevice>();
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<MixtralModel> model,
                       Create(config, std::move(weights), experts, *device));
  model->owned_device_ = std::move(device);  // the same object: references stay valid
  return model;
}

absl::StatusOr<std::unique_ptr<MixtralModel>> MixtralModel::Create(const ModelConfig& config,
                                                                   DenseWeights weights,
                                                                   ExpertBackend* experts,
                                                                   backend::Device& device) {
  if (experts == nullptr) return absl::InvalidArgumentError("MixtralModel: no expert backend");
  if (weights.layers.size() != size_t(config.num_hidden_layers)) {
    return absl::InvalidArgumentError("MixtralModel: weights do not match the config's layers");
  }
  MOE_RETURN_IF_ERROR(Annotate(ModelFamilyOps::CheckWeights(config, weights), "MixtralModel"));
  std::unique_ptr<MixtralModel> model(new MixtralModel(config, experts, device));
  MOE_RETURN_IF_ERROR(device.BindThread());
  MOE_ASSIGN_OR_RETURN(model->kernels_, backend::CreateKernels(device));
  MOE_ASSIGN_OR_RETURN(model->weights_, DeviceWeights::Create(std::move(weights), device));
  return model;
}

int64_t MixtralModel::ScratchBytes(const ModelConfig& config, int64_t n, int64_t logits_rows,
                                   int lookahead) {
  ScratchCarver dev(nullptr), host(nullptr);
  PassBuffers b;
  // E experts per guess: the most a speculation setting can ask for.
  Carve(config, n, logits_rows, {lookahead, int(config.num_local_experts)},
        /*device_logits=*/true, dev, host, b);
  return dev.used();
}

absl::StatusOr<std::unique_ptr<KvCache>> MixtralModel::NewCache(int64_t capacity) const {
  if (capacity > max_context_tokens_) {
    return absl::InvalidArgumentError(absl::StrCat("a KV cache of ", capacity,
                                                   " positions exceeds the context limit of ",
                                                   max_context_tokens_, " tokens"));
  }
  return KvCache::Create(config_, capacity, *device_);
}

void MixtralModel::set_max_context_tokens(int64_t tokens) {
  MOE_CHECK(tokens >= 0 && tokens <= config_.max_position_embeddings)
      << "max context tokens " << tokens << " of " << config_.max_position_embeddings;
  max_context_tokens_ = tokens == 0 ? config_.max_position_embeddings : tokens;
}

void MixtralModel::set_speculation(const SpeculationOptions& options) {
  MOE_CHECK(options.lookahead >= 0 && options.lookahead <= kMaxLookahead && options.experts >= 1)
      << "speculation lookahead " << options.lookahead << ", experts " << options.experts;
  speculation_ = options;
}

ForwardStats MixtralModel::totals() const {
  std::lock_guard<std::mutex> lock(totals_mu_);
  return totals_;
}

absl::Status MixtralModel::Forward(absl::Span<const int> tokens, KvCache& cache, Logits which,
                                   std::vector<float>* logits,
                                   const std::function<bool()>& cancelled,
                                   ForwardStats* stats) const {
  const Sequence one{tokens, &cache, which, logits};
  return Forward(absl::MakeConstSpan(&one, 1), cancelled, stats);
}

absl::Status MixtralModel::Forward(absl::Span<const Sequence> batch,
                                   const std::function<bool()>& cancelled,
                                   ForwardStats* stats) const {
  const ModelConfig& c = config_;
  backend::Device& device = *device_;
  const bool host_is_device = device.kind() == backend::DeviceKind::kCpu;
  if (batch.empty()) return absl::InvalidArgumentError("Forward: no sequences");
  // Where each sequence's rows start in the pass, and the rows that get logits.
  std::vector<int64_t> offset(batch.size() + 1, 0);
  int64_t rows = 0;
  for (size_t s = 0; s < batch.size(); ++s) {
    const Sequence& seq = batch[s];
    const int64_t n = static_cast<int64_t>(seq.tokens.size());
    if (n == 0) return absl::InvalidArgumentError("Forward: no tokens");
    if (seq.cache == nullptr || (seq.which != Logits::kNone && seq.logits == nullptr)) {
      return absl::InvalidArgumentError("Forward: a sequence without a cache or logits");
    }
    for (size_t o = 0; o < s; ++o) {
      if (batch[o].cache == seq.cache) {
        return absl::InvalidArgumentError("Forward: one KV cache twice in a pass");
      }
    }
    const KvCache& cache = *seq.cache;
    const int64_t start = cache.length();
    if (start + n > cache.capacity() || start + n > c.max_position_embeddings) {
      return absl::OutOfRangeError(absl::StrCat(
          "Forward: positions up to ", start + n, " exceed the context of ",
          std::min<int64_t>(cache.capacity(), c.max_position_embeddings), " tokens"));
    }
    for (int64_t t = 0; t < n; ++t) {
      if (seq.tokens[t] < 0 || seq.tokens[t] >= c.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat(
            "token id ", seq.tokens[t], " at index ", t, " is outside the vocabulary [0, ",
            c.vocab_size, ")"));
      }
    }
    if (cache.device().kind() != device.kind() ||
        (!host_is_device && &cache.device() != &device)) {
      return absl::InvalidArgumentError(absl::StrCat("Forward: the KV cache is on ",
                                                     cache.device().name(),
                                                     " but the model computes on ", device.name()));
    }
    offset[s + 1] = offset[s] + n;
    rows += seq.which == Logits::kAll ? n : seq.which == Logits::kLast ? 1 : 0;
  }
  const int64_t n = offset.back();

  const int64_t h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim();
  const int64_t e = c.num_local_experts, k = c.num_experts_per_tok;
  const ModelFamilyOps family(c, *kernels_);
  const float eps = static_cast<float>(c.rms_norm_eps);
  const int64_t window = c.sliding_window.value_or(0);
  const backend::RopeParams rope{c.head_dim, c.rope_theta};
  const SpeculationOptions speculation = speculation_;

  // One stream and scratch set for this pass; on the CPU the kernels write the logits
  // of a lone sequence straight into the caller's vector.
  const bool direct_logits = host_is_device && batch.size() == 1;
  MOE_RETURN_IF_ERROR(device.BindThread());
  PassBuffers b;
  ScratchCarver dev_size(nullptr), host_size(nullptr);
  Carve(c, n, rows, speculation, !direct_logits, dev_size, host_size, b);
  MOE_ASSIGN_OR_RETURN(ScratchPool::Lease lease,
                       scratch_.Acquire(size_t(dev_size.used()), size_t(host_size.used())));
  ScratchCarver dev_mem(lease.device_memory()), host_mem(lease.host_memory());
  Carve(c, n, rows, speculation, !direct_logits, dev_mem, host_mem, b);
  backend::Stream& stream = lease.stream();
  backend::Kernels& kern = *kernels_;
  const DeviceWeights& weights = *weights_;
  MOE_ASSIGN_OR_RETURN(Speculator speculator,
                       Speculator::Create(c, weights, kern, device, *experts_, speculation, n,
                                          b.speculation));

  // Token ids were checked above: the gather does not range-check.
  int64_t row = 0;
  for (size_t s = 0; s < batch.size(); ++s) {
    const Sequence& seq = batch[s];
    for (int64_t t = 0; t < int64_t(seq.tokens.size()); ++t) {
      b.host_tokens[offset[s] + t] = seq.tokens[t];
      const bool wanted = seq.which == Logits::kAll ||
                          (seq.which == Logits::kLast && t + 1 == int64_t(seq.tokens.size()));
      if (wanted) b.host_logit_rows[row++] = static_cast<int32_t>(offset[s] + t);
    }
  }
  MOE_RETURN_IF_ERROR(device.CopyToDevice(b.tokens, b.host_tokens, n * sizeof(int32_t), stream));
  MOE_RETURN_IF_ERROR(device.CopyToDevice(b.logit_rows, b.host_logit_rows,
                                          rows * sizeof(int32_t), stream));
  MOE_RETURN_IF_ERROR(kern.GatherRows(weights.embedding(), b.tokens, n, h, b.x, stream));

  ForwardStats pass;
  const absl::Span<int32_t> route_ids(b.host_route_ids, size_t(n * k));
  const absl::Span<float> route_w(b.host_route_w, size_t(n * k));

  for (int l = 0; l < c.num_hidden_layers; ++l) {
    if (cancelled && cancelled()) return absl::CancelledError("generation cancelled");
    const DeviceLayerWeights& lw = weights.layer(l);

    // h = x + Attention(RMSNorm(x)): the projections for every row at once, attention
    // per sequence over its own cache (its new keys and values copied in first).
    MOE_RETURN_IF_ERROR(kern.RmsNorm(b.x, lw.input_norm, b.xn, n, h, eps, stream));
    MOE_RETURN_IF_ERROR(kern.MatMul(lw.q, b.xn, b.q, n, /*accumulate=*/false, stream));
    MOE_RETURN_IF_ERROR(kern.MatMul(lw.k, b.xn, b.k, n, /*accumulate=*/false, stream));
    MOE_RETURN_IF_ERROR(kern.MatMul(lw.v, b.xn, b.v, n, /*accumulate=*/false, stream));
    MOE_RETURN_IF_ERROR(family.PrepareQkv(lw, b.q, b.k, b.v, n, stream));
    for (size_t s = 0; s < batch.size(); ++s) {
      KvCache& cache = *batch[s].cache;
      const int64_t start = cache.length(), rows_s = offset[s + 1] - offset[s];
      float* q = b.q + offset[s] * qd;
      float* keys = b.k + offset[s] * kvd;
      MOE_RETURN_IF_ERROR(kern.Rope(q, start, rows_s, c.num_attention_heads, rope, stream));
      MOE_RETURN_IF_ERROR(kern.Rope(keys, start, rows_s, c.num_key_value_heads, rope, stream));
      const size_t kv_bytes = size_t(rows_s * kvd) * sizeof(float);
      MOE_RETURN_IF_ERROR(
          device.CopyOnDevice(cache.keys(l) + start * kvd, keys, kv_bytes, stream));
      MOE_RETURN_IF_ERROR(device.CopyOnDevice(cache.values(l) + start * kvd,
                                              b.v + offset[s] * kvd, kv_bytes, stream));
      MOE_RETURN_IF_ERROR(kern.Attention(q, cache.keys(l), cache.values(l),
                                         b.attn + offset[s] * qd, start, rows_s,
                                         c.num_attention_heads, c.num_key_value_heads,
                                         c.head_dim, window, stream));
    }
    MOE_RETURN_IF_ERROR(kern.MatMul(lw.o, b.attn, b.x, n, /*accumulate=*/true, stream));

    // A dense layer (qwen's decoder_sparse_step, mlp_only_layers): x = h + MLP(RMSNorm(h)),
    // all here; the expert worker and the speculator number only the sparse layers.
    const int expert_layer = c.ExpertLayer(l);
    if (expert_layer < 0) {
      MOE_RETURN_IF_ERROR(kern.RmsNorm(b.x, lw.post_norm, b.xn, n, h, eps, stream));
      MOE_RETURN_IF_ERROR(family.DenseMlp(lw, b.xn, b.x, n, b.mlp, stream));
      continue;
    }

    // Guesses are queued before this layer's router so that the prefetches can start
    // as soon as they reach the host, while the router still computes.
    MOE_RETURN_IF_ERROR(speculator.Guess(expert_layer, b.x, stream));

    // x = h + MoE(RMSNorm(h)): route here, compute where the experts live.
    MOE_RETURN_IF_ERROR(kern.RmsNorm(b.x, lw.post_norm, b.xn, n, h, eps, stream));
    MOE_RETURN_IF_ERROR(family.Route(lw, b.xn, n, b.router, b.route_ids, b.route_w, stream));
    MOE_RETURN_IF_ERROR(
        device.CopyToHost(b.host_route_ids, b.route_ids, n * k * sizeof(int32_t), stream));
    MOE_RETURN_IF_ERROR(
        device.CopyToHost(b.host_route_w, b.route_w, n * k * sizeof(float), stream));
    MOE_RETURN_IF_ERROR(family.SharedExpert(lw, b.xn, n, b.mlp, stream));
    MOE_RETURN_IF_ERROR(speculator.Hint(expert_layer));
    // The worker reads ids and weights on the host, and x (xn) once the stream is done.
    MOE_RETURN_IF_ERROR(stream.Synchronize());
    for (size_t s = 0; s < batch.size(); ++s) {
      const int64_t start = batch[s].cache->length(), rows_s = offset[s + 1] - offset[s];
      const absl::Span<int32_t> ids = route_ids.subspan(offset[s] * k, rows_s * k);
      const absl::Span<float> gains = route_w.subspan(offset[s] * k, rows_s * k);
      if (routing_override_) {
        MOE_RETURN_IF_ERROR(routing_override_(expert_layer, start, rows_s, ids, gains));
        for (int64_t i = 0; i < rows_s * k; ++i) {
          if (ids[i] < 0 || ids[i] >= e) {
            return absl::InvalidArgumentError(absl::StrCat(
                "routing override: layer ", l, ", token ", i / k, ": expert id ", ids[i],
                " is outside [0, ", e, ")"));
          }
        }
      }
      if (observer_) observer_(LayerRouting{expert_layer, start, ids, gains});
    }
    speculator.Score(expert_layer, route_ids);

    // One call for every row of the pass: an expert loaded once serves all its rows.
    const absl::Span<const float> xn(b.xn, size_t(n * h));
    const absl::Span<float> moe_out(b.moe_out, size_t(n * h));
    absl::Status ran =
        experts_->RunExperts(expert_layer, xn, n, route_ids, route_w, moe_out, &pass.experts);
    // A lost expert worker may come back (restarted): then redo this layer's experts with
    // the same inputs, so the tokens are those of an undisturbed run. Bounded, in case a
    // worker answers health checks but never RunExperts.
    for (int redo = 0; absl::IsUnavailable(ran) && redo < kMaxLayerRedos; ++redo) {
      MOE_RETURN_IF_ERROR(experts_->AwaitRecovery(cancelled));
      ran = experts_->RunExperts(expert_layer, xn, n, route_ids, route_w, moe_out, &pass.experts);
    }
    MOE_RETURN_IF_ERROR(ran);
    MOE_RETURN_IF_ERROR(family.AddSharedExpert(lw, b.moe_out, n, b.mlp, stream));
    // RunExperts is synchronous: out is complete before this is queued.
    MOE_RETURN_IF_ERROR(kern.Add(b.x, b.moe_out, n * h, stream));
  }

  // Final norm and LM head for the rows that get logits, gathered into xn.
  if (rows > 0) {
    MOE_RETURN_IF_ERROR(kern.GatherRows(b.x, b.logit_rows, rows, h, b.xn, stream));
    MOE_RETURN_IF_ERROR(kern.RmsNorm(b.xn, weights.final_norm(), b.xn, rows, h, eps, stream));
    const int64_t v = c.vocab_size;
    if (direct_logits) {
      batch[0].logits->resize(rows * v);
      MOE_RETURN_IF_ERROR(kern.MatMul(weights.lm_head(), b.xn, batch[0].logits->data(), rows,
                                      /*accumulate=*/false, stream));
    } else {
      MOE_RETURN_IF_ERROR(
          kern.MatMul(weights.lm_head(), b.xn, b.logits, rows, /*accumulate=*/false, stream));
      int64_t first = 0;
      for (const Sequence& seq : batch) {
        const int64_t count = seq.which == Logits::kAll    ? int64_t(seq.tokens.size())
                              : seq.which == Logits::kLast ? 1
                                                           : 0;
        if (count == 0) continue;
        seq.logits->resize(count * v);
        MOE_RETURN_IF_ERROR(device.CopyToHost(seq.logits->data(), b.logits + first * v,
                                              count * v * sizeof(float), stream));
        first += count;
      }
    }
  }
  MOE_RETURN_IF_ERROR(stream.Synchronize());

  for (size_t s = 0; s < batch.size(); ++s) {
    KvCache& cache = *batch[s].cache;
    cache.set_length(cache.length() + offset[s + 1] - offset[s]);
  }
  pass.speculation = speculator.stats();
  if (stats != nullptr) *stats += pass;
  {
    std::lock_guard<std::mutex> lock(totals_mu_);
    totals_ += pass;
  }
  return absl::OkStatus();
}

}  // namespace moe::coordinator
