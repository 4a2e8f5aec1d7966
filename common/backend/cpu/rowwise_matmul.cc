#include "common/backend/cpu/rowwise_matmul.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>

namespace moe::cpu {
namespace {

// Register blocking: kRows rows of w times kTokens tokens, 12 accumulators plus the four
// weight vectors of a chunk in AVX2's 16 registers.
constexpr int kRows = 4;
constexpr int kTokens = 3;
// Below this many multiply-adds a product runs on one thread: an OpenMP region costs
// more than it saves on the small matrices of decode, more so on shared cores.
constexpr int64_t kParallelMinMacs = int64_t{1} << 20;

bool CpuHasFma() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}

bool CpuHasAvx512() {
  static const bool has =
      CpuHasFma() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
  return has;
}

// The lane sum of the header, shared by both paths.
inline float SumLanes(const float* l) {
  return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
}

inline float Finish(float lanes_sum, const float* x, const float* w, int64_t k8, int64_t k) {
  float s = lanes_sum;
  for (int64_t c = k8; c < k; ++c) s = std::fma(x[c], w[c], s);
  return s;
}

inline void Store(float* y, float v, bool accumulate) { *y = accumulate ? *y + v : v; }

template <int R, int T>
void TileScalar(const float* x, const float* w, float* y, int64_t k, int64_t m, bool accumulate) {
  float lanes[R][T][8] = {};
  const int64_t k8 = k & ~int64_t{7};
  for (int64_t c = 0; c < k8; c += 8) {
    for (int r = 0; r < R; ++r) {
      for (int t = 0; t < T; ++t) {
        for (int l = 0; l < 8; ++l) {
          lanes[r][t][l] = std::fma(x[t * k + c + l], w[r * k + c + l], lanes[r][t][l]);
        }
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) {
      Store(y + t * m + r, Finish(SumLanes(lanes[r][t]), x + t * k, w + r * k, k8, k), accumulate);
    }
  }
}

#define MOE_ROWWISE_AVX2 __attribute__((target("avx2,fma")))

template <int R, int T>
MOE_ROWWISE_AVX2 void TileAvx2(const float* x, const float* w, float* y, int64_t k, int64_t m,
                               bool accumulate) {
  __m256 acc[R][T];
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps();
  }
  const int64_t k8 = k & ~int64_t{7};
  for (int64_t c = 0; c < k8; c += 8) {
    __m256 wv[R];
    for (int r = 0; r < R; ++r) wv[r] = _mm256_loadu_ps(w + r * k + c);
    for (int t = 0; t < T; ++t) {
      const __m256 xv = _mm256_loadu_ps(x + t * k + c);
      for (int r = 0; r < R; ++r) acc[r][t] = _mm256_fmadd_ps(xv, wv[r], acc[r][t]);
    }
  }
  if constexpr (R == 4) {
    if (k8 == k) {
      // Four rows' sums of one token at once, in SumLanes' order: p = lo + hi halves
      // gives (l0+l4, l1+l5, l2+l6, l3+l7); transposed, (p0 + p2) + (p1 + p3).
      for (int t = 0; t < T; ++t) {
        __m128 p0 = _mm_add_ps(_mm256_castps256_ps128(acc[0][t]), _mm256_extractf128_ps(acc[0][t], 1));
        __m128 p1 = _mm_add_ps(_mm256_castps256_ps128(acc[1][t]), _mm256_extractf128_ps(acc[1][t], 1));
        __m128 p2 = _mm_add_ps(_mm256_castps256_ps128(acc[2][t]), _mm256_extractf128_ps(acc[2][t], 1));
        __m128 p3 = _mm_add_ps(_mm256_castps256_ps128(acc[3][t]), _mm256_extractf128_ps(acc[3][t], 1));
        _MM_TRANSPOSE4_PS(p0, p1, p2, p3);  // p_j now holds lane sum j of the four rows
        __m128 sum = _mm_add_ps(_mm_add_ps(p0, p2), _mm_add_ps(p1, p3));
        float* out = y + t * m;
        if (accumulate) sum = _mm_add_ps(_mm_loadu_ps(out), sum);
        _mm_storeu_ps(out, sum);
      }
      return;
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) {
      alignas(32) float lanes[8];
      _mm256_store_ps(lanes, acc[r][t]);
      Store(y + t * m + r, Finish(SumLanes(lanes), x + t * k, w + r * k, k8, k), accumulate);
    }
  }
}

#define MOE_ROWWISE_AVX512 __attribute__((target("avx512f,avx512dq,avx2,fma")))

// The AVX-512 tile: 8 rows of w as 4 pairs times T tokens. Register p of token t holds
// row 2p's eight lanes in its low half and row 2p + 1's in its high half, so each lane
// sees the same fused multiply-adds, in the same order, as on the other paths. (Masked
// intrinsics throughout: GCC 12's unmasked ones pass an undefined vector and warn.)
constexpr int kPairs512 = 4;
constexpr int kRows512 = 2 * kPairs512;
constexpr int kTokens512 = 6;  // 24 accumulators + 4 weight registers + 1 of x, of 32

template <int T>
MOE_ROWWISE_AVX512 void Tile512(const float* x, const float* w, float* y, int64_t k, int64_t m,
                                bool accumulate) {
  __m512 acc[kPairs512][T];
  for (int p = 0; p < kPairs512; ++p) {
    for (int t = 0; t < T; ++t) acc[p][t] = _mm512_setzero_ps();
  }
  const int64_t k8 = k & ~int64_t{7};
  for (int64_t c = 0; c < k8; c += 8) {
    __m512 wv[kPairs512];
    for (int p = 0; p < kPairs512; ++p) {
      const __m512 lo = _mm512_maskz_broadcast_f32x8(0xFFFF, _mm256_loadu_ps(w + 2 * p * k + c));
      wv[p] = _mm512_mask_broadcast_f32x8(lo, 0xFF00, _mm256_loadu_ps(w + (2 * p + 1) * k + c));
    }
    for (int t = 0; t < T; ++t) {
      const __m512 xv = _mm512_maskz_broadcast_f32x8(0xFFFF, _mm256_loadu_ps(x + t * k + c));
      for (int p = 0; p < kPairs512; ++p) acc[p][t] = _mm512_fmadd_ps(xv, wv[p], acc[p][t]);
    }
  }
  for (int p = 0; p < kPairs512; ++p) {
    for (int t = 0; t < T; ++t) {
      // SumLanes in each half: a_j = l_j + l_(j+4), then (a0 + a2) + (a1 + a3) in lane 0.
      __m512 a = acc[p][t];
      a = _mm512_add_ps(a, _mm512_mask_shuffle_f32x4(a, 0xFFFF, a, a, _MM_SHUFFLE(2, 3, 0, 1)));
      a = _mm512_add_ps(a, _mm512_mask_permute_ps(a, 0xFFFF, a, _MM_SHUFFLE(1, 0, 3, 2)));
      a = _mm512_add_ps(a, _mm512_mask_permute_ps(a, 0xFFFF, a, _MM_SHUFFLE(2, 3, 0, 1)));
      const float low = _mm512_cvtss_f32(a);
      const float high = _mm_cvtss_f32(_mm512_maskz_extractf32x4_ps(0xF, a, 2));
      const int r = 2 * p;
      Store(y + t * m + r, Finish(low, x + t * k, w + r * k, k8, k), accumulate);
      Store(y + t * m + r + 1, Finish(high, x + t * k, w + (r + 1) * k, k8, k), accumulate);
    }
  }
}

using TileFn = void (*)(const float*, const float*, float*, int64_t, int64_t, bool);
constexpr TileFn kTiles512[kTokens512] = {&Tile512<1>, &Tile512<2>, &Tile512<3>,
                                          &Tile512<4>, &Tile512<5>, &Tile512<6>};

// table[r - 1][t - 1]: the tile of r rows and t tokens.
template <template <int, int> class Pick>
struct Tiles {
  static constexpr TileFn table[kRows][kTokens] = {
      {Pick<1, 1>::fn, Pick<1, 2>::fn, Pick<1, 3>::fn},
      {Pick<2, 1>::fn, Pick<2, 2>::fn, Pick<2, 3>::fn},
      {Pick<3, 1>::fn, Pick<3, 2>::fn, Pick<3, 3>::fn},
      {Pick<4, 1>::fn, Pick<4, 2>::fn, Pick<4, 3>::fn}};
};
template <int R, int T>
struct PickScalar {
  static constexpr TileFn fn = &TileScalar<R, T>;
};
template <int R, int T>
struct PickAvx2 {
  static constexpr TileFn fn = &TileAvx2<R, T>;
};

// Rows [j_begin, m) of w; y's rows are m wide.
void Run(const float* x, const float* w, float* y, int64_t n, int64_t k, int64_t m,
         bool accumulate, const TileFn (&tiles)[kRows][kTokens], int64_t j_begin = 0) {
  if (n <= 0 || m <= j_begin) return;
  const int64_t blocks = (m - j_begin + kRows - 1) / kRows;
  // Each output is computed whole by one iteration: the split over threads cannot
  // change a sum.
#pragma omp parallel for schedule(static) if (n * m * k >= kParallelMinMacs)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t j0 = j_begin + b * kRows;
    const int r = static_cast<int>(std::min<int64_t>(kRows, m - j0));
    for (int64_t i0 = 0; i0 < n; i0 += kTokens) {
      const int t = static_cast<int>(std::min<int64_t>(kTokens, n - i0));
      tiles[r - 1][t - 1](x + i0 * k, w + j0 * k, y + i0 * m + j0, k, m, accumulate);
    }
  }
}

// Whole blocks of 8 rows of w on AVX-512, the last m % 8 rows on AVX2.
void Run512(const float* x, const float* w, float* y, int64_t n, int64_t k, int64_t m,
            bool accumulate) {
  if (n <= 0 || m <= 0) return;
  const int64_t blocks = m / kRows512;
#pragma omp parallel for schedule(static) if (n * m * k >= kParallelMinMacs)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t j0 = b * kRows512;
    for (int64_t i0 = 0; i0 < n; i0 += kTokens512) {
      const int t = static_cast<int>(std::min<int64_t>(kTokens512, n - i0));
      kTiles512[t - 1](x + i0 * k, w + j0 * k, y + i0 * m + j0, k, m, accumulate);
    }
  }
  Run(x, w, y, n, k, m, accumulate, Tiles<PickAvx2>::table, blocks * kRows512);
}

}  // namespace

bool RowwisePathSupported(RowwisePath path) {
  switch (path) {
    case RowwisePath::kScalar: return true;
    case RowwisePath::kAvx2: return CpuHasFma();
    case RowwisePath::kAvx512: return CpuHasAvx512();
  }
  return false;
}

void RowwiseMatMulTransBOn(RowwisePath path, const float* x, const float* w, float* y, int64_t n,
                           int64_t k, int64_t m, bool accumulate) {
  switch (path) {
    case RowwisePath::kAvx512:
      Run512(x, w, y, n, k, m, accumulate);
      return;
    case RowwisePath::kAvx2:
      Run(x, w, y, n, k, m, accumulate, Tiles<PickAvx2>::table);
      return;
    case RowwisePath::kScalar:
      Run(x, w, y, n, k, m, accumulate, Tiles<PickScalar>::table);
      return;
  }
}

void RowwiseMatMulTransB(const float* x, const float* w, float* y, int64_t n, int64_t k,
                         int64_t m, bool accumulate) {
  const RowwisePath path = CpuHasAvx512() ? RowwisePath::kAvx512
                           : CpuHasFma()  ? RowwisePath::kAvx2
                                          : RowwisePath::kScalar;
  RowwiseMatMulTransBOn(path, x, w, y, n, k, m, accumulate);
}

}  // namespace moe::cpu
