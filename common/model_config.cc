#include "common/model_config.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/json_util.h"
#include "common/mapped_file.h"
#include "common/status.h"

namespace moe {
namespace {

using json = nlohmann::json;

// Largest size accepted for any one dimension: far above any real model, low enough
// that products of two sizes cannot overflow.
constexpr int64_t kMaxDim = int64_t{1} << 24;

// Largest config.json read: real ones are a few KiB.
constexpr size_t kMaxConfigBytes = size_t{1} << 20;

class FieldReader {
 public:
  FieldReader(const json& j, absl::string_view source) : j_(j), source_(source) {}

  absl::StatusOr<int64_t> PositiveInt(const char* key, std::optional<int64_t> fallback = {}) {
    const auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) {
      if (fallback) return *fallback;
      return Error(absl::StrCat("missing field \"", key, "\""));
    }
    if (!it->is_number_integer()) {
      return Error(absl::StrCat("field \"", key, "\" is not an integer: ", it->dump()));
    }
    const int64_t v = it->get<int64_t>();
    if (v <= 0 || (it->is_number_unsigned() && it->get<uint64_t>() > uint64_t(kMaxDim))) {
      return Error(absl::StrCat("field \"", key, "\" must be in [1, ", kMaxDim, "], got ",
                                it->dump()));
    }
    return v;
  }

  absl::StatusOr<int64_t> Int(const char* key, int64_t fallback) {
    const auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return fallback;
    if (!it->is_number_integer()) {
      return Error(absl::StrCat("field \"", key, "\" is not an integer: ", it->dump()));
    }
    if (it->is_number_unsigned() &&
        it->get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max())) {
      return Error(absl::StrCat("field \"", key, "\" is out of range: ", it->dump()));
    }
    return it->get<int64_t>();
  }

  absl::StatusOr<double> PositiveNumber(const char* key, double fallback) {
    const auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return fallback;
    if (!it->is_number()) {
      return Error(absl::StrCat("field \"", key, "\" is not a number: ", it->dump()));
    }
    const double v = it->get<double>();
    if (!(v > 0) || !std::isfinite(v)) {
      return Error(absl::StrCat("field \"", key, "\" must be positive, got ", it->dump()));
    }
    return v;
  }

  absl::StatusOr<bool> Bool(const char* key, bool fallback) {
    const auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) {
      return Error(absl::StrCat("field \"", key, "\" is not a boolean: ", it->dump()));
    }
    return it->get<bool>();
  }

  // An optional positive number; null or absent: nullopt.
  absl::StatusOr<std::optional<double>> OptionalPositiveNumber(const char* key) {
    const auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return std::optional<double>();
    MOE_ASSIGN_OR_RETURN(const double v, PositiveNumber(key, 1.0));
    return std::optional<double>(v);
  }

  // A list of layer indices in [0, layers); absent: empty. Bounded by `layers` entries
  // so that a hostile file cannot make us hold more than the model has.
  absl::StatusOr<std::vector<int64_t>> LayerList(const char* key, int64_t layers) {
    const auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return std::vector<int64_t>();
    if (!it->is_array()) return Error(absl::StrCat("field \"", key, "\" is not a list"));
    if (int64_t(it->size()) > layers) {
      return Error(absl::StrCat("field \"", key, "\" lists ", it->size(),
                                " layers but the model has ", layers));
    }
    std::vector<int64_t> out;
    for (const json& v : *it) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= layers) {
        return Error(absl::StrCat("field \"", key, "\" holds ", v.dump().substr(0, 40),
                                  ", not a layer index in [0, ", layers, ")"));
      }
      out.push_back(v.get<int64_t>());
    }
    return out;
  }

  absl::Status Error(absl::string_view message) const {
    return absl::InvalidArgumentError(absl::StrCat(source_, ": ", message));
  }

 private:
  const json& j_;
  absl::string_view source_;
};

struct FamilyInfo {
  ModelFamily family;
  const char* model_type;
  const char* architecture;  // HF's class name in "architectures"
};
constexpr std::array<FamilyInfo, 4> kFamilies = {{
    {ModelFamily::kMixtral, "mixtral", "MixtralForCausalLM"},
    {ModelFamily::kQwen2Moe, "qwen2_moe", "Qwen2MoeForCausalLM"},
    {ModelFamily::kQwen3Moe, "qwen3_moe", "Qwen3MoeForCausalLM"},
    {ModelFamily::kOlmoe, "olmoe", "OlmoeForCausalLM"},
}};

const FamilyInfo* FindFamily(absl::string_view model_type, absl::string_view architecture) {
  for (const FamilyInfo& f : kFamilies) {
    if (model_type == f.model_type || architecture == f.architecture) return &f;
  }
  return nullptr;
}

// The family named by model_type and architectures, which must agree; neither present:
// Mixtral (the checkpoints this project was first written for carry no model_type).
absl::StatusOr<const FamilyInfo*> ReadFamily(const json& j, FieldReader& r,
                                             std::string* model_type) {
  const auto type_it = j.find("model_type");
  if (type_it != j.end() && !type_it->is_null()) {
    if (!type_it->is_string()) return r.Error("field \"model_type\" is not a string");
    *model_type = type_it->get<std::string>();
  }
  std::string architecture;
  const auto arch_it = j.find("architectures");
  if (arch_it != j.end() && !arch_it->is_null()) {
    if (!arch_it->is_array() || arch_it->size() != 1 || !(*arch_it)[0].is_string()) {
      return r.Error("field \"architectures\" is not a list of one class name");
    }
    architecture = (*arch_it)[0].get<std::string>();
  }
  if (model_type->empty() && architecture.empty()) return &kFamilies[0];
  const FamilyInfo* by_type = model_type->empty() ? nullptr : FindFamily(*model_type, "");
  const FamilyInfo* by_arch = architecture.empty() ? nullptr : FindFamily("", architecture);
  if (!model_type->empty() && by_type == nullptr) {
    return r.Error(absl::StrCat("model_type \"", model_type->substr(0, 40),
                                "\" is not supported; supported: ", SupportedFamilies()));
  }
  if (!architecture.empty() && by_arch == nullptr) {
    return r.Error(absl::StrCat("architecture \"", architecture.substr(0, 60),
                                "\" is not supported; supported model types: ",
                                SupportedFamilies()));
  }
  if (by_type != nullptr && by_arch != nullptr && by_type != by_arch) {
    return r.Error(absl::StrCat("model_type \"", *model_type, "\" disagrees with architecture \"",
                                architecture, "\""));
  }
  const FamilyInfo* f = by_type != nullptr ? by_type : by_arch;
  if (model_type->empty()) *model_type = f->model_type;
  return f;
}

}  // namespace

absl::string_view FamilyName(ModelFamily family) {
  for (const FamilyInfo& f : kFamilies) {
    if (f.family == family) return f.model_type;
  }
  return "unknown";
}

std::string SupportedFamilies() {
  std::vector<std::string> names;
  for (const FamilyInfo& f : kFamilies) names.push_back(f.model_type);
  return absl::StrJoin(names, ", ");
}

bool ModelConfig::IsSparseLayer(int64_t layer) const {
  if (std::find(mlp_only_layers.begin(), mlp_only_layers.end(), layer) != mlp_only_layers.end()) {
    return false;
  }
  return (layer + 1) % decoder_sparse_step == 0;
}

int ModelConfig::ExpertLayer(int64_t layer) const {
  if (decoder_sparse_step == 1 && mlp_only_layers.empty()) return int(layer);  // all sparse
  if (!IsSparseLayer(layer)) return -1;
  int index = 0;
  for (int64_t l = 0; l < layer; ++l) index += IsSparseLayer(l) ? 1 : 0;
  return index;
}

int ModelConfig::DecoderLayer(int expert_layer) const {
  if (decoder_sparse_step == 1 && mlp_only_layers.empty()) return expert_layer;
  int index = 0;
  for (int64_t l = 0; l < num_hidden_layers; ++l) {
    if (!IsSparseLayer(l)) continue;
    if (index++ == expert_layer) return int(l);
  }
  return -1;
}

int64_t ModelConfig::num_expert_layers() const {
  if (decoder_sparse_step == 1 && mlp_only_layers.empty()) return num_hidden_layers;
  int64_t count = 0;
  for (int64_t l = 0; l < num_hidden_layers; ++l) count += IsSparseLayer(l) ? 1 : 0;
  return count;
}

int64_t ModelConfig::DenseParamsOfLayer(int64_t layer) const {
  int64_t params = hidden_size * q_dim() * 2 + hidden_size * kv_dim() * 2 + 2 * hidden_size;
  if (qkv_bias) params += q_dim() + 2 * kv_dim();
  if (qk_norm == QkNorm::kPerHead) params += 2 * head_dim;
  if (qk_norm == QkNorm::kWhole) params += q_dim() + kv_dim();
  if (!IsSparseLayer(layer)) return params + 3 * hidden_size * dense_intermediate_size;
  params += num_local_experts * hidden_size;
  if (shared_expert_intermediate_size > 0) {
    params += 3 * hidden_size * shared_expert_intermediate_size + hidden_size;
  }
  return params;
}

int64_t ModelConfig::TotalParams() const {
  int64_t params = vocab_size * hidden_size * (tie_word_embeddings ? 1 : 2) + hidden_size;
  for (int64_t l = 0; l < num_hidden_layers; ++l) {
    params += DenseParamsOfLayer(l) + (IsSparseLayer(l) ? num_local_experts * ExpertParams() : 0);
  }
  return params;
}

namespace {

// The named differences of each family (model_config.h), with HF's defaults.
absl::Status ReadFamilyFields(const json& j, FieldReader& r, ModelConfig& c) {
  const auto act = j.find("hidden_act");
  if (act != j.end() && !act->is_null() && *act != "silu") {
    return r.Error(absl::StrCat("hidden_act ", act->dump().substr(0, 40),
                                " is not supported (only silu)"));
  }
  if (c.family != ModelFamily::kMixtral) {
    MOE_ASSIGN_OR_RETURN(const bool attention_bias, r.Bool("attention_bias", false));
    if (attention_bias) return r.Error("attention_bias true is not supported");
  }
  switch (c.family) {
    case ModelFamily::kMixtral:
      c.norm_topk_prob = true;
      break;
    case ModelFamily::kQwen2Moe:
    case ModelFamily::kQwen3Moe: {
      const bool qwen2 = c.family == ModelFamily::kQwen2Moe;
      c.qkv_bias = qwen2;
      c.qk_norm = qwen2 ? QkNorm::kNone : QkNorm::kPerHead;
      MOE_ASSIGN_OR_RETURN(c.norm_topk_prob, r.Bool("norm_topk_prob", false));
      MOE_ASSIGN_OR_RETURN(c.decoder_sparse_step, r.PositiveInt("decoder_sparse_step", int64_t{1}));
      MOE_ASSIGN_OR_RETURN(c.mlp_only_layers, r.LayerList("mlp_only_layers", c.num_hidden_layers));
      if (qwen2) {
        MOE_ASSIGN_OR_RETURN(c.shared_expert_intermediate_size,
                             r.PositiveInt("shared_expert_intermediate_size"));
      }
      MOE_ASSIGN_OR_RETURN(const bool window, r.Bool("use_sliding_window", false));
      if (window) return r.Error("use_sliding_window true is not supported for this family");
      break;
    }
    case ModelFamily::kOlmoe:
      c.qk_norm = QkNorm::kWhole;
      MOE_ASSIGN_OR_RETURN(c.norm_topk_prob, r.Bool("norm_topk_prob", false));
      MOE_ASSIGN_OR_RETURN(c.clip_qkv, r.OptionalPositiveNumber("clip_qkv"));
      break;
  }
  bool any_dense = false;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) any_dense |= !c.IsSparseLayer(l);
  if (any_dense) {
    MOE_ASSIGN_OR_RETURN(c.dense_intermediate_size, r.PositiveInt("intermediate_size"));
  }
  if (c.num_expert_layers() == 0) return r.Error("no layer has routed experts");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelConfig> ModelConfig::FromJson(absl::string_view text,
                                                  absl::string_view source) {
  auto parsed = ParseJsonObject(text, "config");
  if (!parsed.ok()) return Annotate(parsed.status(), source);
  const json& j = *parsed;
  FieldReader r(j, source);
  ModelConfig c;

  MOE_ASSIGN_OR_RETURN(const FamilyInfo* family, ReadFamily(j, r, &c.model_type));
  c.family = family->family;
  const bool mixtral = c.family == ModelFamily::kMixtral;
  const bool qwen = c.family == ModelFamily::kQwen2Moe || c.family == ModelFamily::kQwen3Moe;
  MOE_ASSIGN_OR_RETURN(c.vocab_size, r.PositiveInt("vocab_size"));
  MOE_ASSIGN_OR_RETURN(c.hidden_size, r.PositiveInt("hidden_size"));
  // Field names as the families' HF configs spell them.
  if (qwen) {
    MOE_ASSIGN_OR_RETURN(c.intermediate_size, r.PositiveInt("moe_intermediate_size"));
  } else {
    MOE_ASSIGN_OR_RETURN(c.intermediate_size, r.PositiveInt("intermediate_size"));
  }
  MOE_ASSIGN_OR_RETURN(c.num_hidden_layers, r.PositiveInt("num_hidden_layers"));
  MOE_ASSIGN_OR_RETURN(c.num_attention_heads, r.PositiveInt("num_attention_heads"));
  MOE_ASSIGN_OR_RETURN(c.num_key_value_heads,
                       r.PositiveInt("num_key_value_heads", c.num_attention_heads));
  MOE_ASSIGN_OR_RETURN(c.num_local_experts,
                       r.PositiveInt(mixtral ? "num_local_experts" : "num_experts"));
  MOE_RETURN_IF_ERROR(ReadFamilyFields(j, r, c));
  MOE_ASSIGN_OR_RETURN(c.num_experts_per_tok, r.PositiveInt("num_experts_per_tok"));
  MOE_ASSIGN_OR_RETURN(c.max_position_embeddings,
                       r.PositiveInt("max_position_embeddings", int64_t{4096}));
  MOE_ASSIGN_OR_RETURN(c.rope_theta, r.PositiveNumber("rope_theta", 1e6));
  MOE_ASSIGN_OR_RETURN(c.rms_norm_eps, r.PositiveNumber("rms_norm_eps", 1e-5));
  MOE_ASSIGN_OR_RETURN(c.tie_word_embeddings, r.Bool("tie_word_embeddings", false));
  MOE_ASSIGN_OR_RETURN(c.bos_token_id, r.Int("bos_token_id", 1));
  MOE_ASSIGN_OR_RETURN(c.eos_token_id, r.Int("eos_token_id", 2));

  // null means absent (transformers writes "head_dim": null).
  const auto head_dim_it = j.find("head_dim");
  const bool has_head_dim = head_dim_it != j.end() && !head_dim_it->is_null();
  if (c.hidden_size % c.num_attention_heads != 0 && !has_head_dim) {
    return r.Error(absl::StrCat("hidden_size ", c.hidden_size,
                                " is not divisible by num_attention_heads ",
                                c.num_attention_heads, " and no head_dim is given"));
  }
  MOE_ASSIGN_OR_RETURN(c.head_dim,
                       r.PositiveInt("head_dim", c.hidden_size / c.num_attention_heads));
  if (c.head_dim % 2 != 0) {
    return r.Error(absl::StrCat("head_dim ", c.head_dim, " must be even for rotary embeddings"));
  }
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    return r.Error(absl::StrCat("num_attention_heads ", c.num_attention_heads,
                                " is not a multiple of num_key_value_heads ",
                                c.num_key_value_heads));
  }
  if (c.num_experts_per_tok > c.num_local_experts) {
    return r.Error(absl::StrCat("num_experts_per_tok ", c.num_experts_per_tok,
                                " exceeds num_local_experts ", c.num_local_experts));
  }
  // Qwen configs carry a sliding_window that applies only with use_sliding_window.
  const auto window_it = j.find("sliding_window");
  const bool window_used = c.family == ModelFamily::kMixtral;
  if (window_used && window_it != j.end() && !window_it->is_null()) {
    MOE_ASSIGN_OR_RETURN(const int64_t window, r.PositiveInt("sliding_window"));
    c.sliding_window = window;
  }
  for (const auto& [name, id] : {std::pair{"bos_token_id", c.bos_token_id},
                                 std::pair{"eos_token_id", c.eos_token_id}}) {
    if (id < 0 || id >= c.vocab_size) {
      return r.Error(absl::StrCat("field \"", name, "\" ", id, " is outside the vocabulary [0, ",
                                  c.vocab_size, ")"));
    }
  }
  return c;
}

absl::StatusOr<ModelConfig> ModelConfig::FromFile(const std::string& path) {
  // MappedFile refuses what is not a regular file (a FIFO or /dev/zero would hang).
  MOE_ASSIGN_OR_RETURN(MappedFile file, MappedFile::Open(path));
  const absl::Span<const uint8_t> bytes = file.bytes();
  if (bytes.size() > kMaxConfigBytes) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", bytes.size(),
                                                   " bytes is too large for a config (limit ",
                                                   kMaxConfigBytes, ")"));
  }
  return FromJson(absl::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()),
                  path);
}

}  // namespace moe
