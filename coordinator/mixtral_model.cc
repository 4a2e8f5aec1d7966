#include "coordinator/mixtral_model.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status.h"

namespace moe::coordinator {
namespace {

constexpr int kMaxLayerRedos = 5;

}  // namespace

MixtralModel::MixtralModel(const ModelConfig& config, DenseWeights weights,
                           ExpertBackend* experts)
    : config_(config),
      weights_(std::move(weights)),
      experts_(experts),
      rope_(config.head_dim, config.rope_theta, config.max_position_embeddings) {}

absl::StatusOr<std::unique_ptr<MixtralModel>> MixtralModel::Create(const ModelConfig& config,
                                                                   DenseWeights weights,
                                                                   ExpertBackend* experts) {
  if (experts == nullptr) return absl::InvalidArgumentError("MixtralModel: no expert backend");
  if (weights.layers.size() != size_t(config.num_hidden_layers)) {
    return absl::InvalidArgumentError("MixtralModel: weights do not match the config's layers");
  }
  return std::unique_ptr<MixtralModel>(new MixtralModel(config, std::move(weights), experts));
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
  if (start + n > cache.capacity() || start + n > rope_.max_positions()) {
    return absl::OutOfRangeError(absl::StrCat(
        "Forward: positions up to ", start + n, " exceed the context of ",
        std::min(cache.capacity(), rope_.max_positions()), " tokens"));
  }
  for (int64_t t = 0; t < n; ++t) {
    if (tokens[t] < 0 || tokens[t] >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token id ", tokens[t], " at index ", t, " is outside the vocabulary [0, ",
          c.vocab_size, ")"));
    }
  }

  const int64_t h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim();
  const int64_t e = c.num_local_experts, k = c.num_experts_per_tok;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const int64_t window = c.sliding_window.value_or(0);

  std::vector<float> x(n * h), xn(n * h), q(n * qd), attn(n * qd), moe_out(n * h);
  std::vector<float> router(n * e), route_w(n * k);
  // guesses[d - 1][layer] = the expert ids guessed d layers ahead for each token, [n, m];
  // empty: no guess.
  const SpeculationOptions speculation = speculation_;
  const int lookahead = speculation.lookahead;
  const int m = static_cast<int>(std::min<int64_t>(speculation.experts, e));
  std::vector<std::vector<std::vector<int32_t>>> guesses(
      lookahead, std::vector<std::vector<int32_t>>(c.num_hidden_layers));
  ForwardStats pass;
  std::vector<float> spec_xn, spec_logits, spec_w;
  std::vector<int32_t> route_ids(n * k);
  std::vector<int64_t> positions(n);
  for (int64_t t = 0; t < n; ++t) {
    positions[t] = start + t;
    std::memcpy(&x[t * h], &weights_.embedding[int64_t(tokens[t]) * h], h * sizeof(float));
  }

  for (int l = 0; l < c.num_hidden_layers; ++l) {
    if (cancelled && cancelled()) return absl::CancelledError("generation cancelled");
    const LayerWeights& lw = weights_.layers[l];
    float* keys = cache.keys(l) + start * kvd;
    float* values = cache.values(l) + start * kvd;

    // h = x + Attention(RMSNorm(x))
    cpu::RmsNorm(x.data(), lw.input_norm.data(), xn.data(), n, h, eps);
    Project(lw.q, lw.q_packed, xn.data(), q.data(), n, h, qd);
    Project(lw.k, lw.k_packed, xn.data(), keys, n, h, kvd);
    Project(lw.v, lw.v_packed, xn.data(), values, n, h, kvd);
    rope_.Apply(q.data(), positions.data(), n, c.num_attention_heads);
    rope_.Apply(keys, positions.data(), n, c.num_key_value_heads);
    cpu::Attention(q.data(), cache.keys(l), cache.values(l), attn.data(), start, n,
                   c.num_attention_heads, c.num_key_value_heads, c.head_dim, window);
    Project(lw.o, lw.o_packed, attn.data(), x.data(), n, qd, h, /*accumulate=*/true);

    // Guess the next layers' experts from h and start loading them, nearest first (it
    // is needed soonest); a round for a layer supersedes the older, farther guess.
    for (int j = 1; j <= lookahead && l + j < c.num_hidden_layers; ++j) {
      const LayerWeights& next = weights_.layers[l + j];
      spec_xn.resize(n * h);
      spec_logits.resize(n * e);
      spec_w.resize(n * m);
      cpu::RmsNorm(x.data(), next.post_norm.data(), spec_xn.data(), n, h, eps);
      cpu::MatMulTransB(spec_xn.data(), next.gate.data(), spec_logits.data(), n, h, e);
      std::vector<int32_t>& guess = guesses[j - 1][l + j];
      guess.assign(n * m, -1);
      for (int64_t t = 0; t < n; ++t) {
        cpu::TopKRouting(&spec_logits[t * e], e, m, &guess[t * m], &spec_w[t * m]);
      }
      std::vector<int32_t> unique;
      for (int32_t id : guess) {
        if (std::find(unique.begin(), unique.end(), id) == unique.end()) unique.push_back(id);
      }
      experts_->Prefetch(l + j, unique);
      pass.speculation.hinted += guess.size();
    }

    // x = h + MoE(RMSNorm(h)): route here, compute where the experts live.
    cpu::RmsNorm(x.data(), lw.post_norm.data(), xn.data(), n, h, eps);
    cpu::MatMulTransB(xn.data(), lw.gate.data(), router.data(), n, h, e);
    for (int64_t t = 0; t < n; ++t) {
      cpu::TopKRouting(&router[t * e], e, k, &route_ids[t * k], &route_w[t * k]);
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
    absl::Status ran = experts_->RunExperts(l, xn, n, route_ids, route_w, absl::MakeSpan(moe_out),
                                          &pass.experts);
    // A lost expert worker may come back (restarted): then redo this layer's experts with
    // the same inputs, so the tokens are those of an undisturbed run. Bounded, in case a
    // worker answers health checks but never RunExperts.
    for (int redo = 0; absl::IsUnavailable(ran) && redo < kMaxLayerRedos; ++redo) {
      MOE_RETURN_IF_ERROR(experts_->AwaitRecovery(cancelled));
      ran = experts_->RunExperts(l, xn, n, route_ids, route_w, absl::MakeSpan(moe_out),
                                          &pass.experts);
    }
    MOE_RETURN_IF_ERROR(ran);
    for (int64_t i = 0; i < n * h; ++i) x[i] += moe_out[i];
  }
  cache.set_length(start + n);
  if (stats != nullptr) *stats += pass;
  {
    std::lock_guard<std::mutex> lock(totals_mu_);
    totals_ += pass;
  }

  const int64_t first = which == Logits::kAll ? 0 : n - 1;
  const int64_t rows = n - first;
  cpu::RmsNorm(&x[first * h], weights_.final_norm.data(), xn.data(), rows, h, eps);
  logits->resize(rows * c.vocab_size);
  cpu::MatMulTransB(xn.data(), weights_.LmHead(), logits->data(), rows, h, c.vocab_size);
  return absl::OkStatus();
}

}  // namespace moe::coordinator
