// CPU kernels against plain, obviously-right formulations on random inputs.
#include "common/backend/cpu/cpu_kernels.h"
#include "common/backend/cpu/rowwise_matmul.h"

#include <omp.h>

#include <cmath>
#include <cstring>
#include <omp.h>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace moe::cpu {
namespace {

std::vector<float> Random(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

class MatMulTest : public ::testing::TestWithParam<std::tuple<MatmulImpl, int, int, int>> {
 protected:
  void SetUp() override { saved_ = GetMatmulImpl(); }
  void TearDown() override { SetMatmulImpl(saved_); }
  MatmulImpl saved_ = MatmulImpl::kRows;
};

TEST_P(MatMulTest, MatchesDoubleReference) {
  const auto [impl, n, k, m] = GetParam();
  SetMatmulImpl(impl);
  const auto x = Random(n * k, 1), w = Random(m * k, 2);
  std::vector<float> y(n * m), ref(n * m);
  MatMulTransB(x.data(), w.data(), y.data(), n, k, m);
  MatMulTransBReference(x.data(), w.data(), ref.data(), n, k, m);
  for (int i = 0; i < n * m; ++i) EXPECT_NEAR(y[i], ref[i], 1e-4 * std::sqrt(k)) << i;

  // Accumulate adds onto what is there.
  std::vector<float> acc(n * m, 1.5f);
  MatMulTransB(x.data(), w.data(), acc.data(), n, k, m, /*accumulate=*/true);
  for (int i = 0; i < n * m; ++i) EXPECT_NEAR(acc[i], ref[i] + 1.5f, 1e-4 * std::sqrt(k)) << i;
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, MatMulTest,
    ::testing::Combine(::testing::Values(MatmulImpl::kRows, MatmulImpl::kBlas, MatmulImpl::kLoops),
                       ::testing::Values(1, 3, 17), ::testing::Values(8, 256),
                       ::testing::Values(1, 33, 512)));

// Batch invariance: each row of a product of n rows is bit-identical to the same row
// multiplied alone, for every n (tile edges included) and widths off the 8-lane grid;
// every path the CPU has (scalar, AVX2, AVX-512: 8-row blocks with a 1..7-row tail) equals
// the others bit for bit, overwriting and accumulating.
TEST(RowwiseMatMulTest, EachRowIsTheSameWhateverTheBatchAndThePath) {
  std::vector<RowwisePath> paths;
  for (RowwisePath p : {RowwisePath::kScalar, RowwisePath::kAvx2, RowwisePath::kAvx512}) {
    if (RowwisePathSupported(p)) paths.push_back(p);
  }
  if (paths.size() < 3) std::cerr << "only " << paths.size() << " of 3 paths on this CPU\n";
  for (const int k : {5, 8, 67, 256}) {
    for (const int m : {1, 7, 8, 13, 17, 64}) {
      const auto w = Random(m * k, 11 + k);
      const auto x = Random(40 * k, 12 + m);
      const auto base = Random(40 * m, 13 + k + m);  // y before an accumulating product
      std::vector<std::vector<float>> alone(40, std::vector<float>(m));
      for (int i = 0; i < 40; ++i) {
        RowwiseMatMulTransB(&x[i * k], w.data(), alone[i].data(), 1, k, m, false);
      }
      for (const int n : {1, 2, 3, 4, 5, 6, 7, 13, 40}) {
        for (const RowwisePath path : paths) {
          std::vector<float> y(n * m), acc(base.begin(), base.begin() + n * m);
          RowwiseMatMulTransBOn(path, x.data(), w.data(), y.data(), n, k, m, false);
          RowwiseMatMulTransBOn(path, x.data(), w.data(), acc.data(), n, k, m, true);
          for (int i = 0; i < n; ++i) {
            for (int j = 0; j < m; ++j) {
              ASSERT_EQ(y[i * m + j], alone[i][j])
                  << "path " << int(path) << " k " << k << " m " << m << " n " << n << " row " << i;
              ASSERT_EQ(acc[i * m + j], base[i * m + j] + alone[i][j])
                  << "accumulating, path " << int(path) << " k " << k << " m " << m << " n " << n;
            }
          }
        }
      }
    }
  }
}

TEST(RowwiseMatMulTest, LargeProductsSplitOverThreadsKeepEveryRow) {
  // Past the parallel threshold (n * m * k >= 2^20) the rows of w are split over threads.
  const int k = 512, m = 300, n = 9;
  const auto w = Random(m * k, 21), x = Random(n * k, 22);
  std::vector<float> y(n * m), alone(m);
  RowwiseMatMulTransB(x.data(), w.data(), y.data(), n, k, m, false);
  for (int i = 0; i < n; ++i) {
    RowwiseMatMulTransB(&x[i * k], w.data(), alone.data(), 1, k, m, false);
    for (int j = 0; j < m; ++j) ASSERT_EQ(y[i * m + j], alone[j]) << i << " " << j;
  }
}

TEST(RmsNormTest, ScalesToUnitRootMeanSquareTimesWeight) {
  const int n = 3, d = 64;
  const auto x = Random(n * d, 3, 4.0f), w = Random(d, 4);
  std::vector<float> y(n * d);
  RmsNorm(x.data(), w.data(), y.data(), n, d, 1e-5f);
  for (int i = 0; i < n; ++i) {
    double ms = 0;
    for (int j = 0; j < d; ++j) ms += double(x[i * d + j]) * x[i * d + j];
    const double scale = 1.0 / std::sqrt(ms / d + 1e-5);
    for (int j = 0; j < d; ++j) EXPECT_NEAR(y[i * d + j], x[i * d + j] * scale * w[j], 1e-5);
  }
}

TEST(SoftmaxTest, SumsToOneAndSurvivesLargeLogits) {
  std::vector<float> x = {1000.0f, 1001.0f, 999.0f, -1e30f};
  Softmax(x.data(), x.size());
  EXPECT_NEAR(x[0] + x[1] + x[2] + x[3], 1.0, 1e-6);
  EXPECT_NEAR(x[1] / x[0], std::exp(1.0), 1e-4);
  EXPECT_EQ(x[3], 0.0f);
}

TEST(TopKRoutingTest, PicksLargestAndRenormalises) {
  const std::vector<float> logits = {0.1f, 2.0f, -1.0f, 1.5f, 1.9f};
  int32_t ids[2];
  float weights[2];
  TopKRouting(logits.data(), 5, 2, ids, weights);
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ(ids[1], 4);
  const double p1 = std::exp(2.0), p4 = std::exp(1.9);
  EXPECT_NEAR(weights[0], p1 / (p1 + p4), 1e-6);
  EXPECT_NEAR(weights[0] + weights[1], 1.0, 1e-6);
}

TEST(TopKRoutingTest, TiesGoToTheLowerId) {
  const std::vector<float> logits = {0.5f, 1.0f, 1.0f, 1.0f};
  int32_t ids[2];
  float weights[2];
  TopKRouting(logits.data(), 4, 2, ids, weights);
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ(ids[1], 2);
}

TEST(TopKRoutingTest, TopOneHasWeightOne) {
  const std::vector<float> logits = {0.3f, -0.2f, 0.31f};
  int32_t id;
  float weight;
  TopKRouting(logits.data(), 3, 1, &id, &weight);
  EXPECT_EQ(id, 2);
  EXPECT_FLOAT_EQ(weight, 1.0f);
}

TEST(RopeTableTest, PositionZeroIsIdentityAndRotationPreservesNorm) {
  const int hd = 16, heads = 2;
  RopeTable rope(hd, 10000.0, 64);
  auto x = Random(heads * hd, 5);
  auto y = x;
  const int64_t zero = 0;
  rope.Apply(y.data(), &zero, 1, heads);
  for (int i = 0; i < heads * hd; ++i) EXPECT_FLOAT_EQ(y[i], x[i]);

  const int64_t pos = 37;
  rope.Apply(y.data(), &pos, 1, heads);
  // rotate-half pairs (i, i + hd/2) rotate by pos * theta^(-2i/hd).
  for (int h = 0; h < heads; ++h) {
    for (int i = 0; i < hd / 2; ++i) {
      const double angle = pos * std::pow(10000.0, -2.0 * i / hd);
      const float a = x[h * hd + i], b = x[h * hd + i + hd / 2];
      EXPECT_NEAR(y[h * hd + i], a * std::cos(angle) - b * std::sin(angle), 1e-5);
      EXPECT_NEAR(y[h * hd + i + hd / 2], b * std::cos(angle) + a * std::sin(angle), 1e-5);
    }
  }
}

// Straightforward attention: full score matrix with an explicit mask.
std::vector<float> NaiveAttention(const std::vector<float>& q, const std::vector<float>& k,
                                  const std::vector<float>& v, int start, int n, int heads,
                                  int kv_heads, int hd, int window) {
  std::vector<float> out(n * heads * hd, 0.0f);
  for (int t = 0; t < n; ++t) {
    const int p = start + t;
    for (int h = 0; h < heads; ++h) {
      const int g = h / (heads / kv_heads);
      std::vector<double> s(p + 1, -INFINITY);
      double max = -INFINITY;
      for (int j = 0; j <= p; ++j) {
        if (window > 0 && p - j >= window) continue;
        double dot = 0;
        for (int d = 0; d < hd; ++d) dot += q[(t * heads + h) * hd + d] * k[(j * kv_heads + g) * hd + d];
        s[j] = dot / std::sqrt(double(hd));
        max = std::max(max, s[j]);
      }
      double sum = 0;
      for (int j = 0; j <= p; ++j) sum += (s[j] = std::exp(s[j] - max));
      for (int j = 0; j <= p; ++j) {
        for (int d = 0; d < hd; ++d) out[(t * heads + h) * hd + d] += s[j] / sum * v[(j * kv_heads + g) * hd + d];
      }
    }
  }
  return out;
}

class AttentionTest : public ::testing::TestWithParam<std::tuple<int, int, int, int>> {};

TEST_P(AttentionTest, MatchesMaskedSoftmaxReference) {
  const auto [heads, kv_heads, start, window] = GetParam();
  const int hd = 8, n = 5, total = start + n;
  const auto q = Random(n * heads * hd, 6), k = Random(total * kv_heads * hd, 7),
             v = Random(total * kv_heads * hd, 8);
  std::vector<float> out(n * heads * hd);
  Attention(q.data(), k.data(), v.data(), out.data(), start, n, heads, kv_heads, hd, window);
  const auto ref = NaiveAttention(q, k, v, start, n, heads, kv_heads, hd, window);
  for (size_t i = 0; i < out.size(); ++i) EXPECT_NEAR(out[i], ref[i], 1e-5) << i;
}

// A prefill's (token, head) pairs are dealt out to the threads: any count gives the bits
// of one thread.
TEST_P(AttentionTest, ThreadsChangeNoBit) {
  const auto [heads, kv_heads, start, window] = GetParam();
  const int hd = 8, n = 7, total = start + n;
  const auto q = Random(n * heads * hd, 9), k = Random(total * kv_heads * hd, 10),
             v = Random(total * kv_heads * hd, 11);
  const int saved = omp_get_max_threads();
  std::vector<float> one;
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    std::vector<float> out(n * heads * hd);
    Attention(q.data(), k.data(), v.data(), out.data(), start, n, heads, kv_heads, hd, window);
    if (threads == 1) one = out;
    ASSERT_EQ(out, one) << threads << " threads";
  }
  omp_set_num_threads(saved);
}

INSTANTIATE_TEST_SUITE_P(GroupsAndWindows, AttentionTest,
                         ::testing::Combine(::testing::Values(4, 8), ::testing::Values(1, 2, 4),
                                            // 600: past the scores kept on the stack
                                            ::testing::Values(0, 6, 600), ::testing::Values(0, 3)));

TEST(SiluMulTest, IsSiluTimesUp) {
  std::vector<float> gate = {-2.0f, 0.0f, 3.0f}, up = {1.0f, 5.0f, -0.5f};
  SiluMul(gate.data(), up.data(), 3);
  EXPECT_NEAR(gate[0], -2.0 / (1 + std::exp(2.0)), 1e-6);
  EXPECT_EQ(gate[1], 0.0f);
  EXPECT_NEAR(gate[2], 3.0 / (1 + std::exp(-3.0)) * -0.5, 1e-6);
}

// Blocked (exponentials first, then a vectorised loop): the same bits as the formula
// element by element, over lengths around the block and values from -90 to 90 (exp
// overflowing and underflowing included).
TEST(SiluMulTest, SameBitsAsTheFormulaElementByElement) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> value(-90.0f, 90.0f), small(-4.0f, 4.0f);
  for (int64_t count : {1, 7, 255, 256, 257, 1000, 4096}) {
    SCOPED_TRACE(count);
    std::vector<float> gate(count), up(count);
    for (int64_t i = 0; i < count; ++i) {
      gate[i] = i % 3 == 0 ? value(rng) : small(rng);
      up[i] = small(rng);
    }
    std::vector<float> expected(count);
    for (int64_t i = 0; i < count; ++i) {
      const volatile float g = gate[i];  // one element at a time, as before
      expected[i] = g / (1.0f + std::exp(-g)) * up[i];
    }
    SiluMul(gate.data(), up.data(), count);
    for (int64_t i = 0; i < count; ++i) {
      ASSERT_EQ(std::memcmp(&gate[i], &expected[i], sizeof(float)), 0)
          << i << ": " << gate[i] << " vs " << expected[i];
    }
  }
}

// An OpenMP region is entered only where it would run on more than one thread (an
// inactive one costs a futex call at its end); the caller's thread count decides.
TEST(OmpRegionPaysTest, OnlyWhenWantedAndMoreThanOneThread) {
  const int before = omp_get_max_threads();
  omp_set_num_threads(1);
  EXPECT_FALSE(OmpRegionPays(true));
  EXPECT_FALSE(OmpRegionPays(false));
  omp_set_num_threads(2);
  EXPECT_TRUE(OmpRegionPays(true));
  EXPECT_FALSE(OmpRegionPays(false));
  omp_set_num_threads(before);
}

// Attention gives the same bits on one thread (no region) and on two (a region), for
// rows enough to want one.
TEST(OmpRegionPaysTest, AttentionSameBitsWithAndWithoutTheRegion) {
  const int64_t heads = 8, kv_heads = 2, hd = 16, start = 5, n = 4;
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> q(n * heads * hd), k((start + n) * kv_heads * hd), v(k.size());
  for (auto* vec : {&q, &k, &v}) {
    for (float& x : *vec) x = u(rng);
  }
  const int before = omp_get_max_threads();
  std::vector<float> one(q.size()), two(q.size());
  omp_set_num_threads(1);
  Attention(q.data(), k.data(), v.data(), one.data(), start, n, heads, kv_heads, hd, 0);
  omp_set_num_threads(2);
  Attention(q.data(), k.data(), v.data(), two.data(), start, n, heads, kv_heads, hd, 0);
  omp_set_num_threads(before);
  EXPECT_EQ(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)), 0);
}

// Long enough to run on several threads: every value is still the one-value formula.
TEST(SiluMulTest, ThreadsChangeNoBit) {
  const int64_t count = (int64_t{1} << 16) + 3;
  std::mt19937 rng(3);
  std::normal_distribution<float> d(0.0f, 3.0f);
  std::vector<float> gate(count), up(count);
  for (int64_t i = 0; i < count; ++i) gate[i] = d(rng), up[i] = d(rng);
  std::vector<float> want(count);
  for (int64_t i = 0; i < count; ++i) {
    float g = gate[i], u = up[i];
    SiluMul(&g, &u, 1);
    want[i] = g;
  }
  const int saved = omp_get_max_threads();
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    std::vector<float> got = gate;
    SiluMul(got.data(), up.data(), count);
    ASSERT_EQ(got, want) << threads << " threads";
  }
  omp_set_num_threads(saved);
}

TEST(MatmulImplTest, ParsesNamesAndRejectsUnknown) {
  EXPECT_EQ(*ParseMatmulImpl("rows"), MatmulImpl::kRows);
  EXPECT_EQ(*ParseMatmulImpl("blas"), MatmulImpl::kBlas);
  EXPECT_EQ(*ParseMatmulImpl("loops"), MatmulImpl::kLoops);
  EXPECT_FALSE(ParseMatmulImpl("cublas").ok());
}

}  // namespace
}  // namespace moe::cpu
