// Every kernel of backend::Kernels, on every compiled backend, against an independent
// reference computed on the host: cpu::MatMulTransBReference (double accumulation) after
// quant::DequantizeRowsReference for the stored formats, and plain double-precision loops
// written here for the others. So the CPU case is checked too, not compared with itself.
// CUDA cases skip without a GPU.
//
// Tolerances (stated per check): fp32 sums of up to 1088 products in another order than
// the double reference differ by ~sqrt(cols) * 2^-24 of sum |w||x| in practice (the CPU
// measured at most 2.4e-7 of it), so MatMul allows 1e-5 of that bound; the packed kernels
// compute s * (q.x - z sum x), whose rounding scales with |q| and |z| rather than
// |q - z|, so their bound adds |s z| |x|. A wrong code, group or row gives errors of the
// order of the bound itself; a zero one meta step off, ~5e-5 of it.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/backend/cpu/cpu_kernels.h"
#include "common/backend/cpu/quant_kernels.h"
#include "common/backend/kernels.h"
#include "common/quant/hqq.h"
#include "common/quant/quant_format.h"
#include "gtest/gtest.h"
#include "tests/common/backend/backend_test_util.h"

namespace moe::backend {
namespace {

std::vector<float> Random(size_t count, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(count);
  for (float& x : v) x = dist(rng);
  return v;
}

// A weight matrix both on the device and, dequantised, on the host.
struct TestMatrix {
  std::unique_ptr<DeviceBuffer> buffer;
  WeightView view;
  std::vector<float> dense;      // [rows, cols]: what W means
  std::vector<float> zero_term;  // [rows, cols]: |scale * zero| of the value's group (packed)
};

class ConformanceTest : public testing::BackendTest {
 protected:
  void SetUp() override {
    BackendTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    auto kernels = CreateKernels(*device_);
    ASSERT_TRUE(kernels.ok()) << kernels.status();
    kernels_ = std::move(*kernels);
  }

  TestMatrix F32Matrix(int64_t rows, int64_t cols, uint32_t seed) {
    TestMatrix m;
    m.dense = Random(rows * cols, seed);
    m.buffer = Up(m.dense);
    m.view = WeightView::F32(m.buffer->as<float>(), rows, cols);
    return m;
  }

  // bits 16 with `dtype16`, or packed by round-to-nearest quantization (the packing, not
  // the quantizer, is under test; RTN is fast).
  TestMatrix StoredMatrix(int64_t rows, int64_t cols, int bits, int64_t group, DType dtype16,
                          uint32_t seed) {
    TestMatrix m;
    const std::vector<float> w = Random(rows * cols, seed);
    quant::QuantizeOptions options;
    options.spec.bits = bits;
    options.spec.group_size = group;
    options.spec.dtype16 = dtype16;
    options.method = quant::Method::kRtn;
    auto q = quant::QuantizeMatrix(w.data(), rows, cols, options);
    EXPECT_TRUE(q.ok()) << q.status();
    if (!q.ok()) return m;
    m.dense.resize(rows * cols);
    quant::DequantizeRowsReference(q->view(), 0, rows, m.dense.data());
    m.zero_term.assign(rows * cols, 0.0f);
    if (bits != 16) {
      for (int64_t i = 0; i < rows * cols; ++i) {
        const int64_t g = i / group;
        m.zero_term[i] = std::fabs(q->view().Scale(g) * q->view().Zero(g));
      }
    }
    m.buffer = Up(q->bytes);
    m.view = WeightView::FromLayout(q->layout, m.buffer->data());
    return m;
  }

  // Runs MatMul for n tokens (x placed `x_offset` floats into its buffer, to move it off
  // 16-byte alignment) and checks it against the double-precision reference.
  void CheckMatMul(const TestMatrix& m, int64_t n, bool accumulate, size_t x_offset = 0) {
    const int64_t rows = m.view.rows, cols = m.view.cols;
    SCOPED_TRACE(absl::StrCat("[", rows, "x", cols, "] n=", n, accumulate ? " accumulate" : "",
                              x_offset ? " unaligned x" : ""));
    std::vector<float> x = Random(x_offset + n * cols, 1000 + n);
    const std::vector<float> y0 = Random(n * rows, 2000 + n);
    auto x_dev = Up(x);
    auto y_dev = Up(y0);
    ASSERT_TRUE(x_dev && y_dev);
    ASSERT_TRUE(kernels_
                    ->MatMul(m.view, x_dev->as<float>() + x_offset, y_dev->as<float>(), n,
                             accumulate, *stream_)
                    .ok());
    const std::vector<float> y = Down<float>(*y_dev, n * rows);
    x.erase(x.begin(), x.begin() + x_offset);
    if (device_->kind() == DeviceKind::kCpu && m.view.format == WeightFormat::kPacked) {
      // The CPU multiplies packed matrices by int8 activations (quant_kernels.h), so its
      // reference takes those: the fp32 tolerance below then still holds. The activation
      // rounding itself is checked against the exact x in quant_kernels_test.
      std::vector<int8_t> q(cols);
      std::vector<float> d(cols / quant::kBlock);
      for (int64_t t = 0; t < n; ++t) {
        float* xt = x.data() + t * cols;
        cpu::QuantizeActivationBlocks(xt, cols, q.data(), d.data());
        for (int64_t c = 0; c < cols; ++c) xt[c] = d[c / quant::kBlock] * q[c];
      }
    }
    std::vector<float> ref(n * rows);
    cpu::MatMulTransBReference(x.data(), m.dense.data(), ref.data(), n, cols, rows);
    int bad = 0;
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t r = 0; r < rows; ++r) {
        double bound = 0;
        for (int64_t c = 0; c < cols; ++c) {
          const double zt = m.zero_term.empty() ? 0.0 : m.zero_term[r * cols + c];
          bound += (std::fabs(m.dense[r * cols + c]) + zt) * std::fabs(x[t * cols + c]);
        }
        const double want = ref[t * rows + r] + (accumulate ? y0[t * rows + r] : 0.0f);
        const double got = y[t * rows + r];
        if (std::fabs(got - want) > 1e-5 * bound + 1e-6 && ++bad <= 5) {
          ADD_FAILURE() << "y[" << t << ", " << r << "] = " << got << ", want " << want
                        << " (bound " << bound << ")";
        }
      }
    }
    EXPECT_EQ(bad, 0);
  }

  std::unique_ptr<Kernels> kernels_;
};

// ---- MatMul -------------------------------------------------------------------------

TEST_P(ConformanceTest, MatMulF32EveryTokenCount) {
  // cols 100: the decode kernel's 16-byte loads; cols 99: not a multiple of 4, so decode
  // goes through the general (cuBLAS) path. 37 rows: not a multiple of the rows per block.
  for (int64_t cols : {100, 99}) {
    const TestMatrix m = F32Matrix(37, cols, 1);
    for (int64_t n = 1; n <= 40; ++n) CheckMatMul(m, n, /*accumulate=*/n % 3 == 0);
  }
}

TEST_P(ConformanceTest, MatMul16BitEveryTokenCount) {
  for (DType dtype : {DType::kBF16, DType::kF16}) {
    for (int64_t cols : {96, 100}) {  // 100: not a multiple of 8 (general path)
      SCOPED_TRACE(DTypeName(dtype));
      const TestMatrix m = StoredMatrix(37, cols, 16, 64, dtype, 2);
      ASSERT_TRUE(m.buffer);
      EXPECT_EQ(m.view.format, dtype == DType::kF16 ? WeightFormat::kF16 : WeightFormat::kBF16);
      for (int64_t n = 1; n <= 40; ++n) CheckMatMul(m, n, /*accumulate=*/n % 4 == 1);
    }
  }
}

TEST_P(ConformanceTest, MatMulPackedEveryBitWidthAndGroupSize) {
  for (int bits : {2, 3, 4, 8}) {
    for (int64_t group : {32, 64, 128}) {
      SCOPED_TRACE(absl::StrCat(bits, "-bit g", group));
      const TestMatrix m = StoredMatrix(37, 384, bits, group, DType::kBF16, 10 * bits + group);
      ASSERT_TRUE(m.buffer);
      ASSERT_EQ(m.view.format, WeightFormat::kPacked);
      for (int64_t n : {1, 2, 3, 4, 5, 7, 8, 9, 16, 40}) CheckMatMul(m, n, n % 2 == 0);
    }
  }
}

TEST_P(ConformanceTest, MatMulPackedRowsLongerThanAWarpOfBlocks) {
  // 1024 columns = 32 blocks: every lane of a row's warp gets one; 1088 adds a partial round.
  for (int bits : {3, 4}) {
    for (int64_t cols : {1024, 1088}) {
      SCOPED_TRACE(absl::StrCat(bits, "-bit cols ", cols));
      const TestMatrix m = StoredMatrix(19, cols, bits, 64, DType::kBF16, 7 + bits);
      ASSERT_TRUE(m.buffer);
      for (int64_t n : {1, 6, 8, 12}) CheckMatMul(m, n, false);
    }
  }
}

TEST_P(ConformanceTest, MatMulWithUnalignedInputTakesTheGeneralPath) {
  const TestMatrix f32 = F32Matrix(21, 64, 3);
  const TestMatrix packed = StoredMatrix(21, 128, 4, 64, DType::kBF16, 4);
  const TestMatrix bf16 = StoredMatrix(21, 128, 16, 64, DType::kBF16, 5);
  for (int64_t n : {1, 3}) {
    CheckMatMul(f32, n, true, /*x_offset=*/1);
    CheckMatMul(packed, n, false, /*x_offset=*/1);
    CheckMatMul(bf16, n, true, /*x_offset=*/3);
  }
}

// ---- Attention ----------------------------------------------------------------------

// Causal grouped-query attention in double: the definition kernels.h gives.
std::vector<float> ReferenceAttention(const std::vector<float>& q, const std::vector<float>& k,
                                      const std::vector<float>& v, int64_t start, int64_t n,
                                      int64_t heads, int64_t kv_heads, int64_t head_dim,
                                      int64_t window) {
  std::vector<float> out(n * heads * head_dim);
  const double scale = 1.0 / std::sqrt(double(head_dim));
  for (int64_t t = 0; t < n; ++t) {
    const int64_t pos = start + t;
    const int64_t first = window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0;
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t kvh = h / (heads / kv_heads);
      std::vector<double> s(pos - first + 1);
      for (int64_t j = first; j <= pos; ++j) {
        double dot = 0;
        for (int64_t d = 0; d < head_dim; ++d) {
          dot += double(q[(t * heads + h) * head_dim + d]) * k[(j * kv_heads + kvh) * head_dim + d];
        }
        s[j - first] = dot * scale;
      }
      const double max = *std::max_element(s.begin(), s.end());
      double sum = 0;
      for (double& x : s) sum += (x = std::exp(x - max));
      for (int64_t d = 0; d < head_dim; ++d) {
        double acc = 0;
        for (int64_t j = first; j <= pos; ++j) {
          acc += s[j - first] * v[(j * kv_heads + kvh) * head_dim + d];
        }
        out[(t * heads + h) * head_dim + d] = float(acc / sum);
      }
    }
  }
  return out;
}

void CheckAttention(ConformanceTest& test, Kernels& kernels, int64_t keys, int64_t n,
                    int64_t ratio, int64_t window, int64_t head_dim) {
  const int64_t kv_heads = 2, heads = kv_heads * ratio, start = keys - n;
  SCOPED_TRACE(absl::StrCat("keys ", keys, " n ", n, " heads ", heads, "/", kv_heads, " window ",
                            window, " head_dim ", head_dim));
  const std::vector<float> q = Random(n * heads * head_dim, 11 + keys, -2.0f, 2.0f);
  // The cache holds a few rows past the last position, which must not be read.
  const std::vector<float> k = Random((keys + 3) * kv_heads * head_dim, 12 + keys);
  const std::vector<float> v = Random((keys + 3) * kv_heads * head_dim, 13 + keys);
  auto q_dev = test.Up(q);
  auto k_dev = test.Up(k);
  auto v_dev = test.Up(v);
  auto out_dev = test.Up(std::vector<float>(n * heads * head_dim, NAN));
  ASSERT_TRUE(q_dev && k_dev && v_dev && out_dev);
  ASSERT_TRUE(kernels
                  .Attention(q_dev->as<float>(), k_dev->as<float>(), v_dev->as<float>(),
                             out_dev->as<float>(), start, n, heads, kv_heads, head_dim, window,
                             *test.stream_)
                  .ok());
  const std::vector<float> out = test.Down<float>(*out_dev, n * heads * head_dim);
  const std::vector<float> ref =
      ReferenceAttention(q, k, v, start, n, heads, kv_heads, head_dim, window);
  // Outputs are convex combinations of values in [-1, 1]: fp32 softmax and sums over up to
  // 2101 keys stay within ~1e-6 of the double reference; 3e-5 leaves room, while a
  // missing, extra or misweighted key moves the output by ~1e-3 or more.
  int bad = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    if (!(std::fabs(out[i] - ref[i]) <= 3e-5f) && ++bad <= 5) {
      ADD_FAILURE() << "out[" << i << "] = " << out[i] << ", want " << ref[i];
    }
  }
  EXPECT_EQ(bad, 0);
}

TEST_P(ConformanceTest, AttentionDecodeAndShortPrefillAcrossKeyCountsWindowsAndGroups) {
  for (int64_t keys : {1, 7, 511, 512, 601, 700, 2101}) {
    for (int64_t n : {1, 3}) {
      if (n > keys) continue;
      for (int64_t ratio : {1, 4, 8}) {
        for (int64_t window : {0, 300, 1}) CheckAttention(*this, *kernels_, keys, n, ratio, window, 64);
      }
    }
  }
}

TEST_P(ConformanceTest, AttentionOtherHeadDims) {
  for (int64_t head_dim : {128, 40, 8}) {  // 40, 8: not multiples of a warp
    CheckAttention(*this, *kernels_, 700, 2, 4, 0, head_dim);
    CheckAttention(*this, *kernels_, 33, 1, 1, 0, head_dim);
  }
}

TEST_P(ConformanceTest, AttentionPrefill) {
  CheckAttention(*this, *kernels_, 40, 40, 4, 0, 64);      // a prompt from position 0
  CheckAttention(*this, *kernels_, 540, 40, 4, 0, 64);     // a chunk after a cached prefix
  CheckAttention(*this, *kernels_, 540, 40, 1, 128, 64);   // ... with a sliding window
}

// ---- Row and elementwise kernels ----------------------------------------------------

TEST_P(ConformanceTest, RmsNormOutOfPlaceAndInPlace) {
  for (int64_t d : {4096, 300, 1}) {
    const int64_t n = 3;
    const std::vector<float> x = Random(n * d, 21 + d, -3.0f, 3.0f);
    const std::vector<float> weight = Random(d, 22 + d);
    std::vector<float> ref(n * d);
    const float eps = 1e-5f;
    for (int64_t i = 0; i < n; ++i) {
      double sum = 0;
      for (int64_t j = 0; j < d; ++j) sum += double(x[i * d + j]) * x[i * d + j];
      const double scale = 1.0 / std::sqrt(sum / d + eps);
      for (int64_t j = 0; j < d; ++j) ref[i * d + j] = float(x[i * d + j] * scale * weight[j]);
    }
    auto x_dev = Up(x);
    auto w_dev = Up(weight);
    auto y_dev = Up(std::vector<float>(n * d, NAN));
    ASSERT_TRUE(kernels_->RmsNorm(x_dev->as<float>(), w_dev->as<float>(), y_dev->as<float>(), n, d,
                                  eps, *stream_).ok());
    ASSERT_TRUE(kernels_->RmsNorm(x_dev->as<float>(), w_dev->as<float>(), x_dev->as<float>(), n, d,
                                  eps, *stream_).ok());
    const std::vector<float> y = Down<float>(*y_dev, n * d);
    const std::vector<float> in_place = Down<float>(*x_dev, n * d);
    for (int64_t i = 0; i < n * d; ++i) {
      // Two float roundings after a double-accurate scale.
      ASSERT_NEAR(y[i], ref[i], 1e-6f * (std::fabs(ref[i]) + 1e-3f)) << "d " << d << " i " << i;
      ASSERT_EQ(in_place[i], y[i]) << "d " << d << " i " << i;
    }
  }
}

TEST_P(ConformanceTest, RopeRotatesWithDoubleAngles) {
  const int64_t heads = 3, n = 5;
  // At position 100000 fp32 angles would be off by ~1e-2 radians; double ones are exact
  // to the float rounding of cos and sin. The parameters change between calls: a
  // backend that keeps its frequencies between calls must not reuse another model's.
  for (const RopeParams rope : {RopeParams{64, 1e6}, RopeParams{32, 1e4}, RopeParams{64, 1e6}}) {
    const int64_t head_dim = rope.head_dim;
    for (int64_t start : {0, 1000, 100000}) {
      std::vector<float> x = Random(n * heads * head_dim, 31 + start);
      std::vector<float> ref = x;
      for (int64_t t = 0; t < n; ++t) {
        for (int64_t h = 0; h < heads; ++h) {
          float* v = ref.data() + (t * heads + h) * head_dim;
          for (int64_t i = 0; i < head_dim / 2; ++i) {
            const double angle = double(start + t) * std::pow(rope.theta, -2.0 * i / head_dim);
            const double a = v[i], b = v[i + head_dim / 2];
            v[i] = float(a * std::cos(angle) - b * std::sin(angle));
            v[i + head_dim / 2] = float(b * std::cos(angle) + a * std::sin(angle));
          }
        }
      }
      auto x_dev = Up(x);
      ASSERT_TRUE(kernels_->Rope(x_dev->as<float>(), start, n, heads, rope, *stream_).ok());
      const std::vector<float> y = Down<float>(*x_dev, x.size());
      for (size_t i = 0; i < y.size(); ++i) {
        ASSERT_NEAR(y[i], ref[i], 2e-6f)
            << "head_dim " << head_dim << " start " << start << " i " << i;
      }
    }
  }
}

TEST_P(ConformanceTest, SiluMulAndAdd) {
  const int64_t count = 1003;
  const std::vector<float> gate = Random(count, 41, -8.0f, 8.0f);
  const std::vector<float> up = Random(count, 42);
  auto g_dev = Up(gate);
  auto u_dev = Up(up);
  ASSERT_TRUE(kernels_->SiluMul(g_dev->as<float>(), u_dev->as<float>(), count, *stream_).ok());
  const std::vector<float> silu = Down<float>(*g_dev, count);
  for (int64_t i = 0; i < count; ++i) {
    const double g = gate[i], want = g / (1.0 + std::exp(-g)) * up[i];
    ASSERT_NEAR(silu[i], want, 1e-6 * std::fabs(want) + 1e-7) << i;
  }
  ASSERT_TRUE(kernels_->Add(g_dev->as<float>(), u_dev->as<float>(), count, *stream_).ok());
  const std::vector<float> sum = Down<float>(*g_dev, count);
  for (int64_t i = 0; i < count; ++i) ASSERT_EQ(sum[i], silu[i] + up[i]) << i;  // one rounding
}

// softmax, k largest (ties to the lower id), renormalised: in double with a stable sort.
void ReferenceTopK(const float* logits, int64_t experts, int64_t k, int32_t* ids, float* weights) {
  std::vector<int32_t> order(experts);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  const double max = logits[order[0]];
  double sum = 0, top = 0;
  for (int64_t e = 0; e < experts; ++e) sum += std::exp(logits[e] - max);
  for (int64_t s = 0; s < k; ++s) top += std::exp(logits[order[s]] - max) / sum;
  for (int64_t s = 0; s < k; ++s) {
    ids[s] = order[s];
    weights[s] = float(std::exp(logits[order[s]] - max) / sum / top);
  }
}

TEST_P(ConformanceTest, AddBiasClampAndSigmoidGatedAdd) {
  const int64_t n = 7, d = 131;
  const std::vector<float> x = Random(n * d, 61, -4.0f, 4.0f);
  const std::vector<float> bias = Random(d, 62);
  const std::vector<float> gate = Random(n, 63, -5.0f, 5.0f);
  auto x_dev = Up(x);
  auto b_dev = Up(bias);
  auto g_dev = Up(gate);
  ASSERT_TRUE(kernels_->AddBias(x_dev->as<float>(), b_dev->as<float>(), n, d, *stream_).ok());
  std::vector<float> want = x;
  for (int64_t i = 0; i < n * d; ++i) want[i] += bias[i % d];
  ASSERT_EQ(Down<float>(*x_dev, n * d), want);  // one rounding each
  ASSERT_TRUE(kernels_->Clamp(x_dev->as<float>(), n * d, 1.5f, *stream_).ok());
  for (float& v : want) v = std::min(std::max(v, -1.5f), 1.5f);
  ASSERT_EQ(Down<float>(*x_dev, n * d), want);
  auto y_dev = Up(std::vector<float>(n * d, 1.0f));
  ASSERT_TRUE(kernels_->SigmoidGatedAdd(y_dev->as<float>(), g_dev->as<float>(), x_dev->as<float>(),
                                        n, d, *stream_).ok());
  const std::vector<float> y = Down<float>(*y_dev, n * d);
  for (int64_t i = 0; i < n * d; ++i) {
    const double expect = 1.0 + want[i] / (1.0 + std::exp(-double(gate[i / d])));
    ASSERT_NEAR(y[i], expect, 1e-6) << i;
  }
}

TEST_P(ConformanceTest, TopKRoutingWithoutRenormalizingKeepsTheProbabilities) {
  const int64_t n = 5, experts = 16, k = 4;
  const std::vector<float> logits = Random(n * experts, 64, -3.0f, 3.0f);
  auto l_dev = Up(logits);
  auto ids_dev = Up(std::vector<int32_t>(n * k, -1));
  auto w_dev = Up(std::vector<float>(n * k, NAN));
  ASSERT_TRUE(kernels_->TopKRouting(l_dev->as<float>(), n, experts, k, /*renormalize=*/false,
                                    ids_dev->as<int32_t>(), w_dev->as<float>(), *stream_).ok());
  const std::vector<int32_t> ids = Down<int32_t>(*ids_dev, n * k);
  const std::vector<float> w = Down<float>(*w_dev, n * k);
  for (int64_t t = 0; t < n; ++t) {
    std::vector<int32_t> want_ids(k);
    std::vector<float> renormalised(k);
    ReferenceTopK(&logits[t * experts], experts, k, want_ids.data(), renormalised.data());
    double max = logits[t * experts], sum = 0, top = 0;
    for (int64_t e = 0; e < experts; ++e) max = std::max<double>(max, logits[t * experts + e]);
    for (int64_t e = 0; e < experts; ++e) sum += std::exp(logits[t * experts + e] - max);
    for (int64_t s = 0; s < k; ++s) {
      EXPECT_EQ(ids[t * k + s], want_ids[s]);
      const double p = std::exp(logits[t * experts + want_ids[s]] - max) / sum;
      top += p;
      EXPECT_NEAR(w[t * k + s], p, 1e-6);
    }
    EXPECT_LT(top, 0.999);  // not renormalised: the top 4 of 16 do not sum to 1
  }
}

TEST_P(ConformanceTest, TopKRoutingPicksTheLargestWithTiesToTheLowerId) {
  using Case = std::tuple<int64_t, int64_t, int64_t>;  // tokens, experts, k
  for (const auto& [n, experts, k] : std::vector<Case>{{37, 8, 2}, {4, 300, 5}, {3, 8, 8}}) {
    SCOPED_TRACE(absl::StrCat(n, " tokens, top ", k, " of ", experts));
    std::vector<float> logits = Random(n * experts, 51 + experts, -3.0f, 3.0f);
    std::fill(logits.begin(), logits.begin() + experts, 0.5f);  // token 0: all tied
    logits[experts + 5] = logits[experts + 3] = 9.0f;          // token 1: two tied maxima
    std::vector<int32_t> want_ids(n * k);
    std::vector<float> want_w(n * k);
    for (int64_t t = 0; t < n; ++t) {
      ReferenceTopK(&logits[t * experts], experts, k, &want_ids[t * k], &want_w[t * k]);
    }
    EXPECT_EQ(want_ids[k], 3);
    auto l_dev = Up(logits);
    auto ids_dev = Up(std::vector<int32_t>(n * k, -1));
    auto w_dev = Up(std::vector<float>(n * k, NAN));
    ASSERT_TRUE(kernels_->TopKRouting(l_dev->as<float>(), n, experts, k, /*renormalize=*/true,
                                      ids_dev->as<int32_t>(), w_dev->as<float>(), *stream_).ok());
    EXPECT_EQ(Down<int32_t>(*ids_dev, n * k), want_ids);
    const std::vector<float> w = Down<float>(*w_dev, n * k);
    for (int64_t i = 0; i < n * k; ++i) ASSERT_NEAR(w[i], want_w[i], 1e-6f) << i;
  }
}

TEST_P(ConformanceTest, GatherRowsCopiesTheNamedRows) {
  const int64_t d = 33;
  const std::vector<float> table = Random(10 * d, 61);
  const std::vector<int32_t> rows = {3, 0, 9, 3};
  auto t_dev = Up(table);
  auto r_dev = Up(rows);
  auto o_dev = Up(std::vector<float>(rows.size() * d, NAN));
  ASSERT_TRUE(kernels_->GatherRows(t_dev->as<float>(), r_dev->as<int32_t>(), rows.size(), d,
                                   o_dev->as<float>(), *stream_).ok());
  const std::vector<float> out = Down<float>(*o_dev, rows.size() * d);
  for (size_t i = 0; i < rows.size(); ++i) {
    for (int64_t c = 0; c < d; ++c) ASSERT_EQ(out[i * d + c], table[rows[i] * d + c]);
  }
}

// An embedding lookup of a table kept as stored: 16-bit rows widened exactly, packed rows
// dequantised (to rounding: the CPU's AVX2 path folds scale * zero first).
TEST_P(ConformanceTest, GatherWeightRowsWidensTheNamedRowsOfEveryFormat) {
  const std::vector<int32_t> rows = {3, 0, 9, 3, 12};
  auto r_dev = Up(rows);
  struct Case {
    const char* name;
    int bits;
    int64_t group;
    DType dtype16;
  };
  for (const Case& k : {Case{"f32", 32, 0, DType::kF32}, Case{"bf16", 16, 64, DType::kBF16},
                        Case{"f16", 16, 64, DType::kF16}, Case{"4-bit g64", 4, 64, DType::kBF16},
                        Case{"3-bit g128", 3, 128, DType::kBF16},
                        Case{"2-bit g32", 2, 32, DType::kBF16}}) {
    SCOPED_TRACE(k.name);
    const int64_t d = k.bits >= 16 ? 100 : 256;  // 100: no multiple of 8
    const TestMatrix m =
        k.bits == 32 ? F32Matrix(13, d, 81) : StoredMatrix(13, d, k.bits, k.group, k.dtype16, 82);
    ASSERT_TRUE(m.buffer);
    auto o_dev = Up(std::vector<float>(rows.size() * d, NAN));
    ASSERT_TRUE(kernels_->GatherWeightRows(m.view, r_dev->as<int32_t>(), rows.size(),
                                           o_dev->as<float>(), *stream_).ok());
    const std::vector<float> out = Down<float>(*o_dev, rows.size() * d);
    for (size_t i = 0; i < rows.size(); ++i) {
      for (int64_t c = 0; c < d; ++c) {
        const int64_t at = rows[i] * d + c;
        if (k.bits >= 16) {
          ASSERT_EQ(out[i * d + c], m.dense[at]) << "row " << i << " col " << c;
        } else {
          ASSERT_NEAR(out[i * d + c], m.dense[at],
                      1e-6f * (std::fabs(m.dense[at]) + m.zero_term[at]))
              << "row " << i << " col " << c;
        }
      }
    }
  }
}

TEST_P(ConformanceTest, ScatterAddRowsAddsInOrderOfI) {
  const int64_t d = 300;
  const std::vector<int32_t> rows = {2, 4, 2, 0, 5};  // row 2 twice
  const std::vector<float> x = Random(rows.size() * d, 71);
  const std::vector<float> scale = Random(rows.size(), 72);
  std::vector<float> out = Random(6 * d, 73);
  std::vector<float> want = out;
  for (size_t i = 0; i < rows.size(); ++i) {
    for (int64_t c = 0; c < d; ++c) want[rows[i] * d + c] += scale[i] * x[i * d + c];
  }
  auto x_dev = Up(x);
  auto r_dev = Up(rows);
  auto s_dev = Up(scale);
  auto o_dev = Up(out);
  ASSERT_TRUE(kernels_->ScatterAddRows(x_dev->as<float>(), r_dev->as<int32_t>(),
                                       s_dev->as<float>(), rows.size(), d, o_dev->as<float>(),
                                       *stream_).ok());
  out = Down<float>(*o_dev, 6 * d);
  // A fused multiply-add may round once instead of twice.
  for (int64_t i = 0; i < 6 * d; ++i) ASSERT_NEAR(out[i], want[i], 1e-6f) << i;
}

// The CUDA implementation validates what it can on the host and names the problem; the
// CPU adapters trust their callers (they are the engine's own functions).
TEST_P(ConformanceTest, CudaRejectsBadShapesNamingThem) {
  if (device_->kind() != DeviceKind::kCuda) GTEST_SKIP() << "the CPU adapters do not validate";
  auto buf = device_->Allocate(1 << 16);
  ASSERT_TRUE(buf.ok());
  float* p = (*buf)->as<float>();
  absl::Status s = kernels_->Attention(p, p, p, p, 0, 1, 6, 4, 64, 0, *stream_);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("kv_heads"), absl::string_view::npos) << s;
  s = kernels_->Attention(p, p, p, p, 0, 1, 4, 4, 512, 0, *stream_);
  EXPECT_NE(s.message().find("head_dim"), absl::string_view::npos) << s;
  s = kernels_->TopKRouting(p, 1, 8, 9, true, reinterpret_cast<int32_t*>(p), p, *stream_);
  EXPECT_NE(s.message().find("k (9)"), absl::string_view::npos) << s;
  s = kernels_->Rope(p, 0, 1, 1, RopeParams{63, 1e4}, *stream_);
  EXPECT_NE(s.message().find("even"), absl::string_view::npos) << s;
  s = kernels_->MatMul(WeightView::F32(p, 4, 4), p, p, -1, false, *stream_);
  EXPECT_NE(s.message().find("negative"), absl::string_view::npos) << s;
  auto cpu = OpenDevice("cpu");
  ASSERT_TRUE(cpu.ok());
  auto cpu_stream = (*cpu)->CreateStream();
  ASSERT_TRUE(cpu_stream.ok());
  s = kernels_->Add(p, p, 4, **cpu_stream);
  EXPECT_NE(s.message().find("not a CUDA stream"), absl::string_view::npos) << s;
  EXPECT_TRUE(stream_->Synchronize().ok());
}

INSTANTIATE_TEST_SUITE_P(Backends, ConformanceTest, ::testing::ValuesIn(testing::AllBackends()),
                         testing::BackendName);

}  // namespace
}  // namespace moe::backend
