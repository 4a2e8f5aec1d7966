// The Mixtral family's config.json fields, validated.
#ifndef MOE_COMMON_MODEL_CONFIG_H_
#define MOE_COMMON_MODEL_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace moe {

struct ModelConfig {
  std::string model_type;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;  // width of one expert
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

  int64_t q_dim() const { return num_attention_heads * head_dim; }
  int64_t kv_dim() const { return num_key_value_heads * head_dim; }
  // Parameters of one expert (w1, w3: [I, H]; w2: [H, I]).
  int64_t ExpertParams() const { return 3 * hidden_size * intermediate_size; }
  int64_t DenseParamsPerLayer() const;  // attention, norms and gate of one layer
  int64_t TotalParams() const;

  // Parses and validates config.json text. `source` names the file in errors.
  static absl::StatusOr<ModelConfig> FromJson(absl::string_view text,
                                              absl::string_view source = "config.json");
  static absl::StatusOr<ModelConfig> FromFile(const std::string& path);
};

}  // namespace moe

#endif  // MOE_COMMON_MODEL_CONFIG_H_
