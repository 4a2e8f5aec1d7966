#include "coordinator/mixtral_model.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/backend/cpu/cpu_device.h"
#include "common/logging.h"
#include "common/status.h"

namespace moe::coordinator {
namespace {

constexpr int kMaxLayerRedos = 5;
constexpr int64_t kAlignment = 256;  // of every scratch array, as Device::Allocate's

// Carves one allocation into aligned arrays; over a null base it only adds up sizes.
class Carver {
 public:
  explicit Carver(void* base) : base_(static_cast<char*>(base)) {}
  template <typename T>
  T* Take(int64_t count) {
    T* p = base_ != nullptr ? reinterpret_cast<T*>(base_ + used_) : nullptr;
    used_ += (count * int64_t(sizeof(T)) + kAlignment - 1) / kAlignment * kAlignment;
    return p;
  }
  int64_t used() const { return used_; }

 private:
  char* base_;
  int64_t used_ = 0;
};

// The arrays of one pass of n tokens. Device memory: [n, H] hidden states and so on;
// host memory (pinned): what the host reads or sends.
struct PassBuffers {
  int32_t* tokens = nullptr;    // [n]
  float* x = nullptr;           // [n, H], the residual stream
  float* xn = nullptr;          // [n, H], normalised
  float* q = nullptr;           // [n, q_dim]
  float* attn = nullptr;        // [n, q_dim]
  float* moe_out = nullptr;     // [n, H]
  float* router = nullptr;      // [n, E]
  int32_t* route_ids = nullptr;  // [n, k]
  float* route_w = nullptr;     // [n, k]
  float* spec_xn = nullptr;     // [n, H]
  float* spec_logits = nullptr;  // [n, E]
  int32_t* spec_ids = nullptr;  // [lookahead, n, m]
  float* spec_w = nullptr;      // [n, m]
  float* logits = nullptr;      // [rows, V]; null when written straight to the host

  int32_t* host_tokens = nullptr;     // [n]
  int32_t* host_route_ids = nullptr;  // [n, k]
  float* host_route_w = nullptr;      // [n, k]
  int32_t* host_spec_ids = nullptr;   // [lookahead, n, m]
};

void Carve(const ModelConfig& c, int64_t n, int64_t rows, int lookahead, int64_t m,
           bool device_logits, Carver& dev, Carver& host, PassBuffers& b) {
  const int64_t h = c.hidden_size, qd = c.q_dim(), e = c.num_local_experts;
  const int64_t k = c.num_experts_per_tok;
  b.tokens = dev.Take<int32_t>(n);
  b.x = dev.Take<float>(n * h);
  b.xn = dev.Take<float>(n * h);
  b.q = dev.Take<float>(n * qd);
  b.attn = dev.Take<float>(n * qd);
  b.moe_out = dev.Take<float>(n * h);
  b.router = dev.Take<float>(n * e);
  b.route_ids = dev.Take<int32_t>(n * k);
  b.route_w = dev.Take<float>(n * k);
  if (lookahead > 0) {
    b.spec_xn = dev.Take<float>(n * h);
    b.spec_logits = dev.Take<float>(n * e);
    b.spec_ids = dev.Take<int32_t>(lookahead * n * m);
    b.spec_w = dev.Take<float>(n * m);
  }
  if (device_logits) b.logits = dev.Take<float>(rows * c.vocab_size);
  b.host_tokens = host.Take<int32_t>(n);
  b.host_route_ids = host.Take<int32_t>(n * k);
  b.host_route_w = host.Take<float>(n * k);
  if (lookahead > 0) b.host_spec_ids = host.Take<int32_t>(lookahead * n * m);
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
  std::unique_ptr<MixtralModel> model(new MixtralModel(config, experts, device));
  MOE_RETURN_IF_ERROR(device.BindThread());
  MOE_ASSIGN_OR_RETURN(model->kernels_, backend::CreateKernels(device));
  MOE_ASSIGN_OR_RETURN(model->weights_, DeviceWeights::Create(std::move(weights), device));
  return model;
}

int64_t MixtralModel::ScratchBytes(const ModelConfig& config, int64_t n, int64_t logits_rows,
                                   int lookahead) {
  Carver dev(nullptr), host(nullptr);
  PassBuffers b;
  // m <= E: the most a speculation setting can ask for.
  Carve(config, n, logits_rows, lookahead, config.num_local_experts, /*device_logits=*/true, dev,
        host, b);
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

SpeculationStats& SpeculationStats::operator+=(const SpeculationStats& o) {
  hinted += o.hinted;
  nearest += o.nearest;
  for (int d = 0; d < kMaxLookahead; ++d) by_distance[d] += o.by_distance[d];
  return *this;
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
  const ModelConfig& c = config_;
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t start = cache.length();
  if (n == 0) return absl::InvalidArgumentError("Forward: no tokens");
  if (start + n > cache.capacity() || start + n > c.max_position_embeddings) {
    return absl::OutOfRangeError(absl::StrCat(
        "Forward: positions up to ", start + n, " exceed the context of ",
        std::min<int64_t>(cache.capacity(), c.max_position_embeddings), " tokens"));
  }
  for (int64_t t = 0; t < n; ++t) {
    if (tokens[t] < 0 || tokens[t] >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token id ", tokens[t], " at index ", t, " is outside the vocabulary [0, ",
          c.vocab_size, ")"));
    }
  }
  backend::Device& device = *device_;
  const bool host_is_device = device.kind() == backend::DeviceKind::kCpu;
  if (cache.device().kind() != device.kind() || (!host_is_device && &cache.device() != &device)) {
    return absl::InvalidArgumentError(absl::StrCat("Forward: the KV cache is on ",
                                                   cache.device().name(),
                                                   " but the model computes on ", device.name()));
  }

  const int64_t h = c.hidden_size, kvd = c.kv_dim();
  const int64_t e = c.num_local_experts, k = c.num_experts_per_tok;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const int64_t window = c.sliding_window.value_or(0);
  const backend::RopeParams rope{c.head_dim, c.rope_theta};
  const int64_t first = which == Logits::kAll ? 0 : n - 1;
  const int64_t rows = n - first;

  const SpeculationOptions speculation = speculation_;
  const int lookahead = speculation.lookahead;
  const int m = static_cast<int>(std::min<int64_t>(speculation.experts, e));

  // One stream and scratch set for this pass; on the CPU the kernels write the logits
  // straight into the caller's vector.
  MOE_RETURN_IF_ERROR(device.BindThread());
  PassBuffers b;
  Carver dev_size(nullptr), host_size(nullptr);
  Carve(c, n, rows, lookahead, m, !host_is_device, dev_size, host_size, b);
  MOE_ASSIGN_OR_RETURN(ScratchPool::Lease lease,
                       scratch_.Acquire(size_t(dev_size.used()), size_t(host_size.used())));
  Carver dev_mem(lease.device_memory()), host_mem(lease.host_memory());
  Carve(c, n, rows, lookahead, m, !host_is_device, dev_mem, host_mem, b);
  backend::Stream& stream = lease.stream();
  backend::Kernels& kern = *kernels_;
  const DeviceWeights& weights = *weights_;
  std::unique_ptr<backend::Event> guessed;  // behind the speculation's copies to the host
  if (lookahead > 0) {
    MOE_ASSIGN_OR_RETURN(guessed, device.CreateEvent());
  }

  // Token ids were checked above: the gather does not range-check.
  for (int64_t t = 0; t < n; ++t) b.host_tokens[t] = tokens[t];
  MOE_RETURN_IF_ERROR(device.CopyToDevice(b.tokens, b.host_tokens, n * sizeof(int32_t), stream));
  MOE_RETURN_IF_ERROR(kern.GatherRows(weights.embedding(), b.tokens, n, h, b.x, stream));

  // guesses[d - 1][layer] = the expert ids guessed d layers ahead for each token, [n, m];
  // empty: no guess.
  std::vector<std::vector<std::vector<int32_t>>> guesses(
      lookahead, std::vector<std::vector<int32_t>>(c.num_hidden_layers));
  ForwardStats pass;
  const absl::Span<int32_t> route_ids(b.host_route_ids, size_t(n * k));
  const absl::Span<float> route_w(b.host_route_w, size_t(n * k));

  for (int l = 0; l < c.num_hidden_layers; ++l) {
    if (cancelled && cancelled()) return absl::CancelledError("generation cancelled");
    const DeviceLayerWeights& lw = weights.layer(l);
    float* keys = cache.keys(l) + start * kvd;
    float* values = cache.values(l) + start * kvd;

    // h = x + Attention(RMSNorm(x)); k and v go straight into the cache rows.
    MOE_RETURN_IF_ERROR(kern.RmsNorm(b.x, lw.input_norm, b.xn, n, h, eps, stream));
    MOE_RETURN_IF_ERROR(kern.MatMul(lw.q, b.xn, b.q, n, /*accumulate=*/false, stream));
    MOE_RETURN_IF_ERROR(kern.MatMul(lw.k, b.xn, keys, n, /*accumulate=*/false, stream));
    MOE_RETURN_IF_ERROR(kern.MatMul(lw.v, b.xn, values, n, /*accumulate=*/false, stream));
    MOE_RETURN_IF_ERROR(kern.Rope(b.q, start, n, c.num_attention_heads, rope, stream));
    MOE_RETURN_IF_ERROR(kern.Rope(keys, start, n, c.num_key_value_heads, rope, stream));
    MOE_RETURN_IF_ERROR(kern.Attention(b.q, cache.keys(l), cache.values(l), b.attn, start, n,
                                       c.num_attention_heads, c.num_key_value_heads, c.head_dim,
                                       window, stream));
    MOE_RETURN_IF_ERROR(kern.MatMul(lw.o, b.attn, b.x, n, /*accumulate=*/true, stream));

    // Guess the next layers' experts from h (each through its own post-attention norm).
    // Queued before this layer's router so that the prefetches can start as soon as the
    // guesses reach the host, while the router still computes.
    int guessed_layers = 0;
    for (int j = 1; j <= lookahead && l + j < c.num_hidden_layers; ++j, ++guessed_layers) {
      const DeviceLayerWeights& next = weights.layer(l + j);
      int32_t* ids = b.spec_ids + (j - 1) * n * m;
      MOE_RETURN_IF_ERROR(kern.RmsNorm(b.x, next.post_norm, b.spec_xn, n, h, eps, stream));
      MOE_RETURN_IF_ERROR(
          kern.MatMul(next.gate, b.spec_xn, b.spec_logits, n, /*accumulate=*/false, stream));
      MOE_RETURN_IF_ERROR(kern.TopKRouting(b.spec_logits, n, e, m, ids, b.spec_w, stream));
      MOE_RETURN_IF_ERROR(device.CopyToHost(b.host_spec_ids + (j - 1) * n * m, ids,
                                            n * m * sizeof(int32_t), stream));
    }
    if (guessed_layers > 0) MOE_RETURN_IF_ERROR(guessed->Record(stream));

    // x = h + MoE(RMSNorm(h)): route here, compute where the experts live.
    MOE_RETURN_IF_ERROR(kern.RmsNorm(b.x, lw.post_norm, b.xn, n, h, eps, stream));
    MOE_RETURN_IF_ERROR(kern.MatMul(lw.gate, b.xn, b.router, n, /*accumulate=*/false, stream));
    MOE_RETURN_IF_ERROR(kern.TopKRouting(b.router, n, e, k, b.route_ids, b.route_w, stream));
    MOE_RETURN_IF_ERROR(
        device.CopyToHost(b.host_route_ids, b.route_ids, n * k * sizeof(int32_t), stream));
    MOE_RETURN_IF_ERROR(
        device.CopyToHost(b.host_route_w, b.route_w, n * k * sizeof(float), stream));

    // Start loading the guesses, nearest first (it is needed soonest); a round for a
    // layer supersedes the older, farther guess.
    if (guessed_layers > 0) MOE_RETURN_IF_ERROR(guessed->Synchronize());
    for (int j = 1; j <= guessed_layers; ++j) {
      const int32_t* ids = b.host_spec_ids + (j - 1) * n * m;
      std::vector<int32_t>& guess = guesses[j - 1][l + j];
      guess.assign(ids, ids + n * m);
      std::vector<int32_t> unique;
      for (int32_t id : guess) {
        if (std::find(unique.begin(), unique.end(), id) == unique.end()) unique.push_back(id);
      }
      experts_->Prefetch(l + j, unique);
      pass.speculation.hinted += guess.size();
    }
    // The worker reads ids and weights on the host, and x (xn) once the stream is done.
    MOE_RETURN_IF_ERROR(stream.Synchronize());
    if (routing_override_) {
      MOE_RETURN_IF_ERROR(routing_override_(l, start, n, route_ids, route_w));
      for (int64_t i = 0; i < n * k; ++i) {
        if (route_ids[i] < 0 || route_ids[i] >= e) {
          return absl::InvalidArgumentError(absl::StrCat(
              "routing override: layer ", l, ", token ", i / k, ": expert id ", route_ids[i],
              " is outside [0, ", e, ")"));
        }
      }
    }
    if (observer_) observer_(LayerRouting{l, start, route_ids, route_w});
    // Score every guess made for this layer, by distance; the nearest one is the round
    // the worker acts on last.
    bool nearest_scored = false;
    for (int d = 1; d <= lookahead; ++d) {
      const std::vector<int32_t>& guess = guesses[d - 1][l];
      if (guess.empty()) continue;
      GuessScore score;
      for (int64_t t = 0; t < n; ++t) {
        const int32_t* g = &guess[t * m];
        for (int64_t a = 0; a < k; ++a) score.hits += std::find(g, g + m, route_ids[t * k + a]) != g + m;
      }
      score.needed = n * k;
      score.scored = guess.size();
      pass.speculation.by_distance[d - 1] += score;
      if (!nearest_scored) pass.speculation.nearest += score;
      nearest_scored = true;
    }
    const absl::Span<const float> xn(b.xn, size_t(n * h));
    const absl::Span<float> moe_out(b.moe_out, size_t(n * h));
    absl::Status ran = experts_->RunExperts(l, xn, n, route_ids, route_w, moe_out, &pass.experts);
    // A lost expert worker may come back (restarted): then redo this layer's experts with
    // the same inputs, so the tokens are those of an undisturbed run. Bounded, in case a
    // worker answers health checks but never RunExperts.
    for (int redo = 0; absl::IsUnavailable(ran) && redo < kMaxLayerRedos; ++redo) {
      MOE_RETURN_IF_ERROR(experts_->AwaitRecovery(cancelled));
      ran = experts_->RunExperts(l, xn, n, route_ids, route_w, moe_out, &pass.experts);
    }
    MOE_RETURN_IF_ERROR(ran);
    // RunExperts is synchronous: out is complete before this is queued.
    MOE_RETURN_IF_ERROR(kern.Add(b.x, b.moe_out, n * h, stream));
  }

  // Final norm and LM head for the rows asked for.
  logits->resize(rows * c.vocab_size);
  float* out = host_is_device ? logits->data() : b.logits;
  MOE_RETURN_IF_ERROR(kern.RmsNorm(b.x + first * h, weights.final_norm(), b.xn, rows, h, eps,
                                   stream));
  MOE_RETURN_IF_ERROR(kern.MatMul(weights.lm_head(), b.xn, out, rows, /*accumulate=*/false,
                                  stream));
  if (!host_is_device) {
    MOE_RETURN_IF_ERROR(device.CopyToHost(logits->data(), b.logits,
                                          rows * c.vocab_size * sizeof(float), stream));
  }
  MOE_RETURN_IF_ERROR(stream.Synchronize());

  cache.set_length(start + n);
  if (stats != nullptr) *stats += pass;
  {
    std::lock_guard<std::mutex> lock(totals_mu_);
    totals_ += pass;
  }
  return absl::OkStatus();
}

}  // namespace moe::coordinator
