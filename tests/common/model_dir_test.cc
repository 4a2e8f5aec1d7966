// ModelDir::Open on a valid random checkpoint (made by the `random_checkpoints` ctest
// fixture) copied into a temporary directory and then broken one way at a time.
#include "common/model_dir.h"

#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace moe {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;

const fs::path kCheckpoint =
    fs::path(MOE_BINARY_DIR) / "random_checkpoints" / "f32_mha_e2_top1_tied";

std::string ReadText(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void WriteText(const fs::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

// Rewrites the safetensors file `src` to `dst` without tensor `drop`, or, when `reshape` is
// given, with `drop` zero-filled in that shape instead; the rest keep their bytes, packed
// back to back.
void WriteSafetensorsWithout(const fs::path& src, const fs::path& dst, const std::string& drop,
                             const std::vector<int64_t>& reshape = {}) {
  auto file = SafetensorsFile::Open(src.string());
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_NE((*file)->Find(drop), nullptr) << drop << " not in " << src;
  json header = json::object();
  std::string data;
  for (const TensorInfo& t : (*file)->tensors()) {
    if (t.name == drop) {
      if (reshape.empty()) continue;
      int64_t count = 1;
      for (int64_t d : reshape) count *= d;
      const size_t begin = data.size();
      data.append(size_t(count) * DTypeSize(t.dtype), '\0');
      header[t.name] = {{"dtype", std::string(DTypeName(t.dtype))},
                        {"shape", reshape},
                        {"data_offsets", {begin, data.size()}}};
      continue;
    }
    const auto bytes = (*file)->Data(t);
    const size_t begin = data.size();
    data.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    header[t.name] = {{"dtype", std::string(DTypeName(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {begin, data.size()}}};
  }
  const std::string text = header.dump();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((uint64_t(text.size()) >> (8 * i)) & 0xff);
  file->reset();  // unmap before `dst` (maybe the same path) is replaced
  WriteText(dst, out + text + data);
}

// A copy of the random checkpoint in a fresh temporary directory, removed at scope exit.
class CheckpointCopy {
 public:
  explicit CheckpointCopy(const fs::path& source = kCheckpoint) {
    std::string pattern = (fs::path(::testing::TempDir()) / "model_dir_test.XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) return;
    root_ = pattern;
    for (const char* name : {"config.json", "model.safetensors"}) {
      fs::copy_file(source / name, root_ / name);
    }
  }
  ~CheckpointCopy() {
    std::error_code ec;
    if (!root_.empty()) fs::remove_all(root_, ec);
  }
  const fs::path& dir() const { return root_; }
  fs::path config_path() const { return root_ / "config.json"; }
  fs::path weights_path() const { return root_ / "model.safetensors"; }

  json Config() const { return json::parse(ReadText(config_path())); }
  void SetConfig(const json& config) const { WriteText(config_path(), config.dump(2)); }

 private:
  fs::path root_;
};

class ModelDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(kCheckpoint / "model.safetensors"))
        << kCheckpoint << " is missing: run ctest (fixture random_checkpoints)";
    ASSERT_FALSE(copy_.dir().empty());
  }

  // Opens the copy, which must fail; returns the message.
  std::string OpenError() const {
    auto dir = ModelDir::Open(copy_.dir().string());
    EXPECT_FALSE(dir.ok()) << "opened a broken model directory";
    return dir.ok() ? "" : std::string(dir.status().message());
  }

  CheckpointCopy copy_;
};

TEST_F(ModelDirTest, UnmodifiedCopyOpens) {
  auto dir = ModelDir::Open(copy_.dir().string());
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_EQ(dir->config.hidden_size, 32);
  EXPECT_TRUE(dir->config.tie_word_embeddings);
  EXPECT_TRUE(dir->tokenizer_path.empty());
  EXPECT_FALSE(dir->checkpoint->Contains(tensor_names::LmHead()));  // tied
  auto tokenizer = dir->LoadTokenizer();
  EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(ModelDirTest, HiddenSizeChangeNamesFileTensorAndBothShapes) {
  json config = copy_.Config();
  config["hidden_size"] = 48;
  copy_.SetConfig(config);
  EXPECT_THAT(OpenError(),
              AllOf(StartsWith(copy_.weights_path().string() + ": "),
                    HasSubstr("tensor \"model.embed_tokens.weight\" has shape [64, 32]"),
                    HasSubstr("config.json implies [64, 48]")));
}

TEST_F(ModelDirTest, IntermediateSizeChangeNamesTheFirstExpertTensor) {
  json config = copy_.Config();
  config["intermediate_size"] = 32;
  copy_.SetConfig(config);
  EXPECT_THAT(OpenError(),
              AllOf(StartsWith(copy_.weights_path().string() + ": "),
                    HasSubstr("\"model.layers.0.block_sparse_moe.experts.0.w1.weight\""),
                    HasSubstr("[64, 32]"), HasSubstr("implies [32, 32]")));
}

TEST_F(ModelDirTest, UntyingEmbeddingsNamesTheMissingLmHead) {
  json config = copy_.Config();
  config["tie_word_embeddings"] = false;
  copy_.SetConfig(config);
  EXPECT_THAT(OpenError(), AllOf(HasSubstr("missing tensor \"lm_head.weight\"")));
}

TEST_F(ModelDirTest, MissingExpertTensorIsNamed) {
  const std::string drop = tensor_names::Expert(ModelConfig(), 1, 1, "w2");
  WriteSafetensorsWithout(copy_.weights_path(), copy_.weights_path(), drop);
  EXPECT_THAT(OpenError(), AllOf(StartsWith(copy_.dir().string() + ": "),
                                 HasSubstr(absl::StrCat("missing tensor \"", drop, "\""))));
}

TEST_F(ModelDirTest, MissingNormTensorIsNamed) {
  WriteSafetensorsWithout(copy_.weights_path(), copy_.weights_path(), tensor_names::FinalNorm());
  EXPECT_THAT(OpenError(), HasSubstr("missing tensor \"model.norm.weight\""));
}

TEST_F(ModelDirTest, ConfigImplyingBillionsOfTensorsFailsFast) {
  // 2^24 layers of 2^24 experts: listing every implied tensor up front would never end.
  json config = copy_.Config();
  config["num_hidden_layers"] = 1 << 24;
  config["num_local_experts"] = 1 << 24;
  copy_.SetConfig(config);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_THAT(OpenError(), HasSubstr("\"model.layers.0.block_sparse_moe.gate.weight\""));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));

  config["num_local_experts"] = 2;
  copy_.SetConfig(config);
  EXPECT_THAT(OpenError(), HasSubstr("missing tensor \"model.layers.2.input_layernorm.weight\""));
}

TEST_F(ModelDirTest, BadConfigIsRefusedNamingConfigJson) {
  WriteText(copy_.config_path(), "{\"vocab_size\": ");
  EXPECT_THAT(OpenError(), AllOf(StartsWith(copy_.config_path().string() + ": "),
                                 HasSubstr("not valid JSON")));

  WriteText(copy_.config_path(), R"({"vocab_size": 64})");
  EXPECT_THAT(OpenError(), AllOf(StartsWith(copy_.config_path().string() + ": "),
                                 HasSubstr("missing field \"hidden_size\"")));
}

TEST_F(ModelDirTest, MissingConfigOrWeightsAreNamed) {
  fs::remove(copy_.weights_path());
  EXPECT_THAT(OpenError(), AllOf(StartsWith(copy_.dir().string() + ": "),
                                 HasSubstr("no model.safetensors")));
  fs::remove(copy_.config_path());
  EXPECT_THAT(OpenError(), AllOf(StartsWith(copy_.config_path().string() + ": "),
                                 HasSubstr("cannot open")));
}

TEST_F(ModelDirTest, BadSafetensorsFileIsRefusedNamingIt) {
  fs::copy_file(fs::path(MOE_SOURCE_DIR) / "tests" / "data" / "bad_safetensors" /
                    "offsets_overlapping.safetensors",
                copy_.weights_path(), fs::copy_options::overwrite_existing);
  EXPECT_THAT(OpenError(), AllOf(StartsWith(copy_.weights_path().string() + ": "),
                                 HasSubstr("overlap")));
}

TEST(ModelDirPathTest, NonDirectoryIsRefused) {
  const auto dir = ModelDir::Open("/nonexistent/model/dir");
  ASSERT_FALSE(dir.ok());
  EXPECT_THAT(std::string(dir.status().message()),
              StartsWith("/nonexistent/model/dir: not a directory"));
}

// Malformed tensors of the other families get clean errors naming the tensor.
class FamilyTensorTest : public ::testing::Test {
 protected:
  static fs::path Source(const char* name) {
    return fs::path(MOE_BINARY_DIR) / "random_checkpoints" / name;
  }
  static std::string OpenError(const CheckpointCopy& copy) {
    auto dir = ModelDir::Open(copy.dir().string());
    EXPECT_FALSE(dir.ok()) << "opened a broken model directory";
    return dir.ok() ? "" : std::string(dir.status().message());
  }
};

TEST_F(FamilyTensorTest, EveryFamilyCheckpointOpens) {
  for (const char* name : {"qwen2_moe_f32_shared_dense", "qwen3_moe_f32_e16_top4", "olmoe_f32_clip"}) {
    auto dir = ModelDir::Open(Source(name).string());
    EXPECT_TRUE(dir.ok()) << name << ": " << dir.status();
  }
}

TEST_F(FamilyTensorTest, MissingSharedExpertGateIsNamed) {
  const CheckpointCopy copy(Source("qwen2_moe_f32_shared_dense"));
  const std::string drop = tensor_names::Layer(0, "mlp.shared_expert_gate.weight");
  WriteSafetensorsWithout(copy.weights_path(), copy.weights_path(), drop);
  EXPECT_THAT(OpenError(copy), HasSubstr(absl::StrCat("missing tensor \"", drop, "\"")));
}

TEST_F(FamilyTensorTest, QNormOfTheWrongSizeIsNamed) {
  const CheckpointCopy copy(Source("qwen3_moe_f32_e16_top4"));
  const std::string name = tensor_names::Layer(1, "self_attn.q_norm.weight");
  WriteSafetensorsWithout(copy.weights_path(), copy.weights_path(), name, {8});
  EXPECT_THAT(OpenError(copy),
              AllOf(HasSubstr(absl::StrCat("tensor \"", name, "\" has shape [8]")),
                    HasSubstr("config.json implies [16]")));
}

TEST_F(FamilyTensorTest, WholeKNormOfTheWrongSizeIsNamed) {
  const CheckpointCopy copy(Source("olmoe_f32_clip"));
  const std::string name = tensor_names::Layer(0, "self_attn.k_norm.weight");
  WriteSafetensorsWithout(copy.weights_path(), copy.weights_path(), name, {8});  // head_dim
  EXPECT_THAT(OpenError(copy), HasSubstr("config.json implies [32]"));  // kv_dim
}

TEST_F(FamilyTensorTest, TopKAboveTheExpertCountIsRefused) {
  const CheckpointCopy copy(Source("qwen3_moe_f32_e16_top4"));
  json config = copy.Config();
  config["num_experts_per_tok"] = 17;
  copy.SetConfig(config);
  EXPECT_THAT(OpenError(copy), AllOf(StartsWith(copy.config_path().string() + ": "),
                                     HasSubstr("num_experts_per_tok 17 exceeds num_local_experts 16")));
}

}  // namespace
}  // namespace moe
