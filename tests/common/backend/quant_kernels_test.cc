// The fused kernels against dequantise-then-multiply (quant::DequantizeRowsReference, then
// MatMulTransBReference), for every width, token counts on both sides of the
// matrix-vector / tiled matrix-matrix switch, and both code paths (AVX2 and scalar).
#include "common/backend/cpu/quant_kernels.h"

#include <cmath>
#include <random>
#include <vector>

#include "common/backend/cpu/cpu_kernels.h"
#include "common/quant/hqq.h"
#include "gtest/gtest.h"

namespace moe::cpu {
namespace {

struct Case {
  int bits;
  DType dtype16;
  int64_t group;
};

class QuantKernelsTest : public ::testing::TestWithParam<Case> {
 protected:
  void TearDown() override { SetQuantKernelPath(BestQuantKernelPath()); }
};

std::vector<float> Random(int64_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(count);
  for (float& x : v) x = d(rng);
  return v;
}

TEST_P(QuantKernelsTest, FusedMatchesDequantiseThenMultiply) {
  const Case c = GetParam();
  const int64_t rows = 72, cols = 256;  // 72: tiles and row chunks end mid-way
  const std::vector<float> w = Random(rows * cols, 11);
  quant::QuantizeOptions o;
  o.spec.bits = c.bits;
  o.spec.dtype16 = c.dtype16;
  o.spec.group_size = c.group;
  auto q = quant::QuantizeMatrix(w.data(), rows, cols, o);
  ASSERT_TRUE(q.ok()) << q.status();
  std::vector<float> dense(rows * cols);
  quant::DequantizeRowsReference(q->view(), 0, rows, dense.data());

  std::vector<QuantKernelPath> paths = {QuantKernelPath::kScalar};
  if (BestQuantKernelPath() == QuantKernelPath::kAvx2) paths.push_back(QuantKernelPath::kAvx2);
  for (QuantKernelPath path : paths) {
    SetQuantKernelPath(path);
    SCOPED_TRACE(path == QuantKernelPath::kAvx2 ? "avx2" : "scalar");
    std::vector<float> tile(rows * cols);
    DequantizeRows(q->view(), 0, rows, tile.data());
    for (int64_t i = 0; i < rows * cols; ++i) ASSERT_NEAR(tile[i], dense[i], 1e-6f * (1 + std::fabs(dense[i]))) << i;
    for (int64_t n : {1, 2, 3, 17}) {
      SCOPED_TRACE(n);
      const std::vector<float> x = Random(n * cols, 100 + n);
      std::vector<float> expected(n * rows), got(n * rows, 0.5f), acc(n * rows, 0.5f);
      MatMulTransBReference(x.data(), dense.data(), expected.data(), n, cols, rows);
      QuantMatMulTransB(q->view(), x.data(), got.data(), n);
      QuantMatMulTransB(q->view(), x.data(), acc.data(), n, /*accumulate=*/true);
      double scale = 0;
      for (float v : expected) scale = std::max(scale, double(std::fabs(v)));
      for (int64_t i = 0; i < n * rows; ++i) {
        ASSERT_NEAR(got[i], expected[i], 1e-5 * scale) << i;
        ASSERT_NEAR(acc[i], expected[i] + 0.5f, 1e-5 * scale) << i;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Widths, QuantKernelsTest,
                         ::testing::Values(Case{2, DType::kBF16, 64}, Case{3, DType::kBF16, 64},
                                           Case{4, DType::kBF16, 64}, Case{8, DType::kBF16, 64},
                                           Case{3, DType::kBF16, 32}, Case{4, DType::kBF16, 128},
                                           Case{16, DType::kBF16, 64}, Case{16, DType::kF16, 64}),
                         [](const auto& info) {
                           return absl::StrCat(info.param.bits, "bit_g", info.param.group,
                                               info.param.bits == 16 ? DTypeName(info.param.dtype16) : "");
                         });

}  // namespace
}  // namespace moe::cpu
