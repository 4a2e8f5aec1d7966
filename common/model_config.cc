#include "common/model_config.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
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

  absl::Status Error(absl::string_view message) const {
    return absl::InvalidArgumentError(absl::StrCat(source_, ": ", message));
  }

 private:
  const json& j_;
  absl::string_view source_;
};

}  // namespace

int64_t ModelConfig::DenseParamsPerLayer() const {
  const int64_t attention = hidden_size * q_dim() * 2 + hidden_size * kv_dim() * 2;
  return attention + 2 * hidden_size + num_local_experts * hidden_size;
}

int64_t ModelConfig::TotalParams() const {
  const int64_t embeddings = vocab_size * hidden_size * (tie_word_embeddings ? 1 : 2);
  return embeddings + hidden_size +
         num_hidden_layers * (DenseParamsPerLayer() + num_local_experts * ExpertParams());
}

absl::StatusOr<ModelConfig> ModelConfig::FromJson(absl::string_view text,
                                                  absl::string_view source) {
  auto parsed = ParseJsonObject(text, "config");
  if (!parsed.ok()) return Annotate(parsed.status(), source);
  const json& j = *parsed;
  FieldReader r(j, source);
  ModelConfig c;

  const auto type_it = j.find("model_type");
  if (type_it != j.end() && !type_it->is_null()) {
    if (!type_it->is_string()) return r.Error("field \"model_type\" is not a string");
    c.model_type = type_it->get<std::string>();
  }
  MOE_ASSIGN_OR_RETURN(c.vocab_size, r.PositiveInt("vocab_size"));
  MOE_ASSIGN_OR_RETURN(c.hidden_size, r.PositiveInt("hidden_size"));
  MOE_ASSIGN_OR_RETURN(c.intermediate_size, r.PositiveInt("intermediate_size"));
  MOE_ASSIGN_OR_RETURN(c.num_hidden_layers, r.PositiveInt("num_hidden_layers"));
  MOE_ASSIGN_OR_RETURN(c.num_attention_heads, r.PositiveInt("num_attention_heads"));
  MOE_ASSIGN_OR_RETURN(c.num_key_value_heads,
                       r.PositiveInt("num_key_value_heads", c.num_attention_heads));
  MOE_ASSIGN_OR_RETURN(c.num_local_experts, r.PositiveInt("num_local_experts"));
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
  const auto window_it = j.find("sliding_window");
  if (window_it != j.end() && !window_it->is_null()) {
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
