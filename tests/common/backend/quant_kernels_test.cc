// The fused kernels against dequantise-then-multiply (quant::DequantizeRowsReference, then
// MatMulTransBReference in double), for every width and every code path this CPU runs
// (scalar, AVX2, and the VNNI ones where present), on shapes with odd block counts, row
// counts and token counts that end tiles mid-way; and the properties the engine relies on:
// a token's outputs do not depend on the batch it came in, and the SIMD paths agree bit
// for bit.
#include "common/backend/cpu/quant_kernels.h"

#include <omp.h>

#include <cmath>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/backend/cpu/cpu_kernels.h"
#include "common/backend/cpu/quant_tile_kernels.h"
#include "common/quant/hqq.h"
#include "gtest/gtest.h"

namespace moe::cpu {
namespace {

using quant::kBlock;

struct Case {
  int bits;
  DType dtype16;
  int64_t group;
  int64_t cols;
};

std::vector<float> Random(int64_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(count);
  for (float& x : v) x = d(rng);
  return v;
}

std::vector<QuantKernelPath> Paths() {
  std::vector<QuantKernelPath> paths;
  for (QuantKernelPath p : {QuantKernelPath::kScalar, QuantKernelPath::kAvx2,
                            QuantKernelPath::kAvxVnni, QuantKernelPath::kAvx512Vnni}) {
    if (QuantKernelPathSupported(p)) paths.push_back(p);
  }
  return paths;
}

// x as the packed kernels see it: QuantizeActivationBlocks's q times its block scale.
std::vector<float> ActivationsAsQuantized(const std::vector<float>& x, int64_t cols) {
  std::vector<float> out(x.size());
  std::vector<int8_t> q(cols);
  std::vector<float> d(cols / kBlock);
  for (size_t t = 0; t < x.size() / cols; ++t) {
    QuantizeActivationBlocks(x.data() + t * cols, cols, q.data(), d.data());
    for (int64_t c = 0; c < cols; ++c) out[t * cols + c] = d[c / kBlock] * q[c];
  }
  return out;
}

class QuantKernelsTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    const Case c = GetParam();
    w_ = Random(kRows * c.cols, 11);
    quant::QuantizeOptions o;
    o.spec.bits = c.bits;
    o.spec.dtype16 = c.dtype16;
    o.spec.group_size = c.group;
    auto q = quant::QuantizeMatrix(w_.data(), kRows, c.cols, o);
    ASSERT_TRUE(q.ok()) << q.status();
    q_ = std::move(*q);
    dense_.resize(kRows * c.cols);
    quant::DequantizeRowsReference(q_.view(), 0, kRows, dense_.data());
  }
  void TearDown() override { SetQuantKernelPath(BestQuantKernelPath()); }

  std::vector<float> Run(QuantKernelPath path, const std::vector<float>& x, int64_t n,
                         bool accumulate = false, float init = 0.0f) {
    SetQuantKernelPath(path);
    std::vector<float> y(n * kRows, init);
    QuantMatMulTransB(q_.view(), x.data(), y.data(), n, accumulate);
    return y;
  }

  static constexpr int64_t kRows = 37;  // not a multiple of any tile or chunk
  std::vector<float> w_, dense_;
  quant::QuantizedMatrix q_;
};

TEST_P(QuantKernelsTest, EveryPathMatchesDequantiseThenMultiply) {
  const Case c = GetParam();
  const int64_t cols = c.cols;
  const bool packed = c.bits != 16;
  for (QuantKernelPath path : Paths()) {
    SCOPED_TRACE(QuantKernelPathName(path));
    for (int64_t n : {1, 2, 3, 4, 5, 9, 17}) {
      SCOPED_TRACE(absl::StrCat("n=", n));
      const std::vector<float> x = Random(n * cols, 100 + n);
      // Packed matrices multiply the int8 activations: checked tightly against those, and
      // against the exact x within the activation rounding, sum |w| d_b / 2.
      const std::vector<float> xq = packed ? ActivationsAsQuantized(x, cols) : x;
      std::vector<float> exact(n * kRows), on_xq(n * kRows);
      MatMulTransBReference(x.data(), dense_.data(), exact.data(), n, cols, kRows);
      MatMulTransBReference(xq.data(), dense_.data(), on_xq.data(), n, cols, kRows);
      const std::vector<float> got = Run(path, x, n);
      const std::vector<float> acc = Run(path, x, n, /*accumulate=*/true, 0.5f);
      for (int64_t t = 0; t < n; ++t) {
        for (int64_t r = 0; r < kRows; ++r) {
          // fp32 rounding: the kernels sum s * (q . x - z sum x), so |s z| |x| counts too.
          double bound = 0, rounding = 0;
          for (int64_t k = 0; k < cols; ++k) {
            const int64_t g = (r * cols + k) / c.group;
            const double sz = packed ? std::fabs(q_.view().Scale(g) * q_.view().Zero(g)) : 0.0;
            bound += (std::fabs(dense_[r * cols + k]) + sz) * std::fabs(xq[t * cols + k]);
            rounding += std::fabs(dense_[r * cols + k]) * std::fabs(x[t * cols + k] - xq[t * cols + k]);
          }
          const int64_t i = t * kRows + r;
          ASSERT_NEAR(got[i], on_xq[i], 1e-5 * bound + 1e-6) << "t " << t << " r " << r;
          ASSERT_NEAR(acc[i], on_xq[i] + 0.5f, 1e-5 * bound + 1e-6) << "t " << t << " r " << r;
          ASSERT_NEAR(got[i], exact[i], rounding + 1e-5 * bound + 1e-6) << "t " << t << " r " << r;
        }
      }
    }
  }
}

// Batch invariance: a token gives the same bits alone, in a batch, and at any place in
// a tile (here 9 tokens = tiles of 4, 4, 1; then tokens 2..8 alone as 4, 3).
TEST_P(QuantKernelsTest, TokenResultsDoNotDependOnTheBatch) {
  const int64_t cols = GetParam().cols, n = 9;
  const std::vector<float> x = Random(n * cols, 7);
  for (QuantKernelPath path : Paths()) {
    SCOPED_TRACE(QuantKernelPathName(path));
    const std::vector<float> all = Run(path, x, n);
    for (int64_t t = 0; t < n; ++t) {
      const std::vector<float> one(x.begin() + t * cols, x.begin() + (t + 1) * cols);
      const std::vector<float> alone = Run(path, one, 1);
      ASSERT_EQ(alone, std::vector<float>(all.begin() + t * kRows, all.begin() + (t + 1) * kRows))
          << "token " << t;
    }
    const std::vector<float> tail(x.begin() + 2 * cols, x.end());
    ASSERT_EQ(Run(path, tail, n - 2), std::vector<float>(all.begin() + 2 * kRows, all.end()));
  }
}

// The SIMD paths compute the same int32 lane sums and the same fp32 operations.
TEST_P(QuantKernelsTest, SimdPathsAgreeBitForBit) {
  const int64_t cols = GetParam().cols, n = 6;
  const std::vector<float> x = Random(n * cols, 8);
  std::vector<float> first;
  for (QuantKernelPath path : Paths()) {
    if (path == QuantKernelPath::kScalar) continue;
    const std::vector<float> y = Run(path, x, n);
    if (first.empty()) {
      first = y;
    } else {
      EXPECT_EQ(y, first) << QuantKernelPathName(path);
    }
  }
}

TEST_P(QuantKernelsTest, DequantizeRowsMatchesTheReference) {
  const int64_t cols = GetParam().cols;
  for (QuantKernelPath path : Paths()) {
    SetQuantKernelPath(path);
    SCOPED_TRACE(QuantKernelPathName(path));
    std::vector<float> tile(kRows * cols);
    DequantizeRows(q_.view(), 0, kRows, tile.data());
    for (int64_t i = 0; i < kRows * cols; ++i) {
      ASSERT_NEAR(tile[i], dense_[i], 1e-6f * (1 + std::fabs(dense_[i]))) << i;
    }
  }
}

// Two matrices in one call (an expert's w1 and w3) give the bits of one call each, on
// every path; a second matrix of another format falls back to one call each.
TEST_P(QuantKernelsTest, TwoMatricesInOneCallAreTwoCalls) {
  const Case c = GetParam();
  const std::vector<float> w2 = Random(kRows * c.cols, 12);
  quant::QuantizeOptions o;
  o.spec.bits = c.bits;
  o.spec.dtype16 = c.dtype16;
  o.spec.group_size = c.group;
  auto q2 = quant::QuantizeMatrix(w2.data(), kRows, c.cols, o);
  ASSERT_TRUE(q2.ok()) << q2.status();
  if (c.bits == 16) {  // the other 16-bit type (cols need not hold a packed group)
    o.spec.dtype16 = c.dtype16 == DType::kBF16 ? DType::kF16 : DType::kBF16;
  } else {
    o.spec.bits = c.bits == 4 ? 2 : 4;
  }
  auto other = quant::QuantizeMatrix(w2.data(), kRows, c.cols, o);
  ASSERT_TRUE(other.ok()) << other.status();
  for (QuantKernelPath path : Paths()) {
    SCOPED_TRACE(QuantKernelPathName(path));
    for (int64_t n : {1, 2, 5}) {
      const std::vector<float> x = Random(n * c.cols, 200 + n);
      for (const quant::QuantizedMatrix* b : {&*q2, &*other}) {
        SetQuantKernelPath(path);
        std::vector<float> ya(n * kRows), yb(n * kRows), ea(n * kRows), eb(n * kRows);
        QuantMatMulTransB2(q_.view(), b->view(), x.data(), ya.data(), yb.data(), n);
        QuantMatMulTransB(q_.view(), x.data(), ea.data(), n);
        QuantMatMulTransB(b->view(), x.data(), eb.data(), n);
        ASSERT_EQ(ya, ea) << "n " << n;
        ASSERT_EQ(yb, eb) << "n " << n;
      }
    }
  }
}

// The SIMD paths' group scales (eight at a time, then a tail) are the format's formula
// (MatrixView::Scale and Zero) bit for bit, for runs that start anywhere, cross a
// meta-quantization group and end mid-vector.
TEST_P(QuantKernelsTest, SimdGroupScalesAreTheFormatsFormula) {
  if (GetParam().bits == 16 || !QuantKernelPathSupported(QuantKernelPath::kAvx2)) return;
  const quant::MatrixView w = q_.view();
  const tile::GroupScalesFn fn = tile::avx2::GroupScales();
  for (int64_t first : {int64_t{0}, int64_t{3}, quant::kMetaGroup - 5}) {
    for (int64_t count : {int64_t{1}, int64_t{8}, int64_t{13}, w.layout.groups - first}) {
      if (count < 1 || first + count > w.layout.groups) continue;
      SCOPED_TRACE(absl::StrCat("first ", first, " count ", count));
      std::vector<float> s(count), sz(count);
      fn(w, first, count, s.data(), sz.data());
      for (int64_t k = 0; k < count; ++k) {
        ASSERT_EQ(s[k], w.Scale(first + k)) << k;
        ASSERT_EQ(sz[k], w.Scale(first + k) * w.Zero(first + k)) << k;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Widths, QuantKernelsTest,
    ::testing::Values(
        // group 64 over 384 inputs: 12 blocks, 6 pairs; group 32 over 224: 7 blocks (the
        // last pair half empty); group 96 over 288: groups straddle pairs; group 192 over
        // 576: 9 pairs, 3 a group (AVX-512's two-pair 4-bit steps cross groups, one left).
        // 4-bit group 64 decodes through AVX-512's self-scaled tile (scales 16 groups at a
        // time): 384 inputs are 6 groups a row (one short chunk), 1152 are 18 (a whole
        // chunk and a short one; 37 rows of 18 groups cross meta groups inside chunks);
        // 576 are 9 (odd: the general tile). Prefill of 4-bit with an even block count a
        // row and a group (all 4-bit cases here but group 32) runs AVX-512's wide tiles
        // (4 rows x 4 tokens, tokens two a register; 37 rows end in a short tile that
        // takes the 2-row one, odd token counts leave a half-empty register).
        Case{2, DType::kBF16, 64, 384}, Case{3, DType::kBF16, 64, 384},
        Case{4, DType::kBF16, 64, 1152}, Case{4, DType::kBF16, 64, 576},
        Case{4, DType::kBF16, 64, 384}, Case{8, DType::kBF16, 64, 384},
        Case{2, DType::kBF16, 32, 224}, Case{3, DType::kBF16, 32, 224},
        Case{4, DType::kBF16, 32, 224}, Case{8, DType::kBF16, 32, 224},
        Case{3, DType::kBF16, 96, 288}, Case{4, DType::kBF16, 128, 256},
        Case{4, DType::kBF16, 192, 576},
        // 16-bit: 16-value steps, one 8-value step and a scalar tail (cols 100 = 6*16 + 4;
        // 120 = 7*16 + 8).
        Case{16, DType::kBF16, 64, 100}, Case{16, DType::kF16, 64, 100},
        Case{16, DType::kBF16, 64, 120}, Case{16, DType::kF16, 64, 384}),
    [](const auto& info) {
      return absl::StrCat(info.param.bits, "bit_g", info.param.group, "_cols", info.param.cols,
                          info.param.bits == 16 ? DTypeName(info.param.dtype16) : "");
    });

// Matrices large enough to run on several threads (kernel_pool.h hands out chunks of row
// tiles to whichever thread comes first) give the same bits on 1, 2 and 3 threads, for
// one and two matrices a call, decode and prefill, on every SIMD path.
TEST(QuantKernelsThreadsTest, TheThreadCountDoesNotChangeABit) {
  constexpr int64_t kRows = 1037, kCols = 1024;  // 1.06 M weights: above the threshold
  const std::vector<float> w = Random(kRows * kCols, 21);
  const int saved = omp_get_max_threads();
  for (int bits : {2, 3, 4, 8}) {
    quant::QuantizeOptions o;
    o.spec.bits = bits;
    o.method = quant::Method::kRtn;
    auto q = quant::QuantizeMatrix(w.data(), kRows, kCols, o);
    ASSERT_TRUE(q.ok()) << q.status();
    for (QuantKernelPath path : Paths()) {
      if (path == QuantKernelPath::kScalar) continue;
      SetQuantKernelPath(path);
      for (int64_t n : {1, 5}) {
        SCOPED_TRACE(absl::StrCat(bits, " bits, ", QuantKernelPathName(path), ", n ", n));
        const std::vector<float> x = Random(n * kCols, 300 + n);
        std::vector<float> one(n * kRows), one_b(n * kRows);
        omp_set_num_threads(1);
        QuantMatMulTransB(q->view(), x.data(), one.data(), n);
        for (int threads : {2, 3}) {
          omp_set_num_threads(threads);
          for (int repeat = 0; repeat < 3; ++repeat) {
            std::vector<float> y(n * kRows), ya(n * kRows), yb(n * kRows);
            QuantMatMulTransB(q->view(), x.data(), y.data(), n);
            QuantMatMulTransB2(q->view(), q->view(), x.data(), ya.data(), yb.data(), n);
            ASSERT_EQ(y, one) << threads << " threads";
            ASSERT_EQ(ya, one) << threads << " threads";
            ASSERT_EQ(yb, one) << threads << " threads";
          }
        }
      }
    }
  }
  omp_set_num_threads(saved);
  SetQuantKernelPath(BestQuantKernelPath());
}

TEST(QuantizeActivationBlocksTest, RoundsEachBlockToItsOwnScale) {
  std::vector<float> x = Random(3 * kBlock, 5);
  for (int64_t i = kBlock; i < 2 * kBlock; ++i) x[i] = 0;  // an all-zero block
  x[2 * kBlock + 3] = -40.0f;                              // a block with an outlier
  std::vector<int8_t> q(x.size());
  std::vector<float> d(3);
  QuantizeActivationBlocks(x.data(), x.size(), q.data(), d.data());
  EXPECT_EQ(d[1], 0.0f);
  EXPECT_FLOAT_EQ(d[2], 40.0f / 127);
  EXPECT_EQ(q[2 * kBlock + 3], -127);
  for (size_t i = 0; i < x.size(); ++i) {
    const float s = d[i / kBlock];
    ASSERT_LE(std::abs(int(q[i])), 127);
    ASSERT_LE(std::fabs(x[i] - s * q[i]), s / 2 * (1 + 1e-6f)) << i;
  }
}

// The SIMD paths quantize activations with AVX2 and the scalar path with plain C++: the
// same int8 values and scales, bit for bit, on random blocks, an all-zero block, a block of
// values that scale to exact halves (ties round to even), one with a NaN, and NaN-free
// outliers of every sign.
TEST(QuantizeActivationBlocksTest, SimdAndScalarAgreeBitForBit) {
  const int64_t blocks = 41;
  std::vector<float> x = Random(blocks * kBlock, 6);
  for (int64_t i = 0; i < kBlock; ++i) x[kBlock + i] = 0;
  for (int64_t i = 0; i < kBlock; ++i) x[2 * kBlock + i] = (i - 15.5f) * 127.0f / 16;  // max 127 * 15.5 / 16
  for (int64_t i = 0; i < kBlock; ++i) x[3 * kBlock + i] = 127.0f * (i % 5) / 2 - 200;  // |x| max 200
  x[4 * kBlock + 7] = std::nanf("");
  x[5 * kBlock + 31] = -1e30f;
  x[6 * kBlock] = 3e-39f;  // a denormal block maximum
  for (int64_t i = 1; i < kBlock; ++i) x[6 * kBlock + i] = 0;
  for (QuantKernelPath path : Paths()) {
    SCOPED_TRACE(QuantKernelPathName(path));
    std::vector<int8_t> q(x.size()), q0(x.size());
    std::vector<float> d(blocks), d0(blocks);
    SetQuantKernelPath(QuantKernelPath::kScalar);
    QuantizeActivationBlocks(x.data(), x.size(), q0.data(), d0.data());
    SetQuantKernelPath(path);
    QuantizeActivationBlocks(x.data(), x.size(), q.data(), d.data());
    for (int64_t b = 0; b < blocks; ++b) {
      if (b == 4) continue;  // the NaN's own value is unspecified; its neighbours are not
      ASSERT_EQ(d[b], d0[b]) << b;
      for (int64_t i = 0; i < kBlock; ++i) ASSERT_EQ(q[b * kBlock + i], q0[b * kBlock + i]) << b << " " << i;
    }
    ASSERT_EQ(d[4], d0[4]);
  }
  SetQuantKernelPath(BestQuantKernelPath());
}

}  // namespace
}  // namespace moe::cpu
