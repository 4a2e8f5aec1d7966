// Converted models (the `converted_models` ctest fixture converts the bundled model with
// `moe convert`) against the original: 16/16 reproduces the fp32 logits, 4/3 stays close
// in perplexity with HQQ at or below round-to-nearest, the worker's cache moves the
// packed blob, and every cache size gives the same logits.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "coordinator/generator.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tools/cli/convert.h"
#include "tools/cli/local_engine.h"
#include "tools/cli/perplexity.h"
#include "tests/test_util.h"

namespace moe {
namespace {

namespace fs = std::filesystem;
using coordinator::KvCache;
using coordinator::MixtralModel;

const fs::path kOriginal = fs::path(MOE_SOURCE_DIR) / "models" / "kjv-moe";
const fs::path kConverted = fs::path(MOE_BINARY_DIR) / "converted";

std::vector<float> Logits(LocalEngine& engine, const std::vector<int>& tokens) {
  KvCache cache(engine.config(), tokens.size());
  std::vector<float> logits;
  const absl::Status s = engine.model().Forward(tokens, cache, MixtralModel::Logits::kAll, &logits);
  EXPECT_TRUE(s.ok()) << s;
  return logits;
}

std::unique_ptr<LocalEngine> OpenOrDie(const fs::path& dir, int cache_per_layer = 0) {
  auto engine = LocalEngine::Open(dir.string(), cache_per_layer);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? std::move(*engine) : nullptr;
}

std::vector<int> HeldOutTokens(LocalEngine& engine, size_t count) {
  std::ifstream in(kOriginal / "heldout.txt");
  std::stringstream text;
  text << in.rdbuf();
  auto tokenizer = engine.dir().LoadTokenizer();
  EXPECT_TRUE(tokenizer.ok());
  auto ids = (*tokenizer)->Encode(text.str(), false);
  EXPECT_TRUE(ids.ok());
  ids->resize(std::min(ids->size(), count));
  return *ids;
}

const std::vector<int> kPrompt = {1, 415, 28705, 17, 302, 13, 28, 99, 5, 400, 1200, 77};

std::vector<int> ClampToVocab(std::vector<int> ids, int64_t vocab) {
  for (int& id : ids) id %= vocab;
  return ids;
}

TEST(ConvertedModelTest, SixteenBitConversionReproducesTheOriginalLogits) {
  auto original = OpenOrDie(kOriginal);
  auto converted = OpenOrDie(kConverted / "bf16");
  ASSERT_TRUE(original && converted);
  ASSERT_NE(converted->dir().offload, nullptr);
  const auto tokens = ClampToVocab(kPrompt, original->config().vocab_size);
  const auto a = Logits(*original, tokens), b = Logits(*converted, tokens);
  ASSERT_EQ(a.size(), b.size());
  double max_err = 0, max_ref = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    max_err = std::max(max_err, double(std::fabs(a[i] - b[i])));
    max_ref = std::max(max_ref, double(std::fabs(a[i])));
  }
  // BF16 weights stored as BF16: only summation order differs.
  EXPECT_LT(max_err / max_ref, 1e-5);
}

TEST(ConvertedModelTest, FourThreeHqqPerplexityIsCloseToFp32AndNoWorseThanRtn) {
  auto original = OpenOrDie(kOriginal);
  auto hqq = OpenOrDie(kConverted / "hqq_4_3");
  auto rtn = OpenOrDie(kConverted / "rtn_4_3");
  ASSERT_TRUE(original && hqq && rtn);
  const std::vector<int> stream = HeldOutTokens(*original, 4096);
  auto p_fp32 = ComputePerplexity(original->model(), stream, 128);
  auto p_hqq = ComputePerplexity(hqq->model(), stream, 128);
  auto p_rtn = ComputePerplexity(rtn->model(), stream, 128);
  ASSERT_TRUE(p_fp32.ok() && p_hqq.ok() && p_rtn.ok());
  std::printf("perplexity over %zu held-out tokens: fp32 %.3f, 4/3 hqq %.3f, 4/3 rtn %.3f\n",
              stream.size(), p_fp32->perplexity, p_hqq->perplexity, p_rtn->perplexity);
  EXPECT_LT(p_hqq->perplexity, p_fp32->perplexity * 1.10);
  // The kernels' int8 activations (quant_kernels.h) move each model's perplexity by about
  // 0.02% (whole held-out text: HQQ 28.673 -> 28.678, RTN 28.730 -> 28.727), as much as
  // the two quantizers differ on these 4096 tokens (21.228 against 21.223 with them), so
  // the ranking allows that much; the weight errors below rank them exactly.
  EXPECT_LE(p_hqq->perplexity, p_rtn->perplexity * 1.0005);
  EXPECT_LT(hqq->dir().offload->manifest().expert_rel_error,
            rtn->dir().offload->manifest().expert_rel_error);
}

TEST(ConvertedModelTest, ExpertCacheCopiesThePackedBlobAndEveryCacheSizeAgrees) {
  auto full = OpenOrDie(kConverted / "hqq_4_3");
  ASSERT_TRUE(full);
  const auto& m = full->dir().offload->manifest();
  EXPECT_EQ(full->cache()->store().blob_bytes(), size_t(m.expert.blob_bytes));
  // 3-bit experts: a copy moves well under a fifth of the fp32 blob.
  EXPECT_LT(m.expert.blob_bytes * 5, 4 * full->config().ExpertParams());
  const auto tokens = ClampToVocab(kPrompt, full->config().vocab_size);
  const auto expected = Logits(*full, tokens);
  for (int slots : {1, 2, 5}) {
    auto small = OpenOrDie(kConverted / "hqq_4_3", slots);
    ASSERT_TRUE(small);
    EXPECT_EQ(Logits(*small, tokens), expected) << slots << " slots";
    const auto stats = small->cache()->Stats();
    EXPECT_GT(stats.total.misses, 0u);
    EXPECT_EQ(stats.total.bytes_copied, stats.total.misses * uint64_t(m.expert.blob_bytes));
  }
}

TEST(ConvertedModelTest, SizeFormulasGiveTheBytesConvertWrote) {
  for (const char* name : {"hqq_4_3", "bf16"}) {
    auto dir = ModelDir::Open((kConverted / name).string());
    ASSERT_TRUE(dir.ok()) << dir.status();
    const quant::OffloadManifest& m = dir->offload->manifest();
    auto sizes = ComputeSchemeSizes(m.config, m.attn_spec.bits, m.expert_spec.bits,
                                    m.expert_spec.group_size, m.dtype16);
    ASSERT_TRUE(sizes.ok());
    EXPECT_EQ(sizes->dense_bytes, int64_t(fs::file_size(kConverted / name / "dense.bin"))) << name;
    EXPECT_EQ(sizes->experts_bytes, int64_t(fs::file_size(kConverted / name / "experts.bin"))) << name;
    EXPECT_EQ(sizes->expert_blob_bytes, m.expert.blob_bytes) << name;
  }
}

TEST(ConvertTest, BadOptionsAreRejectedNamingTheOption) {
  ConvertOptions o;
  o.in_dir = kOriginal.string();
  o.out_dir = ::testing::TempDir() + "/never_written";
  o.attn_bits = 3;
  EXPECT_THAT(std::string(Convert(o).status().message()), ::testing::HasSubstr("--attn-bits 3"));
  o.attn_bits = 4;
  o.expert_bits = 5;
  EXPECT_THAT(std::string(Convert(o).status().message()), ::testing::HasSubstr("--expert-bits 5"));
  o.expert_bits = 3;
  o.group_size = 96;  // a multiple of 32 that does not divide 256
  EXPECT_THAT(std::string(Convert(o).status().message()),
              ::testing::HasSubstr("does not divide the input dimension 256"));
  o.group_size = 64;
  o.in_dir = (kConverted / "hqq_4_3").string();
  EXPECT_THAT(std::string(Convert(o).status().message()), ::testing::HasSubstr("already converted"));
  EXPECT_FALSE(fs::exists(o.out_dir + "/manifest.json"));
}

TEST(ConvertedModelTest, PrefillAndTokenByTokenDecodeAgree) {
  auto engine = OpenOrDie(kConverted / "hqq_4_3");
  ASSERT_TRUE(engine);
  const auto tokens = ClampToVocab(kPrompt, engine->config().vocab_size);
  const auto all = Logits(*engine, tokens);
  KvCache cache(engine->config(), tokens.size());
  const int64_t v = engine->config().vocab_size;
  std::vector<float> step;
  for (size_t t = 0; t < tokens.size(); ++t) {
    ASSERT_TRUE(engine->model().Forward({&tokens[t], 1}, cache, MixtralModel::Logits::kLast, &step).ok());
    for (int64_t j = 0; j < v; ++j) ASSERT_NEAR(step[j], all[t * v + j], 2e-4) << t << " " << j;
  }
}

// Every random checkpoint shape (GQA ratios, tied embeddings, explicit head_dim, F32/F16/
// BF16, sharded, sliding window) converts and runs: 16/16 reproduces the original's
// logits (exactly stored for BF16/F16 sources; F32 sources are rounded to BF16), and
// 4/4 with group 32 runs where 32 divides the dimensions and is refused naming the
// dimension where it does not.
class ConvertShapesTest : public ::testing::TestWithParam<const char*> {};

TEST_P(ConvertShapesTest, SixteenBitReproducesAndFourBitRunsOrIsRefused) {
  const fs::path source = fs::path(MOE_BINARY_DIR) / "random_checkpoints" / GetParam();
  testing_util::ScopedTempDir tmp("convert_shapes");
  ConvertOptions o;
  o.in_dir = source.string();
  o.out_dir = (tmp.path() / "16").string();
  o.attn_bits = o.expert_bits = 16;
  o.progress = false;
  auto m = Convert(o);
  ASSERT_TRUE(m.ok()) << m.status();
  auto original = OpenOrDie(source);
  auto converted = OpenOrDie(o.out_dir);
  ASSERT_TRUE(original && converted);
  const auto tokens = ClampToVocab(kPrompt, original->config().vocab_size);
  const auto a = Logits(*original, tokens), b = Logits(*converted, tokens);
  double max_err = 0, max_ref = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    max_err = std::max(max_err, double(std::fabs(a[i] - b[i])));
    max_ref = std::max(max_ref, double(std::fabs(a[i])));
  }
  const bool f32_source = std::string(GetParam()).find("f32") != std::string::npos;
  EXPECT_LT(max_err / max_ref, f32_source ? 3e-2 : 1e-4);

  o.out_dir = (tmp.path() / "4").string();
  o.attn_bits = o.expert_bits = 4;
  o.group_size = 32;
  const ModelConfig& c = original->config();
  const bool divides = c.hidden_size % 32 == 0 && c.intermediate_size % 32 == 0 && c.q_dim() % 32 == 0;
  auto q = Convert(o);
  if (!divides) {
    ASSERT_FALSE(q.ok());
    EXPECT_THAT(std::string(q.status().message()), ::testing::HasSubstr("does not divide the input dimension"));
    return;
  }
  ASSERT_TRUE(q.ok()) << q.status();
  auto quantized = OpenOrDie(o.out_dir, 1);
  ASSERT_TRUE(quantized);
  const auto l4 = Logits(*quantized, tokens);
  for (float v : l4) ASSERT_TRUE(std::isfinite(v));
}

INSTANTIATE_TEST_SUITE_P(RandomCheckpoints, ConvertShapesTest,
                         ::testing::Values("bf16_gqa4_e8_top2", "bf16_sharded_gqa4_e4_top1",
                                           "f16_gqa2_e4_top2", "f16_sliding5_gqa2_e8_top2",
                                           "f32_headdim16_e4_top2_tied", "f32_mha_e2_top1_tied"));

// The other families: their extra tensors (biases, q/k norms, shared experts, dense MLP
// layers) travel in dense.bin, their experts by expert layer in experts.bin. BF16 sources
// only: rounding an F32 family source to BF16 moves the routing of these random weights
// (olmoe_f32_clip: 0.197 relative on this prompt, in PyTorch as here), so its 16/16
// logits say nothing about the conversion.
INSTANTIATE_TEST_SUITE_P(Families, ConvertShapesTest,
                         ::testing::Values("qwen2_moe_bf16_sharded_step2", "qwen3_moe_bf16_sharded",
                                           "olmoe_bf16_sharded"));

}  // namespace
}  // namespace moe
