#include "coordinator/model_family.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace moe::coordinator {

namespace {

absl::Status CheckSize(const std::vector<float>& t, int64_t expected, int layer,
                       absl::string_view name) {
  if (int64_t(t.size()) == expected) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("layer ", layer, ": ", name, " holds ", t.size(),
                                                 " floats, the config implies ", expected));
}

// A matrix held in fp32 `f32` or as stored in `packed` (not both): [rows, cols].
absl::Status CheckMatrix(const std::vector<float>& f32, const PackedMatrix& packed, int64_t rows,
                         int64_t cols, int layer, absl::string_view name) {
  if (packed.empty()) return CheckSize(f32, rows * cols, layer, name);
  if (f32.empty() && packed.layout.rows == rows && packed.layout.cols == cols) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "layer ", layer, ": ", name, " holds [", packed.layout.rows, ", ", packed.layout.cols,
      "] stored and ", f32.size(), " floats, the config implies [", rows, ", ", cols, "]"));
}

// The embedding table, or an untied LM head: [vocab, hidden] in one form.
absl::Status CheckTable(const std::vector<float>& f32, const PackedMatrix& packed,
                        const ModelConfig& c, absl::string_view name) {
  const quant::MatrixLayout& stored = packed.layout;
  if (packed.empty() ? int64_t(f32.size()) == c.vocab_size * c.hidden_size
                     : f32.empty() && stored.rows == c.vocab_size && stored.cols == c.hidden_size) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      name, " holds ", f32.size(), " floats or [", stored.rows, ", ", stored.cols,
      "] stored, the config implies [", c.vocab_size, ", ", c.hidden_size, "]"));
}

absl::Status CheckMlp(const MlpWeights& mlp, int64_t width, int64_t h, int layer,
                      absl::string_view name) {
  MOE_RETURN_IF_ERROR(CheckMatrix(mlp.gate, mlp.gate_packed, width, h, layer,
                                  absl::StrCat(name, " gate_proj")));
  MOE_RETURN_IF_ERROR(
      CheckMatrix(mlp.up, mlp.up_packed, width, h, layer, absl::StrCat(name, " up_proj")));
  return CheckMatrix(mlp.down, mlp.down_packed, h, width, layer, absl::StrCat(name, " down_proj"));
}

}  // namespace

absl::Status ModelFamilyOps::CheckWeights(const ModelConfig& c, const DenseWeights& w) {
  const int64_t h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim();
  // The lookup reads row `token` of the table for every token id below vocab_size.
  MOE_RETURN_IF_ERROR(CheckTable(w.embedding, w.embedding_packed, c, "the embedding table"));
  if (c.tie_word_embeddings) {
    if (!w.lm_head.empty() || !w.lm_head_packed.empty()) {
      return absl::InvalidArgumentError(
          "the LM head is tied to the embedding table, but a separate one is held");
    }
  } else {
    MOE_RETURN_IF_ERROR(CheckTable(w.lm_head, w.lm_head_packed, c, "the LM head"));
  }
  for (int l = 0; l < int(w.layers.size()); ++l) {
    const LayerWeights& lw = w.layers[size_t(l)];
    MOE_RETURN_IF_ERROR(CheckMatrix(lw.q, lw.q_packed, qd, h, l, "q_proj"));
    MOE_RETURN_IF_ERROR(CheckMatrix(lw.k, lw.k_packed, kvd, h, l, "k_proj"));
    MOE_RETURN_IF_ERROR(CheckMatrix(lw.v, lw.v_packed, kvd, h, l, "v_proj"));
    MOE_RETURN_IF_ERROR(CheckMatrix(lw.o, lw.o_packed, h, qd, l, "o_proj"));
    MOE_RETURN_IF_ERROR(CheckSize(lw.q_bias, c.qkv_bias ? qd : 0, l, "q_proj.bias"));
    MOE_RETURN_IF_ERROR(CheckSize(lw.k_bias, c.qkv_bias ? kvd : 0, l, "k_proj.bias"));
    MOE_RETURN_IF_ERROR(CheckSize(lw.v_bias, c.qkv_bias ? kvd : 0, l, "v_proj.bias"));
    const int64_t q_norm = c.qk_norm == QkNorm::kPerHead ? c.head_dim
                           : c.qk_norm == QkNorm::kWhole ? qd
                                                         : 0;
    const int64_t k_norm = c.qk_norm == QkNorm::kPerHead ? c.head_dim
                           : c.qk_norm == QkNorm::kWhole ? kvd
                                                         : 0;
    MOE_RETURN_IF_ERROR(CheckSize(lw.q_norm, q_norm, l, "q_norm"));
    MOE_RETURN_IF_ERROR(CheckSize(lw.k_norm, k_norm, l, "k_norm"));
    if (!c.IsSparseLayer(l)) {
      MOE_RETURN_IF_ERROR(
          CheckMatrix(lw.gate, lw.gate_packed, 0, h, l, "router (a dense layer has none)"));
      MOE_RETURN_IF_ERROR(CheckMlp(lw.dense_mlp, c.dense_intermediate_size, h, l, "dense MLP"));
      continue;
    }
    MOE_RETURN_IF_ERROR(
        CheckMatrix(lw.gate, lw.gate_packed, c.num_local_experts, h, l, "router"));
    MOE_RETURN_IF_ERROR(CheckMlp(lw.dense_mlp, 0, h, l, "dense MLP (a sparse layer has none)"));
    const int64_t shared = c.shared_expert_intermediate_size;
    MOE_RETURN_IF_ERROR(CheckMlp(lw.shared_expert, shared, h, l, "shared expert"));
    MOE_RETURN_IF_ERROR(CheckMatrix(lw.shared_expert_gate, lw.shared_expert_gate_packed,
                                    shared > 0 ? 1 : 0, h, l, "shared_expert_gate"));
  }
  return absl::OkStatus();
}

MlpScratch ModelFamilyOps::Carve(const ModelConfig& c, int64_t n, ScratchCarver& device) {
  MlpScratch s;
  int64_t width = c.shared_expert_intermediate_size;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    if (!c.IsSparseLayer(l)) width = std::max(width, c.dense_intermediate_size);
  }
  if (width == 0) return s;
  s.gate = device.Take<float>(n * width);
  s.up = device.Take<float>(n * width);
  s.out = device.Take<float>(n * c.hidden_size);
  s.gate_logit = device.Take<float>(n);
  return s;
}

absl::Status ModelFamilyOps::PrepareQkv(const DeviceLayerWeights& lw, float* q, float* k,
                                        float* v, int64_t n, backend::Stream& stream) const {
  const int64_t qd = c_.q_dim(), kvd = c_.kv_dim();
  const float eps = static_cast<float>(c_.rms_norm_eps);
  if (c_.qkv_bias) {
    MOE_RETURN_IF_ERROR(kern_.AddBias(q, lw.q_bias, n, qd, stream));
    MOE_RETURN_IF_ERROR(kern_.AddBias(k, lw.k_bias, n, kvd, stream));
    MOE_RETURN_IF_ERROR(kern_.AddBias(v, lw.v_bias, n, kvd, stream));
  }
  switch (c_.qk_norm) {
    case QkNorm::kNone:
      break;
    case QkNorm::kPerHead:  // rows of head_dim: n * heads of them
      MOE_RETURN_IF_ERROR(
          kern_.RmsNorm(q, lw.q_norm, q, n * c_.num_attention_heads, c_.head_dim, eps, stream));
      MOE_RETURN_IF_ERROR(
          kern_.RmsNorm(k, lw.k_norm, k, n * c_.num_key_value_heads, c_.head_dim, eps, stream));
      break;
    case QkNorm::kWhole:
      MOE_RETURN_IF_ERROR(kern_.RmsNorm(q, lw.q_norm, q, n, qd, eps, stream));
      MOE_RETURN_IF_ERROR(kern_.RmsNorm(k, lw.k_norm, k, n, kvd, eps, stream));
      break;
  }
  if (c_.clip_qkv) {  // after the norms, as OLMoE does
    const float limit = static_cast<float>(*c_.clip_qkv);
    MOE_RETURN_IF_ERROR(kern_.Clamp(q, n * qd, limit, stream));
    MOE_RETURN_IF_ERROR(kern_.Clamp(k, n * kvd, limit, stream));
    MOE_RETURN_IF_ERROR(kern_.Clamp(v, n * kvd, limit, stream));
  }
  return absl::OkStatus();
}

absl::Status ModelFamilyOps::Route(const DeviceLayerWeights& lw, const float* xn, int64_t n,
                                   float* logits, int32_t* ids, float* weights,
                                   backend::Stream& stream) const {
  MOE_RETURN_IF_ERROR(kern_.MatMul(lw.gate, xn, logits, n, /*accumulate=*/false, stream));
  return kern_.TopKRouting(logits, n, c_.num_local_experts, c_.num_experts_per_tok,
                           c_.norm_topk_prob, ids, weights, stream);
}

absl::Status ModelFamilyOps::Activations(const DeviceMlp& mlp, const float* xn, int64_t n,
                                         const MlpScratch& s, backend::Stream& stream) const {
  MOE_RETURN_IF_ERROR(kern_.MatMul(mlp.gate, xn, s.gate, n, /*accumulate=*/false, stream));
  MOE_RETURN_IF_ERROR(kern_.MatMul(mlp.up, xn, s.up, n, /*accumulate=*/false, stream));
  return kern_.SiluMul(s.gate, s.up, n * mlp.gate.rows, stream);
}

absl::Status ModelFamilyOps::SharedExpert(const DeviceLayerWeights& lw, const float* xn,
                                          int64_t n, const MlpScratch& s,
                                          backend::Stream& stream) const {
  if (!lw.shared_expert.present) return absl::OkStatus();
  MOE_RETURN_IF_ERROR(Activations(lw.shared_expert, xn, n, s, stream));
  MOE_RETURN_IF_ERROR(
      kern_.MatMul(lw.shared_expert.down, s.gate, s.out, n, /*accumulate=*/false, stream));
  return kern_.MatMul(lw.shared_expert_gate, xn, s.gate_logit, n, /*accumulate=*/false, stream);
}

absl::Status ModelFamilyOps::AddSharedExpert(const DeviceLayerWeights& lw, float* moe_out,
                                             int64_t n, const MlpScratch& s,
                                             backend::Stream& stream) const {
  if (!lw.shared_expert.present) return absl::OkStatus();
  return kern_.SigmoidGatedAdd(moe_out, s.gate_logit, s.out, n, c_.hidden_size, stream);
}

absl::Status ModelFamilyOps::DenseMlp(const DeviceLayerWeights& lw, const float* xn, float* x,
                                      int64_t n, const MlpScratch& s,
                                      backend::Stream& stream) const {
  MOE_RETURN_IF_ERROR(Activations(lw.dense_mlp, xn, n, s, stream));
  return kern_.MatMul(lw.dense_mlp.down, s.gate, x, n, /*accumulate=*/true, stream);
}

}  // namespace moe::coordinator
