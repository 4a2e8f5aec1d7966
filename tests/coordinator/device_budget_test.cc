// The start-up memory check: dense weights + KV caches of every stream + scratch against
// the budget, refused naming every figure; the in-process engine applies it at Open.
#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/backend/device.h"
#include "common/model_dir.h"
#include "coordinator/dense_weights.h"
#include "coordinator/device_budget.h"
#include "coordinator/device_weights.h"
#include "coordinator/kv_cache.h"
#include "coordinator/mixtral_model.h"
#include "gtest/gtest.h"
#include "tools/cli/local_engine.h"

namespace moe::coordinator {
namespace {

namespace fs = std::filesystem;
const fs::path kBundled = fs::path(MOE_SOURCE_DIR) / "models" / "kjv-moe";

ModelConfig BundledConfig() {
  auto dir = ModelDir::Open(kBundled.string());
  EXPECT_TRUE(dir.ok()) << dir.status();
  return dir.ok() ? dir->config : ModelConfig();
}

bool Contains(const absl::Status& s, const std::string& text) {
  return s.message().find(text) != absl::string_view::npos;
}

TEST(DeviceBudgetTest, FiguresAddUpAndAFittingBudgetPasses) {
  const ModelConfig c = BundledConfig();
  auto budget = CheckDeviceBudget(c, /*weights_bytes=*/1000, /*streams=*/3,
                                  /*context_tokens=*/64, /*lookahead=*/1, int64_t(1) << 40);
  ASSERT_TRUE(budget.ok()) << budget.status();
  EXPECT_EQ(budget->kv_bytes_per_stream, KvCache::Bytes(c, 64));
  EXPECT_EQ(budget->kv_bytes_per_stream,
            2 * c.num_hidden_layers * 64 * c.kv_dim() * int64_t(sizeof(float)));
  EXPECT_EQ(budget->kv_bytes(), 3 * budget->kv_bytes_per_stream);
  EXPECT_EQ(budget->scratch_bytes, MixtralModel::ScratchBytes(c, 64, 1, 1));
  EXPECT_GT(budget->scratch_bytes, 64 * c.hidden_size * int64_t(sizeof(float)));
  EXPECT_EQ(budget->total_bytes(), 1000 + budget->kv_bytes() + budget->scratch_bytes);
}

TEST(DeviceBudgetTest, BatchedStepsCountOnePassOfTheBatchWithALogitRowPerStream) {
  const ModelConfig c = BundledConfig();
  auto budget = CheckDeviceBudget(c, 1000, /*streams=*/8, /*context_tokens=*/512,
                                  /*lookahead=*/1, int64_t(1) << 40, /*batch_tokens=*/64);
  ASSERT_TRUE(budget.ok()) << budget.status();
  EXPECT_EQ(budget->scratch_bytes, MixtralModel::ScratchBytes(c, 64, 8, 1));
  // More streams than rows: at most one logit row per row.
  budget = CheckDeviceBudget(c, 1000, 100, 512, 1, int64_t(1) << 40, 64);
  ASSERT_TRUE(budget.ok()) << budget.status();
  EXPECT_EQ(budget->scratch_bytes, MixtralModel::ScratchBytes(c, 64, 64, 1));
  EXPECT_TRUE(absl::IsInvalidArgument(CheckDeviceBudget(c, 0, 1, 16, 0, 0, -1).status()));
}

TEST(DeviceBudgetTest, ATinyBudgetIsRefusedNamingEveryNumber) {
  const ModelConfig c = BundledConfig();
  const int64_t kv = KvCache::Bytes(c, 128);
  const absl::Status s =
      CheckDeviceBudget(c, /*weights_bytes=*/123456, /*streams=*/4, /*context_tokens=*/128,
                        /*lookahead=*/0, /*budget_bytes=*/1000)
          .status();
  EXPECT_TRUE(absl::IsResourceExhausted(s)) << s;
  EXPECT_TRUE(Contains(s, "dense weights 123456 bytes")) << s;
  EXPECT_TRUE(Contains(s, absl::StrCat("4 streams x 128 tokens"))) << s;
  EXPECT_TRUE(Contains(s, absl::StrCat(4 * kv, " bytes"))) << s;
  EXPECT_TRUE(Contains(s, "budget 1000 bytes")) << s;
  EXPECT_TRUE(Contains(s, "scratch")) << s;
}

TEST(DeviceBudgetTest, BadStreamsContextAndBudgetAreInvalid) {
  const ModelConfig c = BundledConfig();
  EXPECT_TRUE(absl::IsInvalidArgument(CheckDeviceBudget(c, 0, 0, 16, 0, 0).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(CheckDeviceBudget(c, 0, 1, 0, 0, 0).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(
      CheckDeviceBudget(c, 0, 1, c.max_position_embeddings + 1, 0, 0).status()));
  auto cpu = backend::OpenDevice("cpu");
  ASSERT_TRUE(cpu.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(ResolveBudgetBytes(**cpu, -1).status()));
  EXPECT_EQ(*ResolveBudgetBytes(**cpu, 0), 0);  // no limit on the CPU
  EXPECT_EQ(*ResolveBudgetBytes(**cpu, 2), int64_t(2) << 30);
}

TEST(DeviceBudgetTest, EngineOpenRefusesABudgetTheDenseWeightsDoNotFit) {
  auto dir = ModelDir::Open(kBundled.string());
  ASSERT_TRUE(dir.ok());
  auto dense = DenseWeights::Load(*dir);
  ASSERT_TRUE(dense.ok());
  const int64_t weights = DeviceWeights::Bytes(*dense);
  EngineOptions options;
  options.device = "cpu";
  options.vram_budget_gib = double(weights / 2) / double(1 << 30);
  options.context_tokens = 32;
  auto engine = LocalEngine::Open(kBundled.string(), options);
  ASSERT_FALSE(engine.ok());
  EXPECT_TRUE(absl::IsResourceExhausted(engine.status())) << engine.status();
  EXPECT_TRUE(Contains(engine.status(), absl::StrCat("dense weights ", weights, " bytes")))
      << engine.status();
  EXPECT_TRUE(Contains(engine.status(), "--vram-budget-gib")) << engine.status();

  options.vram_budget_gib = 1;
  auto fits = LocalEngine::Open(kBundled.string(), options);
  EXPECT_TRUE(fits.ok()) << fits.status();
}

TEST(DeviceBudgetTest, CpuAliasesTheHostWeightsAndCountsThemAll) {
  auto dir = ModelDir::Open(kBundled.string());
  ASSERT_TRUE(dir.ok());
  auto dense = DenseWeights::Load(*dir);
  ASSERT_TRUE(dense.ok());
  int64_t expected = 0;
  expected += (dense->embedding.size() + dense->final_norm.size() + dense->lm_head.size()) * 4 +
              dense->embedding_packed.bytes.size() + dense->lm_head_packed.bytes.size();
  for (const LayerWeights& l : dense->layers) {
    expected += (l.input_norm.size() + l.post_norm.size() + l.gate.size() + l.q.size() +
                 l.k.size() + l.v.size() + l.o.size()) * 4;
    expected += l.q_packed.bytes.size() + l.k_packed.bytes.size() + l.v_packed.bytes.size() +
                l.o_packed.bytes.size() + l.gate_packed.bytes.size();
    EXPECT_TRUE(l.gate.empty());  // the BF16 router stays as stored
  }
  EXPECT_EQ(DeviceWeights::Bytes(*dense), expected);
  // The bundled model is BF16: its embedding table stays as stored (half the fp32 bytes).
  ASSERT_TRUE(dense->embedding.empty());
  EXPECT_EQ(dense->embedding_packed.bytes.size(),
            size_t(dir->config.vocab_size * dir->config.hidden_size * 2));
  const void* embedding = dense->embedding_packed.bytes.data();
  auto cpu = backend::OpenDevice("cpu");
  ASSERT_TRUE(cpu.ok());
  auto weights = DeviceWeights::Create(*std::move(dense), **cpu);
  ASSERT_TRUE(weights.ok()) << weights.status();
  EXPECT_EQ((*weights)->embedding().data, embedding);  // no copy
  EXPECT_EQ((*weights)->embedding().format, backend::WeightFormat::kBF16);
  EXPECT_EQ((*weights)->device_bytes(), 0);
  if (dir->config.tie_word_embeddings) {
    EXPECT_EQ((*weights)->lm_head().data, embedding);
  }
  EXPECT_EQ((*weights)->lm_head().rows, dir->config.vocab_size);
  EXPECT_EQ((*weights)->lm_head().cols, dir->config.hidden_size);
}

}  // namespace
}  // namespace moe::coordinator
