// The 16-bit (BF16/F16 stored) matrix product: on every path (scalar, AVX2, AVX-512) and
// for every batch size it is bit for bit the scalar fp32 rowwise product of the widened
// matrix, so a row's result depends neither on the path nor on its batch mates; odd
// widths (a k % 8 tail), row counts off the 8- and 4-row blocks, and token counts that
// end tiles mid-way.
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/backend/cpu/quant_kernels.h"
#include "common/backend/cpu/rowwise_matmul.h"
#include "common/dtype.h"
#include "common/quant/hqq.h"
#include "common/quant/quant_format.h"
#include "gtest/gtest.h"

namespace moe::cpu {
namespace {

std::vector<float> Random(size_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(count);
  for (float& x : v) x = d(rng);
  return v;
}

// w rounded to `dtype`, as stored bits and widened back.
struct Matrix16 {
  std::vector<uint16_t> bits;
  std::vector<float> widened;
};

Matrix16 Make16(const std::vector<float>& w, DType dtype) {
  Matrix16 m;
  for (float v : w) {
    const uint16_t b = dtype == DType::kBF16 ? F32ToBf16(v) : F32ToF16(v);
    m.bits.push_back(b);
    m.widened.push_back(dtype == DType::kBF16 ? Bf16ToF32(b) : F16ToF32(b));
  }
  return m;
}

std::vector<RowwisePath> Paths() {
  std::vector<RowwisePath> paths;
  for (RowwisePath p : {RowwisePath::kScalar, RowwisePath::kAvx2, RowwisePath::kAvx512}) {
    if (RowwisePathSupported(p)) paths.push_back(p);
  }
  return paths;
}

class Dense16Test : public ::testing::TestWithParam<DType> {};

TEST_P(Dense16Test, EveryPathAndBatchIsTheScalarFp32ProductOfTheWidenedMatrix) {
  const DType dtype = GetParam();
  for (const int64_t k : {5, 8, 67, 100, 256}) {
    for (const int64_t m : {1, 7, 8, 9, 37}) {
      const Matrix16 w = Make16(Random(m * k, 1 + k * m), dtype);
      const std::vector<float> x = Random(64 * k, 2 + k);
      const std::vector<float> base = Random(64 * m, 3);
      for (const int64_t n : {1, 2, 3, 4, 5, 6, 7, 13, 32, 64}) {
        std::vector<float> want(n * m), want_acc(base.begin(), base.begin() + n * m);
        RowwiseMatMulTransBOn(RowwisePath::kScalar, x.data(), w.widened.data(), want.data(), n,
                              k, m, false);
        RowwiseMatMulTransBOn(RowwisePath::kScalar, x.data(), w.widened.data(), want_acc.data(),
                              n, k, m, true);
        for (const RowwisePath path : Paths()) {
          SCOPED_TRACE(absl::StrCat("k ", k, " m ", m, " n ", n, " path ", int(path)));
          std::vector<float> y(n * m), acc(base.begin(), base.begin() + n * m);
          const uint16_t* ws[1] = {w.bits.data()};
          float* ys[1] = {y.data()};
          RowwiseMatMul16TransBOn(path, dtype, x.data(), ws, ys, 1, n, k, m, false);
          ASSERT_EQ(y, want);
          ys[0] = acc.data();
          RowwiseMatMul16TransBOn(path, dtype, x.data(), ws, ys, 1, n, k, m, true);
          ASSERT_EQ(acc, want_acc);
        }
      }
    }
  }
}

// A token's row alone gives the bits it gets in a batch of 13 (a row of the batch is
// the scalar product above; this checks the one-token tiles on their own).
TEST_P(Dense16Test, EachTokenAloneIsItsRowOfTheBatch) {
  const DType dtype = GetParam();
  const int64_t k = 131, m = 45, n = 13;
  const Matrix16 w = Make16(Random(m * k, 4), dtype);
  const std::vector<float> x = Random(n * k, 5);
  const uint16_t* ws[1] = {w.bits.data()};
  for (const RowwisePath path : Paths()) {
    std::vector<float> all(n * m), alone(m);
    float* ys[1] = {all.data()};
    RowwiseMatMul16TransBOn(path, dtype, x.data(), ws, ys, 1, n, k, m, false);
    for (int64_t i = 0; i < n; ++i) {
      ys[0] = alone.data();
      RowwiseMatMul16TransBOn(path, dtype, x.data() + i * k, ws, ys, 1, 1, k, m, false);
      ASSERT_EQ(alone, std::vector<float>(all.begin() + i * m, all.begin() + (i + 1) * m))
          << "path " << int(path) << " token " << i;
    }
  }
}

// Two matrices in one call (an expert's w1 and w3), past the threshold where the rows
// are split over threads, give the bits of one call each.
TEST_P(Dense16Test, TwoMatricesInOneParallelCallAreTwoCalls) {
  const DType dtype = GetParam();
  const int64_t k = 512, m = 301, n = 9;
  const Matrix16 a = Make16(Random(m * k, 6), dtype), b = Make16(Random(m * k, 7), dtype);
  const std::vector<float> x = Random(n * k, 8);
  for (const RowwisePath path : Paths()) {
    std::vector<float> ya(n * m), yb(n * m), ea(n * m), eb(n * m);
    const uint16_t* ws[2] = {a.bits.data(), b.bits.data()};
    float* ys[2] = {ya.data(), yb.data()};
    RowwiseMatMul16TransBOn(path, dtype, x.data(), ws, ys, 2, n, k, m, false);
    RowwiseMatMulTransBOn(RowwisePath::kScalar, x.data(), a.widened.data(), ea.data(), n, k, m, false);
    RowwiseMatMulTransBOn(RowwisePath::kScalar, x.data(), b.widened.data(), eb.data(), n, k, m, false);
    ASSERT_EQ(ya, ea) << "path " << int(path);
    ASSERT_EQ(yb, eb) << "path " << int(path);
  }
}

// Through the quantized kernels' entry point (how the engine and the worker call it):
// every QuantKernelPath gives the scalar fp32 product of the widened matrix.
TEST_P(Dense16Test, QuantMatMulOnEveryKernelPathIsTheRowwiseProduct) {
  const DType dtype = GetParam();
  const int64_t k = 100, m = 37;
  const std::vector<float> dense = Random(m * k, 9);
  quant::QuantizeOptions o;
  o.spec.bits = 16;
  o.spec.dtype16 = dtype;
  auto q = quant::QuantizeMatrix(dense.data(), m, k, o);
  ASSERT_TRUE(q.ok()) << q.status();
  std::vector<float> widened(m * k);
  quant::DequantizeRowsReference(q->view(), 0, m, widened.data());
  for (const int64_t n : {1, 4, 7, 32}) {
    const std::vector<float> x = Random(n * k, 10 + n);
    std::vector<float> want(n * m);
    RowwiseMatMulTransBOn(RowwisePath::kScalar, x.data(), widened.data(), want.data(), n, k, m, false);
    for (QuantKernelPath p : {QuantKernelPath::kScalar, QuantKernelPath::kAvx2,
                              QuantKernelPath::kAvxVnni, QuantKernelPath::kAvx512Vnni}) {
      if (!QuantKernelPathSupported(p)) continue;
      SetQuantKernelPath(p);
      std::vector<float> y(n * m);
      QuantMatMulTransB(q->view(), x.data(), y.data(), n);
      ASSERT_EQ(y, want) << QuantKernelPathName(p) << " n " << n;
    }
  }
  SetQuantKernelPath(BestQuantKernelPath());
}

INSTANTIATE_TEST_SUITE_P(Types, Dense16Test, ::testing::Values(DType::kBF16, DType::kF16),
                         [](const auto& info) { return std::string(DTypeName(info.param)); });

}  // namespace
}  // namespace moe::cpu
