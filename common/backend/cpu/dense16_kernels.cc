#include "common/backend/cpu/dense16_kernels.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>

namespace moe::cpu {
namespace {

using quant::MatrixView;

// Tokens per tile: a weight row is widened once per tile.
constexpr int kMaxTileTokens = 4;

// Below this many weight-times-token products a call runs on one thread: an OpenMP region
// costs more than it saves on small matrices, and far more when the cores are shared and
// threads spin.
constexpr int64_t kParallelMinValues = int64_t{1} << 20;

inline void Store(float* y, float v, bool accumulate) { *y = accumulate ? *y + v : v; }

// ---- scalar path ------------------------------------------------------------------

float RowDot16Scalar(const uint8_t* row, DType dtype, const float* x, int64_t cols) {
  const auto* v = reinterpret_cast<const uint16_t*>(row);
  float acc = 0;
  for (int64_t c = 0; c < cols; ++c) {
    acc += (dtype == DType::kBF16 ? Bf16ToF32(v[c]) : F16ToF32(v[c])) * x[c];
  }
  return acc;
}

// ---- AVX2 + FMA + F16C --------------------------------------------------------------

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")

inline float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

template <bool kF16>
__attribute__((always_inline)) inline __m256 Load16(const uint16_t* p) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  if constexpr (kF16) return _mm256_cvtph_ps(raw);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
}

template <bool kF16>
inline float Widen16(uint16_t v) {
  if constexpr (kF16) return _cvtsh_ss(v);
  const uint32_t bits = uint32_t(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// Two accumulators per token (16 values a step) hide the FMA latency on one row.
template <bool kF16, int kTokens>
void Dense16TileT(const MatrixView& w, int64_t r, const float* x, int64_t t0, float* out) {
  const int64_t cols = w.layout.cols;
  const uint16_t* v = reinterpret_cast<const uint16_t*>(w.codes()) + r * cols;
  const float* xt[kTokens];
  __m256 acc0[kTokens], acc1[kTokens];
  for (int t = 0; t < kTokens; ++t) {
    xt[t] = x + (t0 + t) * cols;
    acc0[t] = acc1[t] = _mm256_setzero_ps();
  }
  int64_t c = 0;
  for (; c + 16 <= cols; c += 16) {
    const __m256 w0 = Load16<kF16>(v + c), w1 = Load16<kF16>(v + c + 8);
    for (int t = 0; t < kTokens; ++t) {
      acc0[t] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xt[t] + c), acc0[t]);
      acc1[t] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xt[t] + c + 8), acc1[t]);
    }
  }
  if (c + 8 <= cols) {
    const __m256 w0 = Load16<kF16>(v + c);
    for (int t = 0; t < kTokens; ++t) acc0[t] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xt[t] + c), acc0[t]);
    c += 8;
  }
  for (int t = 0; t < kTokens; ++t) {
    float s = HorizontalSum(_mm256_add_ps(acc0[t], acc1[t]));
    for (int64_t k = c; k < cols; ++k) s += Widen16<kF16>(v[k]) * xt[t][k];
    out[t] = s;
  }
}

template <bool kF16>
void Dense16TileOf(const MatrixView& w, int64_t r, const float* x, int64_t t0, int tokens, float* out) {
  switch (tokens) {
    case 1: return Dense16TileT<kF16, 1>(w, r, x, t0, out);
    case 2: return Dense16TileT<kF16, 2>(w, r, x, t0, out);
    case 3: return Dense16TileT<kF16, 3>(w, r, x, t0, out);
    default: return Dense16TileT<kF16, 4>(w, r, x, t0, out);
  }
}

// out[t] = row r of w · token t0 + t, for t < tokens (1..kMaxTileTokens).
void Dense16Tile(const MatrixView& w, int64_t r, const float* x, int64_t t0, int tokens,
                 float* out) {
  if (w.layout.spec.dtype16 == DType::kF16) {
    Dense16TileOf<true>(w, r, x, t0, tokens, out);
  } else {
    Dense16TileOf<false>(w, r, x, t0, tokens, out);
  }
}

#pragma GCC pop_options

}  // namespace

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
void Convert16Avx2(const uint8_t* src, DType dtype, int64_t count, float* dst) {
  const auto* v = reinterpret_cast<const uint16_t*>(src);
  int64_t c = 0;
  if (dtype == DType::kF16) {
    for (; c + 8 <= count; c += 8) _mm256_storeu_ps(dst + c, Load16<true>(v + c));
  } else {
    for (; c + 8 <= count; c += 8) _mm256_storeu_ps(dst + c, Load16<false>(v + c));
  }
  for (; c < count; ++c) dst[c] = dtype == DType::kBF16 ? Bf16ToF32(v[c]) : F16ToF32(v[c]);
}
#pragma GCC pop_options

void Dense16MatMul(const MatrixView* ws, float* const* ys, int count, const float* x, int64_t n,
                   bool accumulate, QuantKernelPath path) {
  const int64_t rows = ws[0].layout.rows, cols = ws[0].layout.cols;
  const bool parallel = count * rows * cols * n >= kParallelMinValues;
  if (path == QuantKernelPath::kScalar) {
    for (int i = 0; i < count; ++i) {
      const MatrixView& w = ws[i];
      float* y = ys[i];
#pragma omp parallel for schedule(static) if (parallel)
      for (int64_t r = 0; r < rows; ++r) {
        const uint8_t* row = w.codes() + r * cols * 2;
        for (int64_t t = 0; t < n; ++t) {
          Store(&y[t * rows + r], RowDot16Scalar(row, w.layout.spec.dtype16, x + t * cols, cols), accumulate);
        }
      }
    }
    return;
  }
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t it = 0; it < count * rows; ++it) {
    const MatrixView& w = ws[it / rows];
    float* y = ys[it / rows];
    const int64_t r = it % rows;
    float out[kMaxTileTokens];
    for (int64_t t0 = 0; t0 < n; t0 += kMaxTileTokens) {
      const int tokens = int(std::min<int64_t>(kMaxTileTokens, n - t0));
      Dense16Tile(w, r, x, t0, tokens, out);
      for (int t = 0; t < tokens; ++t) Store(&y[(t0 + t) * rows + r], out[t], accumulate);
    }
  }
}

}  // namespace moe::cpu
