// libFuzzer target: ModelConfig::FromJson on arbitrary text. It must never crash, and a
// config it accepts must satisfy every bound the model code relies on.
// Seeds: tests/data/config_corpus.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/match.h"
#include "common/model_config.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

constexpr int64_t kMaxDim = int64_t{1} << 24;

bool InRange(int64_t v) { return v >= 1 && v <= kMaxDim; }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const auto config = moe::ModelConfig::FromJson(text, "fuzz/config.json");
  if (!config.ok()) {
    FUZZ_CHECK(absl::StartsWith(config.status().message(), "fuzz/config.json: "));
    return 0;
  }
  const moe::ModelConfig& c = *config;
  FUZZ_CHECK(InRange(c.vocab_size));
  FUZZ_CHECK(InRange(c.hidden_size));
  FUZZ_CHECK(InRange(c.intermediate_size));
  FUZZ_CHECK(InRange(c.num_hidden_layers));
  FUZZ_CHECK(InRange(c.num_attention_heads));
  FUZZ_CHECK(InRange(c.num_key_value_heads));
  FUZZ_CHECK(InRange(c.head_dim));
  FUZZ_CHECK(InRange(c.num_local_experts));
  FUZZ_CHECK(InRange(c.num_experts_per_tok));
  FUZZ_CHECK(InRange(c.max_position_embeddings));
  FUZZ_CHECK(c.num_experts_per_tok <= c.num_local_experts);
  FUZZ_CHECK(c.num_attention_heads % c.num_key_value_heads == 0);
  FUZZ_CHECK(c.head_dim % 2 == 0);
  FUZZ_CHECK(c.rope_theta > 0 && std::isfinite(c.rope_theta));
  FUZZ_CHECK(c.rms_norm_eps > 0 && std::isfinite(c.rms_norm_eps));
  FUZZ_CHECK(!c.sliding_window || InRange(*c.sliding_window));
  FUZZ_CHECK(c.bos_token_id >= 0 && c.bos_token_id < c.vocab_size);
  FUZZ_CHECK(c.eos_token_id >= 0 && c.eos_token_id < c.vocab_size);
  // Products of two sizes fit (the header's promise); UBSan checks the arithmetic.
  FUZZ_CHECK(c.q_dim() > 0 && c.kv_dim() > 0 && c.ExpertParams() > 0);
  return 0;
}
