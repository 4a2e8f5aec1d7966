#include "coordinator/mixtral_model.h"

#include <algorithm>
#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/backend/cpu/cpu_device.h"
#include "common/logging.h"
#include "common/status.h"
#include "coordinator/model_family.h"

namespace moe::coordinator {

// The arrays of one pass of n rows (all sequences together). Device memory: [n, H]
// hidden states and so on; host memory (pinned): what the host writes or reads.
struct PassBuffers {
  int32_t* tokens = nullptr;      // [n]
  float* x = nullptr;             // [n, H], the residual stream
  float* xn = nullptr;            // [n, H], normalised (a sparse layer norms into the lent batch)
  float* q = nullptr;             // [n, q_dim]
  float* k = nullptr;             // [n, kv_dim], copied into each sequence's cache
  float* v = nullptr;             // [n, kv_dim]
  float* attn = nullptr;          // [n, q_dim]
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

namespace {

constexpr int kMaxLayerRedos = 5;

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
  // And x and out of the expert backend's batch, on this device when it is linked in.
  return dev.used() + 2 * n * config.hidden_size * int64_t(sizeof(float));
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

// One forward pass in progress: what Forward checked and laid out, shared by its steps.
struct MixtralModel::Pass {
  absl::Span<const Sequence> batch;
  std::vector<int64_t> offset;  // [batch.size() + 1]: where each sequence's rows start
  int64_t n = 0;                // rows of the pass
  int64_t rows = 0;             // rows that get logits
  bool direct_logits = false;   // a lone sequence's logits written straight to the caller
  // The expert backend's batch: xn of the sparse layers is normed into its x, the
  // experts write its out. Given back after the scratch lease has waited for the stream.
  std::unique_ptr<ActivationBatch> experts_io;
  std::optional<ScratchPool::Lease> scratch;
  PassBuffers b;
  backend::Stream* stream = nullptr;
  std::optional<Speculator> speculator;
  ForwardStats stats;
};

absl::Status MixtralModel::CheckBatch(absl::Span<const Sequence> batch, Pass& pass) const {
  const ModelConfig& c = config_;
  const bool host_is_device = device_->kind() == backend::DeviceKind::kCpu;
  if (batch.empty()) return absl::InvalidArgumentError("Forward: no sequences");
  pass.batch = batch;
  pass.offset.assign(batch.size() + 1, 0);
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
    if (cache.device().kind() != device_->kind() ||
        (!host_is_device && &cache.device() != device_)) {
      return absl::InvalidArgumentError(absl::StrCat("Forward: the KV cache is on ",
                                                     cache.device().name(),
                                                     " but the model computes on ", device_->name()));
    }
    pass.offset[s + 1] = pass.offset[s] + n;
    pass.rows += seq.which == Logits::kAll ? n : seq.which == Logits::kLast ? 1 : 0;
  }
  pass.n = pass.offset.back();
  // On the CPU the kernels write the logits of a lone sequence into the caller's vector.
  pass.direct_logits = host_is_device && batch.size() == 1;
  return absl::OkStatus();
}

absl::Status MixtralModel::LendExpertBatch(Pass& pass) const {
  MOE_ASSIGN_OR_RETURN(pass.experts_io, experts_->Lend(pass.n));
  const ActivationBatch& io = *pass.experts_io;
  if (io.rows() != pass.n || io.x().size() != size_t(pass.n * config_.hidden_size) ||
      !io.place().ComputableOn(*device_)) {
    return absl::InternalError(absl::StrCat(
        "the expert backend lent ", io.rows(), " rows in ", io.place().name(), " for ", pass.n,
        " rows computed on ", device_->name()));
  }
  return absl::OkStatus();
}

absl::Status MixtralModel::StartPass(Pass& pass) const {
  const ModelConfig& c = config_;
  backend::Device& device = *device_;
  MOE_RETURN_IF_ERROR(device.BindThread());
  MOE_RETURN_IF_ERROR(LendExpertBatch(pass));
  const SpeculationOptions speculation = speculation_;
  PassBuffers& b = pass.b;
  ScratchCarver dev_size(nullptr), host_size(nullptr);
  Carve(c, pass.n, pass.rows, speculation, !pass.direct_logits, dev_size, host_size, b);
  MOE_ASSIGN_OR_RETURN(ScratchPool::Lease lease,
                       scratch_.Acquire(size_t(dev_size.used()), size_t(host_size.used())));
  pass.scratch.emplace(std::move(lease));
  ScratchCarver dev_mem(pass.scratch->device_memory()), host_mem(pass.scratch->host_memory());
  Carve(c, pass.n, pass.rows, speculation, !pass.direct_logits, dev_mem, host_mem, b);
  pass.stream = &pass.scratch->stream();
  MOE_ASSIGN_OR_RETURN(Speculator speculator,
                       Speculator::Create(c, *weights_, *kernels_, device, *experts_, speculation,
                                          pass.n, b.speculation));
  pass.speculator.emplace(std::move(speculator));

  // Token ids were checked: the gather does not range-check.
  int64_t row = 0;
  for (size_t s = 0; s < pass.batch.size(); ++s) {
    const Sequence& seq = pass.batch[s];
    for (int64_t t = 0; t < int64_t(seq.tokens.size()); ++t) {
      b.host_tokens[pass.offset[s] + t] = seq.tokens[t];
      const bool wanted = seq.which == Logits::kAll ||
                          (seq.which == Logits::kLast && t + 1 == int64_t(seq.tokens.size()));
      if (wanted) b.host_logit_rows[row++] = static_cast<int32_t>(pass.offset[s] + t);
    }
  }
  backend::Stream& stream = *pass.stream;
  MOE_RETURN_IF_ERROR(
      device.CopyToDevice(b.tokens, b.host_tokens, pass.n * sizeof(int32_t), stream));
  MOE_RETURN_IF_ERROR(device.CopyToDevice(b.logit_rows, b.host_logit_rows,
                                          pass.rows * sizeof(int32_t), stream));
  return kernels_->GatherWeightRows(weights_->embedding(), b.tokens, pass.n, b.x, stream);
}

absl::Status MixtralModel::AttentionStep(Pass& pass, int l) const {
  // h = x + Attention(RMSNorm(x)): the projections for every row at once, attention per
  // sequence over its own cache (its new keys and values copied in first).
  const ModelConfig& c = config_;
  const int64_t n = pass.n, qd = c.q_dim(), kvd = c.kv_dim();
  const DeviceLayerWeights& lw = weights_->layer(l);
  const backend::RopeParams rope{c.head_dim, c.rope_theta};
  backend::Kernels& kern = *kernels_;
  backend::Stream& stream = *pass.stream;
  PassBuffers& b = pass.b;
  MOE_RETURN_IF_ERROR(kern.RmsNorm(b.x, lw.input_norm, b.xn, n, c.hidden_size,
                                   static_cast<float>(c.rms_norm_eps), stream));
  MOE_RETURN_IF_ERROR(kern.MatMul(lw.q, b.xn, b.q, n, /*accumulate=*/false, stream));
  MOE_RETURN_IF_ERROR(kern.MatMul(lw.k, b.xn, b.k, n, /*accumulate=*/false, stream));
  MOE_RETURN_IF_ERROR(kern.MatMul(lw.v, b.xn, b.v, n, /*accumulate=*/false, stream));
  MOE_RETURN_IF_ERROR(ModelFamilyOps(c, kern).PrepareQkv(lw, b.q, b.k, b.v, n, stream));
  for (size_t s = 0; s < pass.batch.size(); ++s) {
    KvCache& cache = *pass.batch[s].cache;
    const int64_t start = cache.length(), rows_s = pass.offset[s + 1] - pass.offset[s];
    float* q = b.q + pass.offset[s] * qd;
    float* keys = b.k + pass.offset[s] * kvd;
    MOE_RETURN_IF_ERROR(kern.Rope(q, start, rows_s, c.num_attention_heads, rope, stream));
    MOE_RETURN_IF_ERROR(kern.Rope(keys, start, rows_s, c.num_key_value_heads, rope, stream));
    const size_t kv_bytes = size_t(rows_s * kvd) * sizeof(float);
    MOE_RETURN_IF_ERROR(
        device_->CopyOnDevice(cache.keys(l) + start * kvd, keys, kv_bytes, stream));
    MOE_RETURN_IF_ERROR(device_->CopyOnDevice(cache.values(l) + start * kvd,
                                              b.v + pass.offset[s] * kvd, kv_bytes, stream));
    MOE_RETURN_IF_ERROR(kern.Attention(q, cache.keys(l), cache.values(l),
                                       b.attn + pass.offset[s] * qd, start, rows_s,
                                       c.num_attention_heads, c.num_key_value_heads, c.head_dim,
                                       c.sliding_window.value_or(0), stream));
  }
  return kern.MatMul(lw.o, b.attn, b.x, n, /*accumulate=*/true, stream);
}

absl::Status MixtralModel::ObserveRouting(Pass& pass, int l, int expert_layer) const {
  const int64_t k = config_.num_experts_per_tok, e = config_.num_local_experts;
  const absl::Span<int32_t> route_ids(pass.b.host_route_ids, size_t(pass.n * k));
  const absl::Span<float> route_w(pass.b.host_route_w, size_t(pass.n * k));
  for (size_t s = 0; s < pass.batch.size(); ++s) {
    const int64_t start = pass.batch[s].cache->length();
    const int64_t rows_s = pass.offset[s + 1] - pass.offset[s];
    const absl::Span<int32_t> ids = route_ids.subspan(pass.offset[s] * k, rows_s * k);
    const absl::Span<float> gains = route_w.subspan(pass.offset[s] * k, rows_s * k);
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
  pass.speculator->Score(expert_layer, route_ids);
  return absl::OkStatus();
}

absl::Status MixtralModel::RunExperts(Pass& pass, int l, int expert_layer,
                                      const std::function<bool()>& cancelled) const {
  const int64_t k = config_.num_experts_per_tok;
  const absl::Span<const int32_t> ids(pass.b.host_route_ids, size_t(pass.n * k));
  const absl::Span<const float> gains(pass.b.host_route_w, size_t(pass.n * k));
  absl::Status ran =
      experts_->RunExperts(expert_layer, *pass.experts_io, ids, gains, &pass.stats.experts);
  // A lost expert worker may come back (restarted): then redo this layer's experts with
  // the same inputs, so the tokens are those of an undisturbed run; in a fresh batch,
  // since the lost one may still write into the old. Bounded, in case a worker answers
  // health checks but never RunExperts.
  for (int redo = 0; absl::IsUnavailable(ran) && redo < kMaxLayerRedos; ++redo) {
    pass.experts_io.reset();
    MOE_RETURN_IF_ERROR(experts_->AwaitRecovery(cancelled));
    MOE_RETURN_IF_ERROR(LendExpertBatch(pass));
    MOE_RETURN_IF_ERROR(NormForExperts(pass, l));
    MOE_RETURN_IF_ERROR(pass.stream->Synchronize());
    ran = experts_->RunExperts(expert_layer, *pass.experts_io, ids, gains, &pass.stats.experts);
  }
  return ran;
}

absl::Status MixtralModel::NormForExperts(Pass& pass, int l) const {
  return kernels_->RmsNorm(pass.b.x, weights_->layer(l).post_norm, pass.experts_io->x().data(),
                           pass.n, config_.hidden_size, static_cast<float>(config_.rms_norm_eps),
                           *pass.stream);
}

absl::Status MixtralModel::MoeStep(Pass& pass, int l, int expert_layer,
                                   const std::function<bool()>& cancelled) const {
  // x = h + MoE(RMSNorm(h)): route here, compute where the experts live. The norm goes
  // straight into the expert backend's batch; the router and a shared expert read it
  // there too.
  const ModelConfig& c = config_;
  const int64_t n = pass.n, k = c.num_experts_per_tok;
  const DeviceLayerWeights& lw = weights_->layer(l);
  const ModelFamilyOps family(c, *kernels_);
  backend::Stream& stream = *pass.stream;
  PassBuffers& b = pass.b;
  // Guesses are queued before this layer's router so that the prefetches can start as
  // soon as they reach the host, while the router still computes.
  MOE_RETURN_IF_ERROR(pass.speculator->Guess(expert_layer, b.x, stream));
  MOE_RETURN_IF_ERROR(NormForExperts(pass, l));
  const float* xn = pass.experts_io->x().data();
  MOE_RETURN_IF_ERROR(family.Route(lw, xn, n, b.router, b.route_ids, b.route_w, stream));
  MOE_RETURN_IF_ERROR(
      device_->CopyToHost(b.host_route_ids, b.route_ids, n * k * sizeof(int32_t), stream));
  MOE_RETURN_IF_ERROR(device_->CopyToHost(b.host_route_w, b.route_w, n * k * sizeof(float), stream));
  MOE_RETURN_IF_ERROR(family.SharedExpert(lw, xn, n, b.mlp, stream));
  MOE_RETURN_IF_ERROR(pass.speculator->Hint(expert_layer));
  // The experts read ids and weights on the host, and x once the stream is done.
  MOE_RETURN_IF_ERROR(stream.Synchronize());
  MOE_RETURN_IF_ERROR(ObserveRouting(pass, l, expert_layer));
  // One call for every row of the pass: an expert loaded once serves all its rows.
  MOE_RETURN_IF_ERROR(RunExperts(pass, l, expert_layer, cancelled));
  float* out = pass.experts_io->out().data();
  MOE_RETURN_IF_ERROR(family.AddSharedExpert(lw, out, n, b.mlp, stream));
  // RunExperts is synchronous: out is complete before this is queued.
  return kernels_->Add(b.x, out, n * c.hidden_size, stream);
}

absl::Status MixtralModel::LogitsStep(Pass& pass) const {
  // Final norm and LM head for the rows that get logits, gathered into xn.
  const ModelConfig& c = config_;
  const int64_t h = c.hidden_size, v = c.vocab_size, rows = pass.rows;
  backend::Kernels& kern = *kernels_;
  backend::Stream& stream = *pass.stream;
  PassBuffers& b = pass.b;
  if (rows == 0) return absl::OkStatus();
  MOE_RETURN_IF_ERROR(kern.GatherRows(b.x, b.logit_rows, rows, h, b.xn, stream));
  MOE_RETURN_IF_ERROR(kern.RmsNorm(b.xn, weights_->final_norm(), b.xn, rows, h,
                                   static_cast<float>(c.rms_norm_eps), stream));
  if (pass.direct_logits) {
    pass.batch[0].logits->resize(rows * v);
    return kern.MatMul(weights_->lm_head(), b.xn, pass.batch[0].logits->data(), rows,
                       /*accumulate=*/false, stream);
  }
  MOE_RETURN_IF_ERROR(
      kern.MatMul(weights_->lm_head(), b.xn, b.logits, rows, /*accumulate=*/false, stream));
  int64_t first = 0;
  for (const Sequence& seq : pass.batch) {
    const int64_t count = seq.which == Logits::kAll    ? int64_t(seq.tokens.size())
                          : seq.which == Logits::kLast ? 1
                                                       : 0;
    if (count == 0) continue;
    seq.logits->resize(count * v);
    MOE_RETURN_IF_ERROR(device_->CopyToHost(seq.logits->data(), b.logits + first * v,
                                            count * v * sizeof(float), stream));
    first += count;
  }
  return absl::OkStatus();
}

absl::Status MixtralModel::Forward(absl::Span<const Sequence> batch,
                                   const std::function<bool()>& cancelled,
                                   ForwardStats* stats) const {
  Pass pass;
  MOE_RETURN_IF_ERROR(CheckBatch(batch, pass));
  MOE_RETURN_IF_ERROR(StartPass(pass));
  const ModelConfig& c = config_;
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    if (cancelled && cancelled()) return absl::CancelledError("generation cancelled");
    MOE_RETURN_IF_ERROR(AttentionStep(pass, l));
    const int expert_layer = c.ExpertLayer(l);
    if (expert_layer >= 0) {
      MOE_RETURN_IF_ERROR(MoeStep(pass, l, expert_layer, cancelled));
      continue;
    }
    // A dense layer (qwen's decoder_sparse_step, mlp_only_layers): x = h + MLP(RMSNorm(h)),
    // all here; the expert worker and the speculator number only the sparse layers.
    const DeviceLayerWeights& lw = weights_->layer(l);
    MOE_RETURN_IF_ERROR(kernels_->RmsNorm(pass.b.x, lw.post_norm, pass.b.xn, pass.n,
                                          c.hidden_size, static_cast<float>(c.rms_norm_eps),
                                          *pass.stream));
    MOE_RETURN_IF_ERROR(ModelFamilyOps(c, *kernels_)
                            .DenseMlp(lw, pass.b.xn, pass.b.x, pass.n, pass.b.mlp, *pass.stream));
  }
  MOE_RETURN_IF_ERROR(LogitsStep(pass));
  MOE_RETURN_IF_ERROR(pass.stream->Synchronize());

  for (size_t s = 0; s < batch.size(); ++s) {
    KvCache& cache = *batch[s].cache;
    cache.set_length(cache.length() + pass.offset[s + 1] - pass.offset[s]);
  }
  pass.stats.speculation = pass.speculator->stats();
  if (stats != nullptr) *stats += pass.stats;
  std::lock_guard<std::mutex> lock(totals_mu_);
  totals_ += pass.stats;
  return absl::OkStatus();
}

}  // namespace moe::coordinator
