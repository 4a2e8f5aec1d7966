// The quantizer and the packed layout: codes round-trip through PackBlock/UnpackCode,
// HQQ beats round-to-nearest, errors shrink with bits, 16-bit storage is exact for
// BF16 values, and sizes follow the documented formulas.
#include "common/quant/hqq.h"

#include <cmath>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moe::quant {
namespace {

using ::testing::HasSubstr;

std::vector<float> Gaussian(int64_t count, uint32_t seed, float stddev = 0.02f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, stddev);
  std::vector<float> v(count);
  for (float& x : v) x = d(rng);
  // A few outliers, as trained weights have: where HQQ's lp error pays.
  for (int64_t i = 0; i < count; i += 97) v[i] *= 6;
  return v;
}

QuantizeOptions Options(int bits, Method method, int64_t group = 64) {
  QuantizeOptions o;
  o.spec.bits = bits;
  o.spec.group_size = group;
  o.method = method;
  return o;
}

double RelativeError(const QuantizedMatrix& q) { return std::sqrt(q.squared_error / q.squared_norm); }

TEST(PackBlockTest, EveryCodeOfEveryWidthRoundTrips) {
  std::mt19937 rng(7);
  for (int bits : {2, 3, 4, 8}) {
    SCOPED_TRACE(bits);
    uint8_t codes[kBlock];
    for (int64_t i = 0; i < kBlock; ++i) codes[i] = uint8_t(rng() % (1u << bits));
    std::vector<uint8_t> block(bits * kBlock / 8);
    PackBlock(codes, bits, block.data());
    for (int64_t i = 0; i < kBlock; ++i) EXPECT_EQ(UnpackCode(block.data(), bits, i), codes[i]) << i;
  }
}

TEST(MatrixLayoutTest, SizesFollowTheFormula) {
  MatrixLayout l;
  MatrixSpec spec;
  spec.bits = 3;
  spec.group_size = 64;
  ASSERT_TRUE(MatrixLayout::Compute(14336, 4096, spec, "w1", &l).ok());
  const int64_t values = int64_t{14336} * 4096, groups = values / 64;
  EXPECT_EQ(l.codes_bytes, values * 3 / 8);
  EXPECT_EQ(l.groups, groups);
  EXPECT_EQ(l.meta_count, (groups + 127) / 128);
  EXPECT_EQ(l.total_bytes, AlignUp(values * 3 / 8, 64) + 2 * AlignUp(groups, 64) +
                               AlignUp(l.meta_count * 16, 64));
  spec.bits = 16;
  ASSERT_TRUE(MatrixLayout::Compute(3, 5, spec, "norm", &l).ok());
  EXPECT_EQ(l.total_bytes, 64);
}

TEST(MatrixLayoutTest, RejectsSpecsThatDoNotFitTheShape) {
  MatrixLayout l;
  MatrixSpec spec;
  spec.bits = 5;
  EXPECT_THAT(std::string(MatrixLayout::Compute(8, 64, spec, "w", &l).message()),
              HasSubstr("bits 5 is not one of"));
  spec.bits = 4;
  spec.group_size = 64;
  EXPECT_THAT(std::string(MatrixLayout::Compute(8, 96, spec, "w", &l).message()),
              HasSubstr("does not divide the input dimension 96"));
  spec.group_size = 40;
  EXPECT_THAT(std::string(MatrixLayout::Compute(8, 120, spec, "w", &l).message()),
              HasSubstr("multiple of 32"));
}

TEST(QuantizeTest, HqqErrorIsBelowRoundToNearestAtEveryWidth) {
  const int64_t rows = 64, cols = 256;
  const std::vector<float> w = Gaussian(rows * cols, 1);
  for (int bits : {2, 3, 4}) {
    SCOPED_TRACE(bits);
    auto hqq = QuantizeMatrix(w.data(), rows, cols, Options(bits, Method::kHqq));
    auto rtn = QuantizeMatrix(w.data(), rows, cols, Options(bits, Method::kRtn));
    ASSERT_TRUE(hqq.ok() && rtn.ok());
    EXPECT_LT(RelativeError(*hqq), RelativeError(*rtn));
  }
}

TEST(QuantizeTest, ErrorFallsWithMoreBitsAndSmallerGroups) {
  const int64_t rows = 32, cols = 512;
  const std::vector<float> w = Gaussian(rows * cols, 2);
  double previous = 1e9;
  for (int bits : {2, 3, 4, 8}) {
    auto q = QuantizeMatrix(w.data(), rows, cols, Options(bits, Method::kHqq));
    ASSERT_TRUE(q.ok());
    EXPECT_LT(RelativeError(*q), previous) << bits;
    previous = RelativeError(*q);
  }
  EXPECT_LT(previous, 0.01);  // 8 bits
  auto g32 = QuantizeMatrix(w.data(), rows, cols, Options(3, Method::kHqq, 32));
  auto g128 = QuantizeMatrix(w.data(), rows, cols, Options(3, Method::kHqq, 128));
  ASSERT_TRUE(g32.ok() && g128.ok());
  EXPECT_LT(RelativeError(*g32), RelativeError(*g128));
}

TEST(QuantizeTest, ReportedErrorIsTheErrorOfTheStoredBytes) {
  const int64_t rows = 16, cols = 128;
  const std::vector<float> w = Gaussian(rows * cols, 3);
  auto q = QuantizeMatrix(w.data(), rows, cols, Options(4, Method::kHqq));
  ASSERT_TRUE(q.ok());
  std::vector<float> back(rows * cols);
  DequantizeRowsReference(q->view(), 0, rows, back.data());
  double e = 0;
  for (int64_t i = 0; i < rows * cols; ++i) e += double(w[i] - back[i]) * (w[i] - back[i]);
  EXPECT_NEAR(e, q->squared_error, 1e-9);
  // Every group's range is covered: no code saturates far from its weight.
  for (int64_t i = 0; i < rows * cols; ++i) EXPECT_NEAR(back[i], w[i], 0.03) << i;
}

TEST(QuantizeTest, ConstantAndZeroGroupsStayExactOrClose) {
  std::vector<float> w(8 * 64, 0.0f);
  for (int64_t i = 64; i < 128; ++i) w[i] = 0.5f;
  auto q = QuantizeMatrix(w.data(), 8, 64, Options(2, Method::kHqq));
  ASSERT_TRUE(q.ok());
  std::vector<float> back(w.size());
  DequantizeRowsReference(q->view(), 0, 8, back.data());
  for (size_t i = 0; i < w.size(); ++i) EXPECT_NEAR(back[i], w[i], 5e-3) << i;
}

TEST(QuantizeTest, SixteenBitStorageKeepsBf16ValuesExactly) {
  std::vector<float> w = Gaussian(4 * 40, 4);
  for (float& x : w) x = Bf16ToF32(F32ToBf16(x));
  QuantizeOptions o;
  o.spec.bits = 16;
  o.spec.dtype16 = DType::kBF16;
  auto q = QuantizeMatrix(w.data(), 4, 40, o);
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->squared_error, 0.0);
}

}  // namespace
}  // namespace moe::quant
