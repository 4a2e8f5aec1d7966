#include "coordinator/dense_weights.h"

#include "common/model_dir.h"
#include "common/status.h"

namespace moe::coordinator {
namespace {

absl::Status Read(const Checkpoint& ckpt, const std::string& name,
                  std::initializer_list<int64_t> shape, std::vector<float>* dst) {
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  dst->resize(count);
  return ckpt.ReadF32(name, shape, dst->data());
}

}  // namespace

absl::StatusOr<DenseWeights> DenseWeights::Load(const Checkpoint& ckpt,
                                                const ModelConfig& c) {
  namespace tn = tensor_names;
  const int64_t h = c.hidden_size;
  DenseWeights w;
  MOE_RETURN_IF_ERROR(Read(ckpt, tn::Embedding(), {c.vocab_size, h}, &w.embedding));
  MOE_RETURN_IF_ERROR(Read(ckpt, tn::FinalNorm(), {h}, &w.final_norm));
  if (!c.tie_word_embeddings) {
    MOE_RETURN_IF_ERROR(Read(ckpt, tn::LmHead(), {c.vocab_size, h}, &w.lm_head));
  }
  w.layers.resize(c.num_hidden_layers);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    LayerWeights& lw = w.layers[l];
    MOE_RETURN_IF_ERROR(Read(ckpt, tn::Layer(l, "input_layernorm.weight"), {h}, &lw.input_norm));
    MOE_RETURN_IF_ERROR(Read(ckpt, tn::Layer(l, "self_attn.q_proj.weight"), {c.q_dim(), h}, &lw.q));
    MOE_RETURN_IF_ERROR(Read(ckpt, tn::Layer(l, "self_attn.k_proj.weight"), {c.kv_dim(), h}, &lw.k));
    MOE_RETURN_IF_ERROR(Read(ckpt, tn::Layer(l, "self_attn.v_proj.weight"), {c.kv_dim(), h}, &lw.v));
    MOE_RETURN_IF_ERROR(Read(ckpt, tn::Layer(l, "self_attn.o_proj.weight"), {h, c.q_dim()}, &lw.o));
    MOE_RETURN_IF_ERROR(Read(ckpt, tn::Layer(l, "post_attention_layernorm.weight"), {h}, &lw.post_norm));
    MOE_RETURN_IF_ERROR(Read(ckpt, tn::Layer(l, "block_sparse_moe.gate.weight"),
                             {c.num_local_experts, h}, &lw.gate));
  }
  return w;
}

}  // namespace moe::coordinator
