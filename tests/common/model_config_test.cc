// config.json parsing: valid configs and their defaults, and every way a config can be bad,
// each refused with a message that names the file and the field.
#include "common/model_config.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"
#include "nlohmann/json.hpp"

namespace moe {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;

using testing_util::ScopedTempDir;

// Writes `text` to DIR/config.json and parses it with FromFile.
absl::StatusOr<ModelConfig> ParseViaFile(const ScopedTempDir& dir, const std::string& text) {
  const fs::path path = dir.path() / "config.json";
  std::ofstream(path, std::ios::binary) << text;
  return ModelConfig::FromFile(path.string());
}

json ValidConfig() {
  return json::parse(R"({
    "model_type": "mixtral", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "num_local_experts": 4, "num_experts_per_tok": 2, "max_position_embeddings": 256,
    "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": false,
    "sliding_window": null, "bos_token_id": 1, "eos_token_id": 2})");
}

const char* const kRequiredFields[] = {"vocab_size",          "hidden_size",
                                       "intermediate_size",   "num_hidden_layers",
                                       "num_attention_heads", "num_local_experts",
                                       "num_experts_per_tok"};

// Fields that must be integers in [1, 2^24] when present.
const char* const kPositiveFields[] = {
    "vocab_size",          "hidden_size",         "intermediate_size",
    "num_hidden_layers",   "num_attention_heads", "num_key_value_heads",
    "num_local_experts",   "num_experts_per_tok", "max_position_embeddings",
    "head_dim",            "sliding_window"};

// ---------------------------------------------------------------------------------------
// Valid configs.

TEST(ModelConfigTest, ValidConfigParsesEveryField) {
  ScopedTempDir tmp;
  auto c = ParseViaFile(tmp, ValidConfig().dump(2));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model_type, "mixtral");
  EXPECT_EQ(c->vocab_size, 64);
  EXPECT_EQ(c->hidden_size, 32);
  EXPECT_EQ(c->intermediate_size, 64);
  EXPECT_EQ(c->num_hidden_layers, 2);
  EXPECT_EQ(c->num_attention_heads, 4);
  EXPECT_EQ(c->num_key_value_heads, 2);
  EXPECT_EQ(c->head_dim, 8);  // hidden_size / num_attention_heads
  EXPECT_EQ(c->num_local_experts, 4);
  EXPECT_EQ(c->num_experts_per_tok, 2);
  EXPECT_EQ(c->max_position_embeddings, 256);
  EXPECT_DOUBLE_EQ(c->rope_theta, 10000.0);
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-6);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_FALSE(c->sliding_window.has_value());
  EXPECT_EQ(c->bos_token_id, 1);
  EXPECT_EQ(c->eos_token_id, 2);
  EXPECT_EQ(c->q_dim(), 32);
  EXPECT_EQ(c->kv_dim(), 16);
  EXPECT_EQ(c->ExpertParams(), 3 * 32 * 64);
}

TEST(ModelConfigTest, ExplicitHeadDimWindowAndTieAreHonoured) {
  json j = ValidConfig();
  j["head_dim"] = 16;
  j["sliding_window"] = 8;
  j["tie_word_embeddings"] = true;
  auto c = ModelConfig::FromJson(j.dump());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 16);
  EXPECT_EQ(c->q_dim(), 64);  // need not equal hidden_size
  EXPECT_EQ(c->kv_dim(), 32);
  EXPECT_EQ(c->sliding_window, 8);
  EXPECT_TRUE(c->tie_word_embeddings);

  // head_dim makes a hidden_size that heads do not divide usable.
  j["hidden_size"] = 30;
  c = ModelConfig::FromJson(j.dump());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 16);
}

TEST(ModelConfigTest, OptionalFieldsTakeTheirDefaults) {
  const json full = ValidConfig();
  json j;
  for (const char* key : kRequiredFields) j[key] = full[key];
  auto c = ModelConfig::FromJson(j.dump());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model_type, "");
  EXPECT_EQ(c->num_key_value_heads, c->num_attention_heads);
  EXPECT_EQ(c->head_dim, 8);
  EXPECT_EQ(c->max_position_embeddings, 4096);
  EXPECT_DOUBLE_EQ(c->rope_theta, 1e6);
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-5);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_FALSE(c->sliding_window.has_value());
  EXPECT_EQ(c->bos_token_id, 1);
  EXPECT_EQ(c->eos_token_id, 2);

  // null is the same as absent.
  for (const char* key : {"num_key_value_heads", "head_dim", "max_position_embeddings",
                          "rope_theta", "rms_norm_eps", "tie_word_embeddings", "bos_token_id",
                          "eos_token_id", "model_type", "sliding_window"}) {
    json with_null = j;
    with_null[key] = nullptr;
    auto n = ModelConfig::FromJson(with_null.dump());
    ASSERT_TRUE(n.ok()) << key << ": " << n.status();
    EXPECT_EQ(n->head_dim, 8) << key;
    EXPECT_EQ(n->max_position_embeddings, 4096) << key;
  }
}

TEST(ModelConfigTest, ValidConfigsInTheFuzzSeedCorpusParse) {
  const fs::path dir = fs::path(MOE_SOURCE_DIR) / "tests" / "data" / "config_corpus";
  for (const char* name : {"valid.json", "valid_head_dim_window.json", "minimal.json"}) {
    const auto c = ModelConfig::FromFile((dir / name).string());
    EXPECT_TRUE(c.ok()) << name << ": " << c.status();
  }
}

// ---------------------------------------------------------------------------------------
// Bad configs. Each is written to a file and read with FromFile: the message must start
// with the file's path and name the field.

struct BadConfig {
  std::string name;
  std::string text;      // the whole config.json
  std::string expected;  // substring of the message after "PATH: "
};

std::string With(const char* key, json value) {
  json j = ValidConfig();
  j[key] = std::move(value);
  return j.dump();
}

std::string Without(const char* key) {
  json j = ValidConfig();
  j.erase(key);
  return j.dump();
}

std::vector<BadConfig> BadConfigs() {
  std::vector<BadConfig> cases = {
      {"not_json", "{\"vocab_size\": 64,", "config is not valid JSON"},
      {"empty_file", "", "config is not valid JSON"},
      {"binary", std::string("\xff\xfe\0\x01", 4), "config is not valid JSON"},
      {"array", "[1, 2, 3]", "config is not a JSON object"},
      {"string", "\"mixtral\"", "config is not a JSON object"},
      {"deeply_nested", "{\"x\": " + std::string(100, '[') + std::string(100, ']') + "}",
       "nests JSON deeper than"},
      {"experts_per_token_exceeds_experts", With("num_experts_per_tok", 5),
       "num_experts_per_tok 5 exceeds num_local_experts 4"},
      {"heads_not_multiple_of_kv_heads", With("num_key_value_heads", 3),
       "num_attention_heads 4 is not a multiple of num_key_value_heads 3"},
      {"kv_heads_exceed_heads", With("num_key_value_heads", 8),
       "num_attention_heads 4 is not a multiple of num_key_value_heads 8"},
      {"odd_explicit_head_dim", With("head_dim", 15), "head_dim 15 must be even"},
      {"odd_derived_head_dim", With("hidden_size", 36), "head_dim 9 must be even"},
      {"hidden_not_divisible_by_heads", With("hidden_size", 30),
       "hidden_size 30 is not divisible by num_attention_heads 4 and no head_dim is given"},
      {"hidden_not_divisible_by_heads_head_dim_null",
       [] {
         json j = ValidConfig();
         j["hidden_size"] = 30;
         j["head_dim"] = nullptr;
         return j.dump();
       }(),
       "hidden_size 30 is not divisible by num_attention_heads 4"},
      {"bos_out_of_vocab", With("bos_token_id", 64),
       "field \"bos_token_id\" 64 is outside the vocabulary [0, 64)"},
      {"eos_negative", With("eos_token_id", -1),
       "field \"eos_token_id\" -1 is outside the vocabulary [0, 64)"},
      {"bos_past_int64", With("bos_token_id", json(uint64_t{1} << 63)),
       "field \"bos_token_id\" is out of range: 9223372036854775808"},
      {"bos_not_integer", With("bos_token_id", "1"), "field \"bos_token_id\" is not an integer"},
      {"rope_theta_zero", With("rope_theta", 0), "field \"rope_theta\" must be positive, got 0"},
      {"rope_theta_negative", With("rope_theta", -1e4), "field \"rope_theta\" must be positive"},
      {"rope_theta_string", With("rope_theta", "1e6"), "field \"rope_theta\" is not a number"},
      {"rms_norm_eps_negative", With("rms_norm_eps", -1e-5),
       "field \"rms_norm_eps\" must be positive"},
      {"tie_not_boolean", With("tie_word_embeddings", 1),
       "field \"tie_word_embeddings\" is not a boolean"},
      {"model_type_not_string", With("model_type", 7), "field \"model_type\" is not a string"},
  };
  for (const char* key : kRequiredFields) {
    cases.push_back({absl::StrCat("missing_", key), Without(key),
                     absl::StrCat("missing field \"", key, "\"")});
    cases.push_back({absl::StrCat("null_", key), With(key, nullptr),
                     absl::StrCat("missing field \"", key, "\"")});
  }
  for (const char* key : kPositiveFields) {
    const std::string field = absl::StrCat("field \"", key, "\"");
    cases.push_back({absl::StrCat("zero_", key), With(key, 0),
                     absl::StrCat(field, " must be in [1, 16777216], got 0")});
    cases.push_back({absl::StrCat("negative_", key), With(key, -4),
                     absl::StrCat(field, " must be in [1, 16777216], got -4")});
    cases.push_back({absl::StrCat("huge_", key), With(key, json(uint64_t{1} << 40)),
                     absl::StrCat(field, " must be in [1, 16777216], got 1099511627776")});
    cases.push_back({absl::StrCat("past_int64_", key), With(key, json(~uint64_t{0})),
                     absl::StrCat(field, " must be in [1, 16777216], got 18446744073709551615")});
    cases.push_back({absl::StrCat("fraction_", key), With(key, 32.5),
                     absl::StrCat(field, " is not an integer: 32.5")});
    cases.push_back({absl::StrCat("string_", key), With(key, "32"),
                     absl::StrCat(field, " is not an integer: \"32\"")});
    cases.push_back({absl::StrCat("bool_", key), With(key, true),
                     absl::StrCat(field, " is not an integer: true")});
  }
  return cases;
}

TEST(ModelConfigTest, EachBadConfigIsRefusedNamingTheFileAndTheField) {
  for (const BadConfig& bad : BadConfigs()) {
    SCOPED_TRACE(bad.name);
    ScopedTempDir tmp;
    const auto c = ParseViaFile(tmp, bad.text);
    ASSERT_FALSE(c.ok()) << "accepted: " << bad.text;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(c.status().message()),
                AllOf(StartsWith((tmp.path() / "config.json").string() + ": "),
                      HasSubstr(bad.expected)));
  }
}

// ---------------------------------------------------------------------------------------
// Families: model_type and architectures pick one; unknown ones are refused naming the
// supported set; each family's fields under its own names and defaults.

json Qwen3Config() {
  return json::parse(R"({
    "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "vocab_size": 64,
    "hidden_size": 32, "intermediate_size": 96, "moe_intermediate_size": 16,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
    "num_experts": 16, "num_experts_per_tok": 4, "norm_topk_prob": true,
    "sliding_window": 4096, "use_sliding_window": false, "hidden_act": "silu"})");
}

TEST(ModelFamilyConfigTest, Qwen3MoeReadsItsOwnFieldNames) {
  const auto c = ModelConfig::FromJson(Qwen3Config().dump());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->family, ModelFamily::kQwen3Moe);
  EXPECT_EQ(c->num_local_experts, 16);
  EXPECT_EQ(c->intermediate_size, 16);  // moe_intermediate_size: the expert width
  EXPECT_EQ(c->head_dim, 16);
  EXPECT_EQ(c->q_dim(), 64);
  EXPECT_EQ(c->qk_norm, QkNorm::kPerHead);
  EXPECT_TRUE(c->norm_topk_prob);
  EXPECT_FALSE(c->qkv_bias);
  EXPECT_FALSE(c->sliding_window.has_value());  // only with use_sliding_window
  EXPECT_EQ(c->num_expert_layers(), 2);
}

TEST(ModelFamilyConfigTest, Qwen2MoeDenseLayersAndSharedExpert) {
  json j = Qwen3Config();
  j["model_type"] = "qwen2_moe";
  j["architectures"] = {"Qwen2MoeForCausalLM"};
  j.erase("norm_topk_prob");
  j["num_hidden_layers"] = 6;
  j["decoder_sparse_step"] = 2;
  j["mlp_only_layers"] = {3};
  j["shared_expert_intermediate_size"] = 40;
  const auto c = ModelConfig::FromJson(j.dump());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->family, ModelFamily::kQwen2Moe);
  EXPECT_TRUE(c->qkv_bias);
  EXPECT_FALSE(c->norm_topk_prob);  // HF's default
  EXPECT_EQ(c->shared_expert_intermediate_size, 40);
  EXPECT_EQ(c->dense_intermediate_size, 96);
  // Sparse: (l + 1) % 2 == 0 and not in mlp_only_layers: layers 1 and 5.
  EXPECT_EQ(c->num_expert_layers(), 2);
  const std::vector<int> expert_layers = {-1, 0, -1, -1, -1, 1};
  for (int l = 0; l < 6; ++l) EXPECT_EQ(c->ExpertLayer(l), expert_layers[l]) << l;
  EXPECT_EQ(c->DecoderLayer(0), 1);
  EXPECT_EQ(c->DecoderLayer(1), 5);
  EXPECT_EQ(c->DecoderLayer(2), -1);
}

TEST(ModelFamilyConfigTest, OlmoeReadsClipAndWholeQkNorms) {
  const auto c = ModelConfig::FromJson(R"({
    "architectures": ["OlmoeForCausalLM"], "model_type": "olmoe", "vocab_size": 64,
    "hidden_size": 32, "intermediate_size": 24, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_experts": 8, "num_experts_per_tok": 2,
    "clip_qkv": 8.0})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->family, ModelFamily::kOlmoe);
  EXPECT_EQ(c->qk_norm, QkNorm::kWhole);
  EXPECT_FALSE(c->norm_topk_prob);
  ASSERT_TRUE(c->clip_qkv.has_value());
  EXPECT_EQ(*c->clip_qkv, 8.0);
  EXPECT_EQ(c->intermediate_size, 24);
}

TEST(ModelFamilyConfigTest, NoModelTypeIsMixtralAndArchitecturesAloneChooseTheFamily) {
  json j = ValidConfig();
  j.erase("model_type");
  auto c = ModelConfig::FromJson(j.dump());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->family, ModelFamily::kMixtral);
  json q = Qwen3Config();
  q.erase("model_type");
  c = ModelConfig::FromJson(q.dump());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->family, ModelFamily::kQwen3Moe);
  EXPECT_EQ(c->model_type, "qwen3_moe");
}

TEST(ModelFamilyConfigTest, UnsupportedOrInconsistentFamiliesAreRefused) {
  struct Case {
    std::string name, text, expected;
  };
  json deepseek = ValidConfig();
  deepseek["model_type"] = "deepseek_v3";
  json gpt_oss = ValidConfig();
  gpt_oss.erase("model_type");
  gpt_oss["architectures"] = {"GptOssForCausalLM"};
  json disagree = Qwen3Config();
  disagree["architectures"] = {"OlmoeForCausalLM"};
  json top_k = Qwen3Config();
  top_k["num_experts_per_tok"] = 17;
  json gelu = Qwen3Config();
  gelu["hidden_act"] = "gelu";
  json window = Qwen3Config();
  window["use_sliding_window"] = true;
  json bias = Qwen3Config();
  bias["attention_bias"] = true;
  json shared_missing = Qwen3Config();
  shared_missing["model_type"] = "qwen2_moe";
  shared_missing.erase("architectures");
  json all_dense = Qwen3Config();
  all_dense["mlp_only_layers"] = {0, 1};
  json bad_layer = Qwen3Config();
  bad_layer["mlp_only_layers"] = {2};
  json clip = ValidConfig();
  clip["model_type"] = "olmoe";
  clip["num_experts"] = 4;
  clip["clip_qkv"] = -1;
  const std::vector<Case> cases = {
      {"unknown model_type", deepseek.dump(),
       "model_type \"deepseek_v3\" is not supported; supported: mixtral, qwen2_moe, qwen3_moe, "
       "olmoe"},
      {"unknown architecture", gpt_oss.dump(),
       "architecture \"GptOssForCausalLM\" is not supported; supported model types: mixtral"},
      {"disagreeing", disagree.dump(),
       "model_type \"qwen3_moe\" disagrees with architecture \"OlmoeForCausalLM\""},
      {"top-k above experts", top_k.dump(), "num_experts_per_tok 17 exceeds num_local_experts 16"},
      {"activation", gelu.dump(), "hidden_act \"gelu\" is not supported"},
      {"sliding window", window.dump(), "use_sliding_window true is not supported"},
      {"attention bias", bias.dump(), "attention_bias true is not supported"},
      {"qwen2 without shared expert width", shared_missing.dump(),
       "missing field \"shared_expert_intermediate_size\""},
      {"no sparse layer", all_dense.dump(), "no layer has routed experts"},
      {"mlp_only_layers out of range", bad_layer.dump(),
       "field \"mlp_only_layers\" holds 2, not a layer index in [0, 2)"},
      {"negative clip", clip.dump(), "field \"clip_qkv\" must be positive"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const auto parsed = ModelConfig::FromJson(c.text);
    ASSERT_FALSE(parsed.ok());
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(parsed.status().message()), HasSubstr(c.expected));
  }
}

TEST(ModelConfigTest, FromJsonNamesTheSourceItIsGiven) {
  const auto c = ModelConfig::FromJson(With("hidden_size", 0), "some/dir/config.json");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()),
              StartsWith("some/dir/config.json: field \"hidden_size\""));
}

TEST(ModelConfigTest, MissingFileDirectoryAndFifoAreRefusedWithoutBlocking) {
  ScopedTempDir tmp;
  const fs::path missing = tmp.path() / "config.json";
  auto c = ModelConfig::FromFile(missing.string());
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(c.status().message()), StartsWith(missing.string() + ": "));

  fs::create_directory(missing);
  c = ModelConfig::FromFile(missing.string());
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()),
              AllOf(StartsWith(missing.string() + ": "), HasSubstr("not a regular file")));

  // A named pipe with no writer: reading it would block forever.
  const fs::path fifo = tmp.path() / "fifo.json";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  c = ModelConfig::FromFile(fifo.string());
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("not a regular file"));
}

TEST(ModelConfigTest, OversizedFileIsRefused) {
  ScopedTempDir tmp;
  json j = ValidConfig();
  j["padding"] = std::string(2 << 20, 'x');
  const auto c = ParseViaFile(tmp, j.dump());
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("too large"));
}

}  // namespace
}  // namespace moe
