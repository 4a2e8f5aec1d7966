#include "common/model_tensors.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace moe {
namespace tensor_names {

std::string Embedding() { return "model.embed_tokens.weight"; }
std::string FinalNorm() { return "model.norm.weight"; }
std::string LmHead() { return "lm_head.weight"; }
std::string Layer(int layer, absl::string_view suffix) {
  return absl::StrCat("model.layers.", layer, ".", suffix);
}

std::string Expert(const ModelConfig& c, int layer, int expert, absl::string_view w) {
  if (c.family == ModelFamily::kMixtral) {
    return absl::StrCat("model.layers.", layer, ".block_sparse_moe.experts.", expert, ".", w,
                        ".weight");
  }
  const absl::string_view hf = w == "w1" ? "gate_proj" : w == "w3" ? "up_proj" : "down_proj";
  return absl::StrCat("model.layers.", layer, ".mlp.experts.", expert, ".", hf, ".weight");
}

std::string Router(const ModelConfig& c, int layer) {
  return Layer(layer, c.family == ModelFamily::kMixtral ? "block_sparse_moe.gate.weight"
                                                        : "mlp.gate.weight");
}

}  // namespace tensor_names

absl::Status ForEachModelTensor(const ModelConfig& c, bool experts,
                                const std::function<absl::Status(const ModelTensor&)>& visit) {
  namespace tn = tensor_names;
  const int64_t h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim();
  auto one = [&](std::string name, std::vector<int64_t> shape, TensorKind kind, int layer) {
    ModelTensor t;
    t.name = std::move(name);
    t.shape = std::move(shape);
    t.kind = kind;
    t.layer = layer;
    return visit(t);
  };
  // A SwiGLU MLP of width `width` under `prefix` (the shared expert, a dense layer).
  auto mlp = [&](int l, absl::string_view prefix, int64_t width) -> absl::Status {
    MOE_RETURN_IF_ERROR(one(tn::Layer(l, absl::StrCat(prefix, "gate_proj.weight")), {width, h},
                            TensorKind::kMatrix, l));
    MOE_RETURN_IF_ERROR(one(tn::Layer(l, absl::StrCat(prefix, "up_proj.weight")), {width, h},
                            TensorKind::kMatrix, l));
    return one(tn::Layer(l, absl::StrCat(prefix, "down_proj.weight")), {h, width},
               TensorKind::kMatrix, l);
  };
  MOE_RETURN_IF_ERROR(one(tn::Embedding(), {c.vocab_size, h}, TensorKind::kMatrix, -1));
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    MOE_RETURN_IF_ERROR(one(tn::Layer(l, "input_layernorm.weight"), {h}, TensorKind::kVector, l));
    MOE_RETURN_IF_ERROR(one(tn::Layer(l, "self_attn.q_proj.weight"), {qd, h}, TensorKind::kAttention, l));
    MOE_RETURN_IF_ERROR(one(tn::Layer(l, "self_attn.k_proj.weight"), {kvd, h}, TensorKind::kAttention, l));
    MOE_RETURN_IF_ERROR(one(tn::Layer(l, "self_attn.v_proj.weight"), {kvd, h}, TensorKind::kAttention, l));
    MOE_RETURN_IF_ERROR(one(tn::Layer(l, "self_attn.o_proj.weight"), {h, qd}, TensorKind::kAttention, l));
    if (c.qkv_bias) {
      MOE_RETURN_IF_ERROR(one(tn::Layer(l, "self_attn.q_proj.bias"), {qd}, TensorKind::kVector, l));
      MOE_RETURN_IF_ERROR(one(tn::Layer(l, "self_attn.k_proj.bias"), {kvd}, TensorKind::kVector, l));
      MOE_RETURN_IF_ERROR(one(tn::Layer(l, "self_attn.v_proj.bias"), {kvd}, TensorKind::kVector, l));
    }
    if (c.qk_norm != QkNorm::kNone) {
      const bool per_head = c.qk_norm == QkNorm::kPerHead;
      MOE_RETURN_IF_ERROR(one(tn::Layer(l, "self_attn.q_norm.weight"), {per_head ? c.head_dim : qd},
                              TensorKind::kVector, l));
      MOE_RETURN_IF_ERROR(one(tn::Layer(l, "self_attn.k_norm.weight"), {per_head ? c.head_dim : kvd},
                              TensorKind::kVector, l));
    }
    MOE_RETURN_IF_ERROR(
        one(tn::Layer(l, "post_attention_layernorm.weight"), {h}, TensorKind::kVector, l));
    if (!c.IsSparseLayer(l)) {
      MOE_RETURN_IF_ERROR(mlp(l, "mlp.", c.dense_intermediate_size));
      continue;
    }
    MOE_RETURN_IF_ERROR(one(tn::Router(c, l), {c.num_local_experts, h}, TensorKind::kMatrix, l));
    if (c.shared_expert_intermediate_size > 0) {
      MOE_RETURN_IF_ERROR(mlp(l, "mlp.shared_expert.", c.shared_expert_intermediate_size));
      MOE_RETURN_IF_ERROR(
          one(tn::Layer(l, "mlp.shared_expert_gate.weight"), {1, h}, TensorKind::kMatrix, l));
    }
    if (!experts) continue;
    for (int e = 0; e < c.num_local_experts; ++e) {
      for (const absl::string_view role : {"w1", "w3", "w2"}) {
        ModelTensor t;
        t.name = tn::Expert(c, l, e, role);
        t.shape = role == "w2" ? std::vector<int64_t>{h, c.intermediate_size}
                               : std::vector<int64_t>{c.intermediate_size, h};
        t.kind = TensorKind::kExpert;
        t.layer = l;
        t.expert = e;
        t.role = role;
        MOE_RETURN_IF_ERROR(visit(t));
      }
    }
  }
  MOE_RETURN_IF_ERROR(one(tn::FinalNorm(), {h}, TensorKind::kVector, -1));
  if (!c.tie_word_embeddings) {
    MOE_RETURN_IF_ERROR(one(tn::LmHead(), {c.vocab_size, h}, TensorKind::kMatrix, -1));
  }
  return absl::OkStatus();
}

}  // namespace moe
