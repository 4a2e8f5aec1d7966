// Issue 14 point 5: a 16-bit checkpoint runs in 16 bits. Loading one (of each family, and
// a converted model) keeps every matrix as stored and leaves every fp32 matrix vector
// empty; only norms and biases are fp32. An fp32 checkpoint stays fp32.
#include <filesystem>
#include <string>
#include <vector>

#include "common/model_dir.h"
#include "common/model_tensors.h"
#include "common/quant/offload_model.h"
#include "common/quant/quant_format.h"
#include "common/status.h"
#include "coordinator/dense_weights.h"
#include "coordinator/device_weights.h"
#include "gtest/gtest.h"

namespace moe::coordinator {
namespace {

namespace fs = std::filesystem;

fs::path RandomCheckpoint(const std::string& name) {
  return fs::path(MOE_BINARY_DIR) / "random_checkpoints" / name;
}

struct Matrix {
  std::string name;
  const std::vector<float>* f32;
  const PackedMatrix* packed;
};

// Every matrix slot of `w`, present in the model or not.
std::vector<Matrix> Matrices(const DenseWeights& w) {
  std::vector<Matrix> out = {{"embedding", &w.embedding, &w.embedding_packed},
                             {"lm_head", &w.lm_head, &w.lm_head_packed}};
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const LayerWeights& lw = w.layers[l];
    const std::string p = "layer " + std::to_string(l) + " ";
    out.insert(out.end(),
               {{p + "q", &lw.q, &lw.q_packed},
                {p + "k", &lw.k, &lw.k_packed},
                {p + "v", &lw.v, &lw.v_packed},
                {p + "o", &lw.o, &lw.o_packed},
                {p + "router", &lw.gate, &lw.gate_packed},
                {p + "shared gate", &lw.shared_expert.gate, &lw.shared_expert.gate_packed},
                {p + "shared up", &lw.shared_expert.up, &lw.shared_expert.up_packed},
                {p + "shared down", &lw.shared_expert.down, &lw.shared_expert.down_packed},
                {p + "shared_expert_gate", &lw.shared_expert_gate, &lw.shared_expert_gate_packed},
                {p + "dense gate", &lw.dense_mlp.gate, &lw.dense_mlp.gate_packed},
                {p + "dense up", &lw.dense_mlp.up, &lw.dense_mlp.up_packed},
                {p + "dense down", &lw.dense_mlp.down, &lw.dense_mlp.down_packed}});
  }
  return out;
}

// The bytes of the model's non-expert tensors as the directory stores them, vectors in
// fp32: what the coordinator holds when no matrix is widened.
int64_t StoredBytes(const ModelDir& dir) {
  int64_t bytes = 0;
  const absl::Status s =
      ForEachModelTensor(dir.config, /*experts=*/false, [&](const ModelTensor& t) {
        if (t.shape.size() == 1) {
          bytes += t.shape[0] * int64_t(sizeof(float));
          return absl::OkStatus();
        }
        if (dir.offload != nullptr) {
          auto view = dir.offload->Dense(t.name);
          if (!view.ok()) return view.status();
          bytes += view->layout.total_bytes;
          return absl::OkStatus();
        }
        auto ref = dir.checkpoint->Find(t.name);
        if (!ref.ok()) return ref.status();
        quant::MatrixSpec spec;
        spec.bits = 16;
        spec.dtype16 = ref->info->dtype;
        quant::MatrixLayout layout;
        MOE_RETURN_IF_ERROR(
            quant::MatrixLayout::Compute(t.shape[0], t.shape[1], spec, t.name, &layout));
        bytes += layout.total_bytes;
        return absl::OkStatus();
      });
  EXPECT_TRUE(s.ok()) << s;
  return bytes;
}

void ExpectAsStored(const fs::path& path) {
  SCOPED_TRACE(path.string());
  auto dir = ModelDir::Open(path.string());
  ASSERT_TRUE(dir.ok()) << dir.status();
  auto w = DenseWeights::Load(*dir);
  ASSERT_TRUE(w.ok()) << w.status();
  int present = 0;
  for (const Matrix& m : Matrices(*w)) {
    EXPECT_TRUE(m.f32->empty()) << m.name << ": " << m.f32->size() << " fp32 values";
    present += !m.packed->empty();
  }
  EXPECT_GT(present, 0);
  EXPECT_EQ(DeviceWeights::Bytes(*w), StoredBytes(*dir));
}

TEST(DenseWeightsTest, SixteenBitCheckpointsOfEveryFamilyKeepEveryMatrixAsStored) {
  for (const char* name :
       {"bf16_gqa4_e8_top2", "f16_gqa2_e4_top2", "bf16_sharded_gqa4_e4_top1",
        "qwen2_moe_bf16_sharded_step2", "qwen2_moe_bench_tokenizer", "qwen3_moe_bf16_sharded",
        "olmoe_bf16_sharded", "olmoe_bench_tokenizer"}) {
    ExpectAsStored(RandomCheckpoint(name));
  }
  ExpectAsStored(fs::path(MOE_SOURCE_DIR) / "models" / "kjv-moe");
  ExpectAsStored(fs::path(MOE_SOURCE_DIR) / "models" / "kjv-qwen3");
}

// Shared experts and dense MLPs are 2-D tensors too: a qwen2_moe checkpoint with both
// holds them packed, with the shapes the config implies.
TEST(DenseWeightsTest, SharedExpertsAndDenseLayersArePacked) {
  auto dir = ModelDir::Open(RandomCheckpoint("qwen2_moe_bench_tokenizer").string());
  ASSERT_TRUE(dir.ok()) << dir.status();
  auto w = DenseWeights::Load(*dir);
  ASSERT_TRUE(w.ok()) << w.status();
  const ModelConfig& c = dir->config;
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& lw = w->layers[size_t(l)];
    if (c.IsSparseLayer(l)) {
      EXPECT_EQ(lw.gate_packed.layout.rows, c.num_local_experts) << l;
      EXPECT_EQ(lw.shared_expert.down_packed.layout.rows, c.hidden_size) << l;
      EXPECT_EQ(lw.shared_expert.down_packed.layout.cols, c.shared_expert_intermediate_size) << l;
      EXPECT_EQ(lw.shared_expert_gate_packed.layout.rows, 1) << l;
      EXPECT_TRUE(lw.dense_mlp.empty()) << l;
    } else {
      EXPECT_TRUE(lw.gate_packed.empty()) << l;
      EXPECT_EQ(lw.dense_mlp.up_packed.layout.rows, c.dense_intermediate_size) << l;
      EXPECT_TRUE(lw.shared_expert.empty()) << l;
    }
  }
}

TEST(DenseWeightsTest, ConvertedModelsKeepEveryMatrixAsStored) {
  for (const char* name : {"hqq_4_3", "bf16"}) {
    ExpectAsStored(fs::path(MOE_BINARY_DIR) / "converted" / name);
  }
}

TEST(DenseWeightsTest, Fp32CheckpointsStayFp32) {
  for (const char* name : {"f32_mha_e2_top1_tied", "qwen2_moe_f32_shared_dense",
                           "qwen3_moe_f32_e16_top4", "olmoe_f32_clip"}) {
    SCOPED_TRACE(name);
    auto dir = ModelDir::Open(RandomCheckpoint(name).string());
    ASSERT_TRUE(dir.ok()) << dir.status();
    auto w = DenseWeights::Load(*dir);
    ASSERT_TRUE(w.ok()) << w.status();
    int64_t values = 0;
    for (const Matrix& m : Matrices(*w)) {
      EXPECT_TRUE(m.packed->empty()) << m.name;
      values += int64_t(m.f32->size());
    }
    EXPECT_GT(values, 0);
  }
}

}  // namespace
}  // namespace moe::coordinator
