// A model's config.json, validated: the fields of the Mixtral layout, plus the named
// differences of the other families read (qwen2_moe, qwen3_moe, olmoe; model_family.h in
// the coordinator says how each is computed).
#ifndef MOE_COMMON_MODEL_CONFIG_H_
#define MOE_COMMON_MODEL_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace moe {

// The model families read, by config.json's model_type (HF transformers semantics).
enum class ModelFamily { kMixtral, kQwen2Moe, kQwen3Moe, kOlmoe };

// model_type of `family` ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe").
absl::string_view FamilyName(ModelFamily family);
// The supported model_types, for error messages: "mixtral, qwen2_moe, qwen3_moe, olmoe".
std::string SupportedFamilies();

// Where a family normalises queries and keys (RMSNorm, before RoPE).
enum class QkNorm {
  kNone,
  kPerHead,  // qwen3_moe: over head_dim, each head of q and k (weights [head_dim])
  kWhole,    // olmoe: over the whole projected q and k (weights [q_dim], [kv_dim])
};

struct ModelConfig {
  ModelFamily family = ModelFamily::kMixtral;
  std::string model_type;  // as written ("" when absent: a Mixtral checkpoint)
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  // Width of one routed expert (Qwen's moe_intermediate_size; Mixtral's and OLMoE's
  // intermediate_size).
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;  // config's head_dim, else hidden_size / num_attention_heads
  int64_t num_local_experts = 0;
  int64_t num_experts_per_tok = 0;
  int64_t max_position_embeddings = 0;
  double rope_theta = 1e6;
  double rms_norm_eps = 1e-5;
  bool tie_word_embeddings = false;
  std::optional<int64_t> sliding_window;  // null: full causal attention
  int64_t bos_token_id = 1;
  int64_t eos_token_id = 2;

  // The families' differences; the defaults are Mixtral's.
  bool qkv_bias = false;  // qwen2_moe: q/k/v projections with bias
  QkNorm qk_norm = QkNorm::kNone;
  std::optional<double> clip_qkv;  // olmoe: q, k, v clamped to [-clip, clip]
  bool norm_topk_prob = true;  // top-k router weights renormalised to sum 1
  // qwen2_moe: a shared expert of this width, scaled by sigmoid(shared_expert_gate(x));
  // 0: none.
  int64_t shared_expert_intermediate_size = 0;
  // qwen2/3_moe: layer l has routed experts iff l is not in mlp_only_layers and
  // (l + 1) % decoder_sparse_step == 0; the others a dense MLP of this width.
  int64_t dense_intermediate_size = 0;
  int64_t decoder_sparse_step = 1;
  std::vector<int64_t> mlp_only_layers;

  // Whether layer l routes to experts (else: a dense MLP on the coordinator).
  bool IsSparseLayer(int64_t layer) const;
  // Index of layer l among the sparse layers (what the expert worker and the speculator
  // number layers by), or -1 for a dense one.
  int ExpertLayer(int64_t layer) const;
  // The decoder layer of expert layer `expert_layer` (ExpertLayer's inverse).
  int DecoderLayer(int expert_layer) const;
  // Layers with routed experts: the expert worker's layers.
  int64_t num_expert_layers() const;

  int64_t q_dim() const { return num_attention_heads * head_dim; }
  int64_t kv_dim() const { return num_key_value_heads * head_dim; }
  // Parameters of one expert (w1, w3: [I, H]; w2: [H, I]).
  int64_t ExpertParams() const { return 3 * hidden_size * intermediate_size; }
  // Parameters of layer l on the coordinator: attention, norms, and the router and shared
  // expert of a sparse layer or the MLP of a dense one.
  int64_t DenseParamsOfLayer(int64_t layer) const;
  int64_t TotalParams() const;

  // Parses and validates config.json text. `source` names the file in errors.
  static absl::StatusOr<ModelConfig> FromJson(absl::string_view text,
                                              absl::string_view source = "config.json");
  static absl::StatusOr<ModelConfig> FromFile(const std::string& path);
};

}  // namespace moe

#endif  // MOE_COMMON_MODEL_CONFIG_H_
