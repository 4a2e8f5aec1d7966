#include "common/backend/cpu/rowwise_matmul.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "common/backend/cpu/cpu_kernels.h"

namespace moe::cpu {
namespace {

// Register blocking: kRows rows of w times kTokens tokens, 12 accumulators plus the four
// weight vectors of a chunk in AVX2's 16 registers.
constexpr int kRows = 4;
constexpr int kTokens = 3;
// Below this many multiply-adds a product runs on one thread: an OpenMP region costs
// more than it saves on the small matrices of decode, more so on shared cores.
constexpr int64_t kParallelMinMacs = int64_t{1} << 20;

// (The F16 tiles' F16C is not checked: every CPU with AVX2 and FMA has it, and clang's
// __builtin_cpu_supports does not know the name.)
bool CpuHasFma() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}

bool CpuHasAvx512() {
  static const bool has =
      CpuHasFma() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
  return has;
}

// The stored weight types. Each widens to fp32 exactly, so a 16-bit matrix's product is
// the fp32 product of its widened matrix, bit for bit, without that matrix in memory.
struct F32 {
  using T = float;
};
struct Bf16 {
  using T = uint16_t;
};
struct F16 {
  using T = uint16_t;
};

template <class W>
inline float Widen(const typename W::T* p) {
  if constexpr (std::is_same_v<W, F32>) {
    return *p;
  } else if constexpr (std::is_same_v<W, Bf16>) {
    return Bf16ToF32(*p);
  } else {
    return F16ToF32(*p);
  }
}

// The lane sum of the header, shared by every path.
inline float SumLanes(const float* l) {
  return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
}

template <class W>
inline float Finish(float lanes_sum, const float* x, const typename W::T* w, int64_t k8, int64_t k) {
  float s = lanes_sum;
  for (int64_t c = k8; c < k; ++c) s = std::fma(x[c], Widen<W>(w + c), s);
  return s;
}

inline void Store(float* y, float v, bool accumulate) { *y = accumulate ? *y + v : v; }

template <class W, int R, int T>
void TileScalar(const float* x, const typename W::T* w, float* y, int64_t k, int64_t m,
                bool accumulate) {
  float lanes[R][T][8] = {};
  const int64_t k8 = k & ~int64_t{7};
  for (int64_t c = 0; c < k8; c += 8) {
    for (int r = 0; r < R; ++r) {
      float wv[8];
      for (int l = 0; l < 8; ++l) wv[l] = Widen<W>(w + r * k + c + l);
      for (int t = 0; t < T; ++t) {
        for (int l = 0; l < 8; ++l) lanes[r][t][l] = std::fma(x[t * k + c + l], wv[l], lanes[r][t][l]);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) {
      Store(y + t * m + r, Finish<W>(SumLanes(lanes[r][t]), x + t * k, w + r * k, k8, k), accumulate);
    }
  }
}

#define MOE_ROWWISE_AVX2 __attribute__((target("avx2,fma,f16c")))

// Eight weights from p, widened.
template <class W>
MOE_ROWWISE_AVX2 __attribute__((always_inline)) inline __m256 Load8(const typename W::T* p) {
  if constexpr (std::is_same_v<W, F32>) {
    return _mm256_loadu_ps(p);
  } else {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    if constexpr (std::is_same_v<W, F16>) return _mm256_cvtph_ps(raw);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
  }
}

template <class W, int R, int T>
MOE_ROWWISE_AVX2 void TileAvx2(const float* x, const typename W::T* w, float* y, int64_t k,
                               int64_t m, bool accumulate) {
  __m256 acc[R][T];
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps();
  }
  const int64_t k8 = k & ~int64_t{7};
  for (int64_t c = 0; c < k8; c += 8) {
    __m256 wv[R];
    for (int r = 0; r < R; ++r) wv[r] = Load8<W>(w + r * k + c);
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
      Store(y + t * m + r, Finish<W>(SumLanes(lanes), x + t * k, w + r * k, k8, k), accumulate);
    }
  }
}

#define MOE_ROWWISE_AVX512 __attribute__((target("avx512f,avx512dq,avx2,fma,f16c")))

// The AVX-512 tile: 8 rows of w as 4 pairs times T tokens. Register p of token t holds
// row 2p's eight lanes in its low half and row 2p + 1's in its high half, so each lane
// sees the same fused multiply-adds, in the same order, as on the other paths. (Masked
// intrinsics throughout: GCC 12's unmasked ones pass an undefined vector and warn.)
constexpr int kPairs512 = 4;
constexpr int kRows512 = 2 * kPairs512;
constexpr int kTokens512 = 6;  // 24 accumulators + 4 weight registers + 1 of x, of 32

// Eight weights of row `lo` in the low half, eight of row `hi` in the high half, widened.
template <class W>
MOE_ROWWISE_AVX512 __attribute__((always_inline)) inline __m512 Load8x2(const typename W::T* lo,
                                                                         const typename W::T* hi) {
  if constexpr (std::is_same_v<W, F32>) {
    const __m512 low = _mm512_maskz_broadcast_f32x8(0xFFFF, _mm256_loadu_ps(lo));
    return _mm512_mask_broadcast_f32x8(low, 0xFF00, _mm256_loadu_ps(hi));
  } else {
    const __m256i raw = _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(lo))),
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(hi)), 1);
    if constexpr (std::is_same_v<W, F16>) return _mm512_maskz_cvtph_ps(0xFFFF, raw);
    return _mm512_castsi512_ps(
        _mm512_maskz_slli_epi32(0xFFFF, _mm512_maskz_cvtepu16_epi32(0xFFFF, raw), 16));
  }
}

template <class W, int T>
MOE_ROWWISE_AVX512 void Tile512(const float* x, const typename W::T* w, float* y, int64_t k,
                                int64_t m, bool accumulate) {
  __m512 acc[kPairs512][T];
  for (int p = 0; p < kPairs512; ++p) {
    for (int t = 0; t < T; ++t) acc[p][t] = _mm512_setzero_ps();
  }
  const int64_t k8 = k & ~int64_t{7};
  // Chunks per 64-byte line of a row.
  constexpr int64_t kLineMask = 64 / sizeof(typename W::T) - 1;
  for (int64_t c = 0; c < k8; c += 8) {
    if ((c & kLineMask) == 0) {
      // The next block's rows, one block ahead: with eight rows streaming at once the
      // hardware prefetcher alone left a decode's loads waiting on memory. A hint: past
      // the matrix's end it neither faults nor reads anything used.
      for (int r = 0; r < kRows512; ++r) {
        _mm_prefetch(reinterpret_cast<const char*>(w + (kRows512 + r) * k + c), _MM_HINT_T0);
      }
    }
    __m512 wv[kPairs512];
    for (int p = 0; p < kPairs512; ++p) wv[p] = Load8x2<W>(w + 2 * p * k + c, w + (2 * p + 1) * k + c);
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
      Store(y + t * m + r, Finish<W>(low, x + t * k, w + r * k, k8, k), accumulate);
      Store(y + t * m + r + 1, Finish<W>(high, x + t * k, w + (r + 1) * k, k8, k), accumulate);
    }
  }
}

// Every tile of one weight type: [r - 1][t - 1] is the tile of r rows and t tokens.
template <class W>
struct Tiles {
  using Fn = void (*)(const float*, const typename W::T*, float*, int64_t, int64_t, bool);
  static constexpr Fn scalar[kRows][kTokens] = {
      {&TileScalar<W, 1, 1>, &TileScalar<W, 1, 2>, &TileScalar<W, 1, 3>},
      {&TileScalar<W, 2, 1>, &TileScalar<W, 2, 2>, &TileScalar<W, 2, 3>},
      {&TileScalar<W, 3, 1>, &TileScalar<W, 3, 2>, &TileScalar<W, 3, 3>},
      {&TileScalar<W, 4, 1>, &TileScalar<W, 4, 2>, &TileScalar<W, 4, 3>}};
  static constexpr Fn avx2[kRows][kTokens] = {
      {&TileAvx2<W, 1, 1>, &TileAvx2<W, 1, 2>, &TileAvx2<W, 1, 3>},
      {&TileAvx2<W, 2, 1>, &TileAvx2<W, 2, 2>, &TileAvx2<W, 2, 3>},
      {&TileAvx2<W, 3, 1>, &TileAvx2<W, 3, 2>, &TileAvx2<W, 3, 3>},
      {&TileAvx2<W, 4, 1>, &TileAvx2<W, 4, 2>, &TileAvx2<W, 4, 3>}};
  static constexpr Fn avx512[kTokens512] = {&Tile512<W, 1>, &Tile512<W, 2>, &Tile512<W, 3>,
                                            &Tile512<W, 4>, &Tile512<W, 5>, &Tile512<W, 6>};
};

// ys[i] (=|+=) x · ws[i]^T for `count` matrices of one shape, in one parallel region. On
// AVX-512 whole blocks of 8 rows, the last m % 8 rows in blocks of 4 on AVX2; elsewhere
// blocks of 4. Each output is computed whole by one iteration: the split over threads
// cannot change a sum.
template <class W>
void Run(RowwisePath path, const float* x, const typename W::T* const* ws, float* const* ys,
         int count, int64_t n, int64_t k, int64_t m, bool accumulate) {
  if (n <= 0 || m <= 0 || count <= 0) return;
  const auto& tiles = path == RowwisePath::kScalar ? Tiles<W>::scalar : Tiles<W>::avx2;
  const int64_t wide = path == RowwisePath::kAvx512 ? m / kRows512 : 0;
  const int64_t j_rest = wide * kRows512;
  const int64_t per_matrix = wide + (m - j_rest + kRows - 1) / kRows;
  auto iteration = [&](int64_t it) {
    const typename W::T* w = ws[it / per_matrix];
    float* y = ys[it / per_matrix];
    const int64_t b = it % per_matrix;
    if (b < wide) {
      const int64_t j0 = b * kRows512;
      for (int64_t i0 = 0; i0 < n; i0 += kTokens512) {
        const int t = static_cast<int>(std::min<int64_t>(kTokens512, n - i0));
        Tiles<W>::avx512[t - 1](x + i0 * k, w + j0 * k, y + i0 * m + j0, k, m, accumulate);
      }
    } else {
      const int64_t j0 = j_rest + (b - wide) * kRows;
      const int r = static_cast<int>(std::min<int64_t>(kRows, m - j0));
      for (int64_t i0 = 0; i0 < n; i0 += kTokens) {
        const int t = static_cast<int>(std::min<int64_t>(kTokens, n - i0));
        tiles[r - 1][t - 1](x + i0 * k, w + j0 * k, y + i0 * m + j0, k, m, accumulate);
      }
    }
  };
  ParallelFor(count * per_matrix, count * n * m * k >= kParallelMinMacs, Deal::kShares, iteration);
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

RowwisePath BestRowwisePath() {
  return CpuHasAvx512() ? RowwisePath::kAvx512
         : CpuHasFma()  ? RowwisePath::kAvx2
                        : RowwisePath::kScalar;
}

void RowwiseMatMulTransBOn(RowwisePath path, const float* x, const float* w, float* y, int64_t n,
                           int64_t k, int64_t m, bool accumulate) {
  Run<F32>(path, x, &w, &y, 1, n, k, m, accumulate);
}

void RowwiseMatMulTransB(const float* x, const float* w, float* y, int64_t n, int64_t k,
                         int64_t m, bool accumulate) {
  RowwiseMatMulTransBOn(BestRowwisePath(), x, w, y, n, k, m, accumulate);
}

void RowwiseMatMul16TransBOn(RowwisePath path, DType dtype, const float* x,
                             const uint16_t* const* ws, float* const* ys, int count, int64_t n,
                             int64_t k, int64_t m, bool accumulate) {
  if (dtype == DType::kF16) {
    Run<F16>(path, x, ws, ys, count, n, k, m, accumulate);
  } else {
    Run<Bf16>(path, x, ws, ys, count, n, k, m, accumulate);
  }
}

}  // namespace moe::cpu
