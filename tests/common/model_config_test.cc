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
