// ForEachModelTensor: the tensors each family implies, by HF name, shape and kind.
#include "common/model_tensors.h"

#include <map>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace moe {
namespace {

ModelConfig Config(const char* json) {
  auto c = ModelConfig::FromJson(json);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : ModelConfig();
}

std::map<std::string, ModelTensor> Tensors(const ModelConfig& c, bool experts) {
  std::map<std::string, ModelTensor> out;
  EXPECT_TRUE(ForEachModelTensor(c, experts, [&](const ModelTensor& t) {
                out[t.name] = t;
                return absl::OkStatus();
              }).ok());
  return out;
}

TEST(ModelTensorsTest, Qwen2MoeHasBiasesSharedExpertsAndDenseLayers) {
  const ModelConfig c = Config(R"({"model_type": "qwen2_moe", "vocab_size": 10,
    "hidden_size": 8, "intermediate_size": 24, "moe_intermediate_size": 4,
    "shared_expert_intermediate_size": 12, "num_hidden_layers": 2, "decoder_sparse_step": 2,
    "num_attention_heads": 2, "num_experts": 3, "num_experts_per_tok": 2})");
  const auto t = Tensors(c, /*experts=*/true);
  // Layer 0 is dense (decoder_sparse_step 2): an MLP of width 24, no router, no experts.
  EXPECT_EQ(t.at("model.layers.0.mlp.gate_proj.weight").shape, (std::vector<int64_t>{24, 8}));
  EXPECT_EQ(t.at("model.layers.0.mlp.down_proj.weight").shape, (std::vector<int64_t>{8, 24}));
  EXPECT_EQ(t.count("model.layers.0.mlp.gate.weight"), 0u);
  EXPECT_EQ(t.count("model.layers.0.mlp.experts.0.gate_proj.weight"), 0u);
  // Layer 1 is sparse: router, shared expert and its gate, experts under HF's names.
  EXPECT_EQ(t.at("model.layers.1.mlp.gate.weight").shape, (std::vector<int64_t>{3, 8}));
  EXPECT_EQ(t.at("model.layers.1.mlp.shared_expert.up_proj.weight").shape,
            (std::vector<int64_t>{12, 8}));
  EXPECT_EQ(t.at("model.layers.1.mlp.shared_expert_gate.weight").shape,
            (std::vector<int64_t>{1, 8}));
  const ModelTensor& down = t.at("model.layers.1.mlp.experts.2.down_proj.weight");
  EXPECT_EQ(down.kind, TensorKind::kExpert);
  EXPECT_EQ(down.role, "w2");
  EXPECT_EQ(down.shape, (std::vector<int64_t>{8, 4}));
  EXPECT_EQ(t.at("model.layers.1.self_attn.k_proj.bias").shape, (std::vector<int64_t>{8}));
  EXPECT_EQ(t.at("model.layers.1.self_attn.q_proj.weight").kind, TensorKind::kAttention);
  // Without experts: everything the coordinator holds, and nothing of the worker's.
  for (const auto& [name, tensor] : Tensors(c, /*experts=*/false)) {
    EXPECT_NE(tensor.kind, TensorKind::kExpert) << name;
  }
  EXPECT_EQ(Tensors(c, true).size() - Tensors(c, false).size(), 3u * 3u);  // 1 sparse layer
}

TEST(ModelTensorsTest, QkNormShapesFollowTheFamily) {
  const ModelConfig qwen3 = Config(R"({"model_type": "qwen3_moe", "vocab_size": 10,
    "hidden_size": 8, "moe_intermediate_size": 4, "num_hidden_layers": 1, "head_dim": 6,
    "num_attention_heads": 2, "num_key_value_heads": 1, "num_experts": 3,
    "num_experts_per_tok": 2})");
  auto t = Tensors(qwen3, false);
  EXPECT_EQ(t.at("model.layers.0.self_attn.q_norm.weight").shape, (std::vector<int64_t>{6}));
  EXPECT_EQ(t.at("model.layers.0.self_attn.k_norm.weight").shape, (std::vector<int64_t>{6}));
  EXPECT_EQ(t.count("model.layers.0.self_attn.q_proj.bias"), 0u);
  const ModelConfig olmoe = Config(R"({"model_type": "olmoe", "vocab_size": 10,
    "hidden_size": 8, "intermediate_size": 4, "num_hidden_layers": 1,
    "num_attention_heads": 2, "num_key_value_heads": 1, "num_experts": 3,
    "num_experts_per_tok": 2})");
  t = Tensors(olmoe, false);
  EXPECT_EQ(t.at("model.layers.0.self_attn.q_norm.weight").shape, (std::vector<int64_t>{8}));
  EXPECT_EQ(t.at("model.layers.0.self_attn.k_norm.weight").shape, (std::vector<int64_t>{4}));
  EXPECT_EQ(t.count("model.layers.0.block_sparse_moe.gate.weight"), 0u);
  EXPECT_EQ(t.count("model.layers.0.mlp.gate.weight"), 1u);
}

TEST(ModelTensorsTest, MixtralKeepsItsNames) {
  ModelConfig c;
  c.vocab_size = 10;
  c.hidden_size = 8;
  c.intermediate_size = 4;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 2;
  c.head_dim = 4;
  c.num_local_experts = 2;
  c.num_experts_per_tok = 1;
  const auto t = Tensors(c, true);
  EXPECT_EQ(t.count("model.layers.0.block_sparse_moe.gate.weight"), 1u);
  EXPECT_EQ(t.count("model.layers.0.block_sparse_moe.experts.1.w3.weight"), 1u);
  EXPECT_EQ(t.count("lm_head.weight"), 1u);
  EXPECT_EQ(t.size(), 1 + 7 + 2 * 3 + 1 + 1u);
}

TEST(ModelTensorsTest, TheFirstErrorEndsTheWalk) {
  ModelConfig c;
  c.vocab_size = 10;
  c.hidden_size = 8;
  c.intermediate_size = 4;
  c.num_hidden_layers = 1 << 24;  // billions of tensors implied
  c.num_attention_heads = 2;
  c.num_key_value_heads = 2;
  c.head_dim = 4;
  c.num_local_experts = 1 << 20;
  c.num_experts_per_tok = 1;
  int visited = 0;
  const absl::Status s = ForEachModelTensor(c, true, [&](const ModelTensor&) {
    return ++visited == 5 ? absl::NotFoundError("stop") : absl::OkStatus();
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(visited, 5);
}

}  // namespace
}  // namespace moe
