#include "bench/synthetic_weights.h"

#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/dtype.h"
#include "coordinator/device_weights.h"
#include "gtest/gtest.h"

namespace moe::bench {
namespace {

// Mean and standard deviation of the dequantised matrix.
std::pair<double, double> Moments(const quant::MatrixLayout& layout, const uint8_t* data) {
  std::vector<float> w(layout.rows * layout.cols);
  quant::DequantizeRowsReference({layout, data}, 0, layout.rows, w.data());
  double sum = 0, sq = 0;
  for (float v : w) {
    EXPECT_TRUE(std::isfinite(v));
    sum += v;
    sq += double(v) * v;
  }
  const double mean = sum / w.size();
  return {mean, std::sqrt(sq / w.size() - mean * mean)};
}

TEST(SyntheticWeightsTest, EveryFormatHasTheSpreadOfATrainedLinearLayer) {
  for (int bits : {2, 3, 4, 8, 16}) {
    quant::MatrixSpec spec;
    spec.bits = bits;
    spec.dtype16 = DType::kF16;
    quant::MatrixLayout layout;
    ASSERT_TRUE(quant::MatrixLayout::Compute(96, 256, spec, "w", &layout).ok());
    std::vector<uint8_t> bytes(layout.total_bytes);
    FillRandomMatrix(layout, 7, bytes.data());
    const auto [mean, std] = Moments(layout, bytes.data());
    EXPECT_NEAR(std, 1 / std::sqrt(256.0), 0.25 / std::sqrt(256.0)) << bits << " bits";
    EXPECT_LT(std::abs(mean), 0.5 * std) << bits << " bits";
  }
}

TEST(SyntheticWeightsTest, TheSameSeedGivesTheSameBytesAndAnotherSeedOthers) {
  quant::MatrixSpec spec;
  spec.bits = 3;
  quant::MatrixLayout layout;
  ASSERT_TRUE(quant::MatrixLayout::Compute(64, 512, spec, "w", &layout).ok());
  std::vector<uint8_t> a(layout.total_bytes), b(layout.total_bytes), c(layout.total_bytes);
  FillRandomMatrix(layout, 1, a.data());
  FillRandomMatrix(layout, 1, b.data());
  FillRandomMatrix(layout, 2, c.data());
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

// Two layers, 4 experts top-2, 4/2 heads: small enough to make in a test.
ModelConfig SmallConfig() {
  ModelConfig c;
  c.vocab_size = 100;
  c.hidden_size = 64;
  c.intermediate_size = 128;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.num_local_experts = 4;
  c.num_experts_per_tok = 2;
  return c;
}

TEST(SyntheticWeightsTest, DenseWeightsHaveTheConfigsShapesInTheAskedFormat) {
  const ModelConfig c = SmallConfig();
  auto packed = RandomDenseWeights(c, 4, 32, 1);
  ASSERT_TRUE(packed.ok()) << packed.status();
  ASSERT_EQ(packed->layers.size(), 2u);
  EXPECT_TRUE(packed->embedding.empty());  // 16-bit, as a 16-bit checkpoint keeps it
  EXPECT_EQ(packed->embedding_packed.layout.rows, 100);
  EXPECT_EQ(packed->embedding_packed.layout.spec.bits, 16);
  EXPECT_TRUE(packed->layers[1].gate.empty());  // the router too
  EXPECT_EQ(packed->layers[1].gate_packed.layout.rows, 4);
  EXPECT_EQ(packed->layers[1].gate_packed.layout.spec.bits, 16);
  EXPECT_TRUE(packed->layers[0].q.empty());
  EXPECT_EQ(packed->layers[0].k_packed.layout.rows, 32);
  EXPECT_EQ(packed->layers[0].o_packed.layout.cols, 64);
  auto f32 = RandomDenseWeights(c, 32, 32, 1);
  ASSERT_TRUE(f32.ok());
  EXPECT_EQ(f32->layers[0].q.size(), 64u * 64);
  EXPECT_EQ(f32->embedding.size(), 100u * 64);
  EXPECT_TRUE(f32->layers[0].q_packed.empty());
  EXPECT_EQ(f32->layers[1].gate.size(), 4u * 64);
  EXPECT_FALSE(RandomDenseWeights(c, 5, 32, 1).ok());
}

// The dry run's budget: the shape-only count equals what the weights, once made, occupy.
TEST(SyntheticWeightsTest, ShapeOnlyBytesEqualTheBytesOfTheMadeWeights) {
  ModelConfig c = SmallConfig();
  for (bool tied : {false, true}) {
    c.tie_word_embeddings = tied;
    for (int bits : {32, 16, 8, 4, 3, 2}) {
      SCOPED_TRACE(absl::StrCat(bits, " bits", tied ? ", tied" : ""));
      auto made = RandomDenseWeights(c, bits, 32, 3);
      ASSERT_TRUE(made.ok()) << made.status();
      auto counted = RandomDenseWeightsBytes(c, bits, 32);
      ASSERT_TRUE(counted.ok()) << counted.status();
      EXPECT_EQ(*counted, coordinator::DeviceWeights::Bytes(*made));
    }
  }
  EXPECT_FALSE(RandomDenseWeightsBytes(c, 5, 32).ok());
}

}  // namespace
}  // namespace moe::bench
