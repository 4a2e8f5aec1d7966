// The forward pass against an independent reference: PyTorch (tools/mixtral_torch.py)
// logits and greedy continuations for the bundled model and for randomly initialised
// checkpoints of other shapes, made by tools/make_random_checkpoints.py at test time.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/backend/cpu/cpu_kernels.h"
#include "common/npy.h"
#include "coordinator/generator.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tools/cli/local_engine.h"

namespace moe {
namespace {

namespace fs = std::filesystem;
using coordinator::KvCache;
using coordinator::MixtralModel;

nlohmann::json ReadJson(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return nlohmann::json::parse(text.str());
}

// max |a - b| relative to max |b|: the criterion is < 1e-4.
double RelativeMaxError(const std::vector<float>& actual, const std::vector<float>& expected) {
  double max_err = 0, max_ref = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    max_err = std::max(max_err, double(std::fabs(actual[i] - expected[i])));
    max_ref = std::max(max_ref, double(std::fabs(expected[i])));
  }
  return max_err / max_ref;
}

constexpr double kTolerance = 1e-4;

// Checks every reference case of the model in `dir` (reference.json beside the .npy).
void CheckModelAgainstReference(const fs::path& model_dir, const fs::path& reference_dir) {
  auto engine = LocalEngine::Open(model_dir.string());
  ASSERT_TRUE(engine.ok()) << engine.status();
  MixtralModel& model = (*engine)->model();
  const int64_t vocab = model.config().vocab_size;
  const nlohmann::json ref = ReadJson(reference_dir / "reference.json");
  ASSERT_FALSE(ref["cases"].empty());

  for (const auto& c : ref["cases"]) {
    const std::vector<int> tokens = c["tokens"].get<std::vector<int>>();
    auto expected = ReadNpyF32((reference_dir / c["logits"].get<std::string>()).string());
    ASSERT_TRUE(expected.ok()) << expected.status();
    ASSERT_EQ(expected->shape, (std::vector<int64_t>{int64_t(tokens.size()), vocab}));

    // Prefill: all positions in one pass.
    KvCache cache(model.config(), tokens.size());
    std::vector<float> logits;
    ASSERT_TRUE(model.Forward(tokens, cache, MixtralModel::Logits::kAll, &logits).ok());
    EXPECT_LT(RelativeMaxError(logits, expected->data), kTolerance)
        << model_dir << " prefill, " << tokens.size() << " tokens";
    for (size_t t = 0; t < tokens.size(); ++t) {  // and the same argmax at every position
      const float* got = logits.data() + t * vocab;
      const float* want = expected->data.data() + t * vocab;
      EXPECT_EQ(std::max_element(got, got + vocab) - got, std::max_element(want, want + vocab) - want)
          << model_dir << " argmax at position " << t;
    }

    // Half prefill, then one token at a time through the KV cache.
    KvCache cache2(model.config(), tokens.size());
    const size_t half = tokens.size() / 2;
    std::vector<float> stepped;
    ASSERT_TRUE(model.Forward(absl::MakeConstSpan(tokens).first(half), cache2,
                              MixtralModel::Logits::kAll, &logits).ok());
    stepped = logits;
    for (size_t t = half; t < tokens.size(); ++t) {
      ASSERT_TRUE(model.Forward(absl::MakeConstSpan(&tokens[t], 1), cache2,
                                MixtralModel::Logits::kLast, &logits).ok());
      stepped.insert(stepped.end(), logits.begin(), logits.end());
    }
    EXPECT_LT(RelativeMaxError(stepped, expected->data), kTolerance)
        << model_dir << " incremental decode";
  }

  for (const auto& g : ref["greedy"]) {
    const std::vector<int> prompt = g["prompt_tokens"].get<std::vector<int>>();
    const std::vector<int> expected = g["tokens"].get<std::vector<int>>();
    coordinator::GenerateOptions options;
    options.max_new_tokens = g["max_new_tokens"].get<int>();
    options.sampling.temperature = 0;
    auto result = coordinator::Generate(model, prompt, options, nullptr);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->tokens, expected) << model_dir << " greedy";
  }
}

TEST(BundledModelTest, LogitsAndGreedyContinuationsMatchPyTorchReference) {
  const fs::path dir = fs::path(MOE_SOURCE_DIR) / "models" / "kjv-moe";
  CheckModelAgainstReference(dir, dir / "reference");
}

// The second family's trained fixture (Qwen3-MoE layout, 16 experts, top-4).
TEST(BundledModelTest, Qwen3FixtureMatchesPyTorchReference) {
  const fs::path dir = fs::path(MOE_SOURCE_DIR) / "models" / "kjv-qwen3";
  CheckModelAgainstReference(dir, dir / "reference");
}

// Names match tools/make_random_checkpoints.py; a case it stops making fails here.
class RandomCheckpointTest : public ::testing::TestWithParam<const char*> {};

TEST_P(RandomCheckpointTest, MatchesPyTorchReference) {
  const fs::path dir = fs::path(MOE_BINARY_DIR) / "random_checkpoints" / GetParam();
  ASSERT_TRUE(fs::exists(dir / "reference.json")) << dir << " was not generated";
  CheckModelAgainstReference(dir, dir);
}

INSTANTIATE_TEST_SUITE_P(Shapes, RandomCheckpointTest,
                         ::testing::Values("f32_mha_e2_top1_tied", "f16_gqa2_e4_top2",
                                           "bf16_gqa4_e8_top2", "f32_headdim16_e4_top2_tied",
                                           "bf16_sharded_gqa4_e4_top1",
                                           "f16_sliding5_gqa2_e8_top2"));

// The other families, F32 and sharded BF16 each: qwen2_moe (q/k/v bias, shared expert,
// dense layers), qwen3_moe (per-head q/k norms, explicit head_dim, top-4 of 16), olmoe
// (whole q/k norms, clip_qkv, weights not renormalised).
INSTANTIATE_TEST_SUITE_P(Families, RandomCheckpointTest,
                         ::testing::Values("qwen2_moe_f32_shared_dense",
                                           "qwen2_moe_bf16_sharded_step2",
                                           "qwen3_moe_f32_e16_top4", "qwen3_moe_bf16_sharded",
                                           "qwen3_moe_f32_e128_top8",
                                           "olmoe_f32_clip", "olmoe_bf16_sharded"));

// Offloading never changes the output: every cache size from one slot per layer to all
// experts gives bit-identical logits.
TEST(CacheSizeTest, LogitsAreIdenticalForEveryCacheSize) {
  const std::string dir =
      (fs::path(MOE_BINARY_DIR) / "random_checkpoints" / "bf16_gqa4_e8_top2").string();
  const nlohmann::json ref = ReadJson(fs::path(dir) / "reference.json");
  const std::vector<int> tokens = ref["cases"][0]["tokens"].get<std::vector<int>>();
  std::vector<float> baseline;
  uint64_t distinct_experts = 0;  // with every expert resident, each loads exactly once
  for (int slots = 8; slots >= 1; --slots) {
    auto engine = LocalEngine::Open(dir, slots);
    ASSERT_TRUE(engine.ok()) << engine.status();
    KvCache cache((*engine)->config(), tokens.size());
    std::vector<float> logits, all;
    for (int t : tokens) {  // decode one by one: the cache churns every layer step
      ASSERT_TRUE((*engine)->model().Forward({&t, 1}, cache, MixtralModel::Logits::kLast, &logits).ok());
      all.insert(all.end(), logits.begin(), logits.end());
    }
    const uint64_t misses = (*engine)->cache()->Stats().total.misses;
    if (slots == 8) {
      baseline = all;
      distinct_experts = misses;
      EXPECT_LE(distinct_experts, 16u);
    } else {
      EXPECT_EQ(all, baseline) << slots << " slots per layer";
      EXPECT_GE(misses, distinct_experts) << slots << " slots per layer";
      if (slots == 1) {
        EXPECT_GT(misses, distinct_experts);
      }
    }
  }
}

// Top-8 of 128 experts (Qwen3-30B-A3B's routing) through the expert cache: 8 slots per
// layer (every token's experts evicting others) gives the logits of all 128 resident.
TEST(CacheSizeTest, TopEightOfOneHundredTwentyEightAgreesAtEverySize) {
  const std::string dir =
      (fs::path(MOE_BINARY_DIR) / "random_checkpoints" / "qwen3_moe_f32_e128_top8").string();
  const nlohmann::json ref = ReadJson(fs::path(dir) / "reference.json");
  const std::vector<int> tokens = ref["cases"][0]["tokens"].get<std::vector<int>>();
  std::vector<float> baseline;
  for (int slots : {128, 8}) {
    auto engine = LocalEngine::Open(dir, slots);
    ASSERT_TRUE(engine.ok()) << engine.status();
    KvCache cache((*engine)->config(), tokens.size());
    std::vector<float> logits, all;
    for (int t : tokens) {
      ASSERT_TRUE((*engine)->model().Forward({&t, 1}, cache, MixtralModel::Logits::kLast, &logits).ok());
      all.insert(all.end(), logits.begin(), logits.end());
    }
    if (slots == 128) {
      baseline = all;
    } else {
      EXPECT_EQ(all, baseline);
      EXPECT_GT((*engine)->cache()->Stats().total.misses, 8u * 2);  // it did churn
    }
  }
}

// Speculative prefetch changes which experts are loaded when, never the tokens; on the
// trained model its guesses are far better than chance (2 of 8 experts: 25%).
TEST(SpeculationTest, SameTokensAndRecallWellAboveChanceOnTheBundledModel) {
  const std::string dir = (fs::path(MOE_SOURCE_DIR) / "models" / "kjv-moe").string();
  const nlohmann::json ref = ReadJson(fs::path(dir) / "reference" / "reference.json");
  const std::vector<int> prompt = ref["greedy"][0]["prompt_tokens"].get<std::vector<int>>();
  coordinator::GenerateOptions options;
  options.max_new_tokens = 48;
  options.stop_at_eos = false;
  std::vector<int> baseline;
  for (int lookahead : {0, 1, 2}) {
    auto engine = LocalEngine::Open(dir, /*cache_per_layer=*/2);
    ASSERT_TRUE(engine.ok()) << engine.status();
    (*engine)->model().set_speculation({lookahead, 2});
    auto result = coordinator::Generate((*engine)->model(), prompt, options, nullptr);
    ASSERT_TRUE(result.ok()) << result.status();
    if (lookahead == 0) {
      baseline = result->tokens;
      EXPECT_EQ((*engine)->model().speculation_stats().hinted, 0u);
      continue;
    }
    EXPECT_EQ(result->tokens, baseline) << "lookahead " << lookahead;
    const auto stats = (*engine)->model().speculation_stats();
    EXPECT_GT(stats.hinted, 0u);
    EXPECT_GT(stats.recall(), 0.5) << "lookahead " << lookahead;
    ::testing::Test::RecordProperty("recall_lookahead_" + std::to_string(lookahead),
                                    std::to_string(stats.recall()));
    std::printf("lookahead %d: recall %.3f precision %.3f over %llu router choices\n", lookahead,
                stats.recall(), stats.precision(), (unsigned long long)stats.nearest.needed);
  }
}

// The same on the second family's fixture: 4 guesses per token for its top-4 of 16
// (chance: 25%), with 4 experts cached per layer.
TEST(SpeculationTest, SameTokensAndRecallWellAboveChanceOnTheQwen3Fixture) {
  const std::string dir = (fs::path(MOE_SOURCE_DIR) / "models" / "kjv-qwen3").string();
  const nlohmann::json ref = ReadJson(fs::path(dir) / "reference" / "reference.json");
  const std::vector<int> prompt = ref["greedy"][1]["prompt_tokens"].get<std::vector<int>>();
  coordinator::GenerateOptions options;
  options.max_new_tokens = 48;
  options.stop_at_eos = false;
  std::vector<int> baseline;
  for (int lookahead : {0, 1, 2}) {
    auto engine = LocalEngine::Open(dir, /*cache_per_layer=*/4);
    ASSERT_TRUE(engine.ok()) << engine.status();
    (*engine)->model().set_speculation({lookahead, 4});
    auto result = coordinator::Generate((*engine)->model(), prompt, options, nullptr);
    ASSERT_TRUE(result.ok()) << result.status();
    if (lookahead == 0) {
      baseline = result->tokens;
      continue;
    }
    EXPECT_EQ(result->tokens, baseline) << "lookahead " << lookahead;
    const auto stats = (*engine)->model().speculation_stats();
    EXPECT_GT(stats.recall(), 0.5) << "lookahead " << lookahead;
    std::printf("kjv-qwen3 lookahead %d: recall %.3f precision %.3f over %llu router choices\n",
                lookahead, stats.recall(), stats.precision(),
                (unsigned long long)stats.nearest.needed);
  }
}

// With dense layers (qwen2_moe's mlp_only_layers and decoder_sparse_step) the speculator
// guesses expert layers only, skipping the dense ones: the logits do not change, and
// every guess is scored against the router of the layer it was made for.
TEST(SpeculationTest, DenseLayersAreSkippedAndTheLogitsKept) {
  for (const char* name : {"qwen2_moe_f32_shared_dense", "qwen2_moe_bf16_sharded_step2"}) {
    SCOPED_TRACE(name);
    const std::string dir = (fs::path(MOE_BINARY_DIR) / "random_checkpoints" / name).string();
    const nlohmann::json ref = ReadJson(fs::path(dir) / "reference.json");
    const std::vector<int> tokens = ref["cases"][0]["tokens"].get<std::vector<int>>();
    std::vector<float> baseline;
    for (int lookahead : {0, 1, 3}) {
      auto engine = LocalEngine::Open(dir, /*cache_per_layer=*/2);
      ASSERT_TRUE(engine.ok()) << engine.status();
      const ModelConfig& c = (*engine)->config();
      ASSERT_EQ(c.num_expert_layers(), 2);
      ASSERT_LT(c.num_expert_layers(), c.num_hidden_layers);
      (*engine)->model().set_speculation({lookahead, 2});
      KvCache cache(c, tokens.size());
      std::vector<float> logits, all;
      for (int t : tokens) {
        ASSERT_TRUE((*engine)->model().Forward({&t, 1}, cache, MixtralModel::Logits::kLast, &logits).ok());
        all.insert(all.end(), logits.begin(), logits.end());
      }
      const auto stats = (*engine)->model().speculation_stats();
      if (lookahead == 0) {
        baseline = all;
        EXPECT_EQ(stats.hinted, 0u);
        continue;
      }
      EXPECT_EQ(all, baseline) << "lookahead " << lookahead;
      // One guess per token for the second expert layer (the first has none before it).
      EXPECT_EQ(stats.nearest.needed, tokens.size() * c.num_experts_per_tok);
      EXPECT_EQ(stats.by_distance[1].needed, 0u);  // no third expert layer to guess 2 ahead
    }
  }
}

// The BLAS and plain-loop matmuls give the same model outputs as the default
// (batch-invariant) one.
TEST(MatmulImplTest, LoopsAndBlasMatchTheReferenceOnRandomCheckpoint) {
  const fs::path dir = fs::path(MOE_BINARY_DIR) / "random_checkpoints" / "bf16_gqa4_e8_top2";
  const cpu::MatmulImpl saved = cpu::GetMatmulImpl();
  for (cpu::MatmulImpl impl : {cpu::MatmulImpl::kLoops, cpu::MatmulImpl::kBlas}) {
    cpu::SetMatmulImpl(impl);
    CheckModelAgainstReference(dir, dir);
  }
  cpu::SetMatmulImpl(saved);
}

}  // namespace
}  // namespace moe
