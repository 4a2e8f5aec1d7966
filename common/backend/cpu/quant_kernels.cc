#include "common/backend/cpu/quant_kernels.h"

#include <cblas.h>
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "common/backend/cpu/cpu_kernels.h"
#include "common/logging.h"

namespace moe::cpu {
namespace {

using quant::kBlock;

// Below this many weights a matrix runs on one thread: an OpenMP region costs more than
// it saves on small matrices, and far more when the cores are shared and threads spin.
constexpr int64_t kParallelMinValues = int64_t{1} << 20;
using quant::MatrixView;

bool CpuHasAvx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                          __builtin_cpu_supports("f16c");
  return has;
}

std::atomic<QuantKernelPath> g_path{CpuHasAvx2() ? QuantKernelPath::kAvx2
                                                 : QuantKernelPath::kScalar};

// ---- scalar path ------------------------------------------------------------------

// sum_j q_j * x_j over one group (codes only; scale and zero are applied by the caller).
float GroupDotScalar(const uint8_t* codes, int bits, const float* x, int64_t g) {
  const int64_t block_bytes = bits * kBlock / 8;
  float acc = 0;
  for (int64_t b = 0; b < g / kBlock; ++b) {
    const uint8_t* block = codes + b * block_bytes;
    for (int64_t i = 0; i < kBlock; ++i) {
      acc += float(quant::UnpackCode(block, bits, i)) * x[b * kBlock + i];
    }
  }
  return acc;
}

float RowDot16Scalar(const uint8_t* row, DType dtype, const float* x, int64_t cols) {
  const auto* v = reinterpret_cast<const uint16_t*>(row);
  float acc = 0;
  for (int64_t c = 0; c < cols; ++c) {
    acc += (dtype == DType::kBF16 ? Bf16ToF32(v[c]) : F16ToF32(v[c])) * x[c];
  }
  return acc;
}

// ---- AVX2 path --------------------------------------------------------------------
// Eight consecutive codes of a block are one 8-byte load, a shift and a mask (see the
// layout in quant_format.h); chunk c covers values 8c..8c+7.

#define MOE_AVX2 __attribute__((target("avx2,fma,f16c")))

MOE_AVX2 __attribute__((always_inline)) inline __m256i load8(const uint8_t* p) {
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}

template <int kBits>
MOE_AVX2 __attribute__((always_inline)) inline __m256 DecodeChunk(const uint8_t* block, int c) {
  __m256i q;
  if constexpr (kBits == 8) {
    q = load8(block + 8 * c);
  } else if constexpr (kBits == 4) {
    q = _mm256_and_si256(_mm256_srlv_epi32(load8(block + (8 * c) % 16), _mm256_set1_epi32(4 * (c / 2))),
                         _mm256_set1_epi32(15));
  } else if constexpr (kBits == 2) {
    q = _mm256_and_si256(_mm256_srlv_epi32(load8(block), _mm256_set1_epi32(2 * c)),
                         _mm256_set1_epi32(3));
  } else {  // 3 bits: lane j gets the block's 12-bit field j (values j, j+8, j+16, j+24)
    const __m256i bytes =
        _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block)));
    const __m256i pick = _mm256_setr_epi8(0, 1, -1, -1, 1, 2, -1, -1, 3, 4, -1, -1, 4, 5, -1, -1,
                                          6, 7, -1, -1, 7, 8, -1, -1, 9, 10, -1, -1, 10, 11, -1, -1);
    const __m256i fields = _mm256_srlv_epi32(_mm256_shuffle_epi8(bytes, pick),
                                             _mm256_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4));
    q = _mm256_and_si256(_mm256_srlv_epi32(fields, _mm256_set1_epi32(3 * c)), _mm256_set1_epi32(7));
  }
  return _mm256_cvtepi32_ps(q);
}

MOE_AVX2 inline float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

// One output row: per group, the code-times-x products stay in registers and are scaled
// there; one horizontal sum per row (not per group) and the zeros as one scalar term.
template <int kBits>
MOE_AVX2 float RowAvx2(const MatrixView& w, int64_t r, const float* x, const float* xsum) {
  constexpr int64_t kBlockBytes = kBits * kBlock / 8;
  const int64_t g = w.layout.spec.group_size, per_row = w.layout.cols / g;
  const int64_t blocks_per_group = g / kBlock;
  const uint8_t* codes = w.codes() + r * per_row * blocks_per_group * kBlockBytes;
  __m256 acc = _mm256_setzero_ps();
  float zero_term = 0;
  for (int64_t k = 0; k < per_row; ++k) {
    const int64_t group = r * per_row + k;
    __m256 d0 = _mm256_setzero_ps(), d1 = _mm256_setzero_ps();
    for (int64_t b = 0; b < blocks_per_group; ++b) {
      const uint8_t* block = codes + (k * blocks_per_group + b) * kBlockBytes;
      const float* xb = x + (k * blocks_per_group + b) * kBlock;
      d0 = _mm256_fmadd_ps(DecodeChunk<kBits>(block, 0), _mm256_loadu_ps(xb), d0);
      d1 = _mm256_fmadd_ps(DecodeChunk<kBits>(block, 1), _mm256_loadu_ps(xb + 8), d1);
      d0 = _mm256_fmadd_ps(DecodeChunk<kBits>(block, 2), _mm256_loadu_ps(xb + 16), d0);
      d1 = _mm256_fmadd_ps(DecodeChunk<kBits>(block, 3), _mm256_loadu_ps(xb + 24), d1);
    }
    const float scale = w.Scale(group);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(scale), _mm256_add_ps(d0, d1), acc);
    zero_term += scale * w.Zero(group) * xsum[k];
  }
  return HorizontalSum(acc) - zero_term;
}

MOE_AVX2 inline __m256 Load16(const uint16_t* p, DType dtype) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  if (dtype == DType::kF16) return _mm256_cvtph_ps(raw);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
}

MOE_AVX2 float RowDot16Avx2(const uint8_t* row, DType dtype, const float* x, int64_t cols) {
  const auto* v = reinterpret_cast<const uint16_t*>(row);
  __m256 acc = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + 8 <= cols; c += 8) acc = _mm256_fmadd_ps(Load16(v + c, dtype), _mm256_loadu_ps(x + c), acc);
  float tail = 0;
  for (; c < cols; ++c) tail += (dtype == DType::kBF16 ? Bf16ToF32(v[c]) : F16ToF32(v[c])) * x[c];
  return HorizontalSum(acc) + tail;
}

template <int kBits>
MOE_AVX2 void DequantizeGroupAvx2(const uint8_t* codes, float scale, float zero, int64_t g,
                                  float* dst) {
  constexpr int64_t kBlockBytes = kBits * kBlock / 8;
  const __m256 s = _mm256_set1_ps(scale), sz = _mm256_set1_ps(scale * zero);
  for (int64_t b = 0; b < g / kBlock; ++b) {
    const uint8_t* block = codes + b * kBlockBytes;
    for (int c = 0; c < 4; ++c) {
      _mm256_storeu_ps(dst + b * kBlock + 8 * c, _mm256_fmsub_ps(DecodeChunk<kBits>(block, c), s, sz));
    }
  }
}

MOE_AVX2 void Convert16Avx2(const uint8_t* src, DType dtype, int64_t count, float* dst) {
  const auto* v = reinterpret_cast<const uint16_t*>(src);
  int64_t c = 0;
  for (; c + 8 <= count; c += 8) _mm256_storeu_ps(dst + c, Load16(v + c, dtype));
  for (; c < count; ++c) dst[c] = dtype == DType::kBF16 ? Bf16ToF32(v[c]) : F16ToF32(v[c]);
}

// ---- shared drivers ---------------------------------------------------------------

using RowFn = float (*)(const MatrixView&, int64_t, const float*, const float*);

RowFn Avx2Row(int bits) {
  switch (bits) {
    case 2: return &RowAvx2<2>;
    case 3: return &RowAvx2<3>;
    case 4: return &RowAvx2<4>;
    default: return &RowAvx2<8>;
  }
}

// y[rows] (=|+=) dequant(w) · x for one token.
void MatVec(const MatrixView& w, const float* x, float* y, bool accumulate, bool avx2) {
  const quant::MatrixLayout& l = w.layout;
  const int64_t rows = l.rows, cols = l.cols;
  if (!l.spec.quantized()) {
    const DType dtype = l.spec.dtype16;
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMinValues)
    for (int64_t r = 0; r < rows; ++r) {
      const uint8_t* row = w.codes() + r * cols * 2;
      const float d = avx2 ? RowDot16Avx2(row, dtype, x, cols) : RowDot16Scalar(row, dtype, x, cols);
      y[r] = accumulate ? y[r] + d : d;
    }
    return;
  }
  const int bits = l.spec.bits;
  const int64_t g = l.spec.group_size, per_row = cols / g;
  // W x = sum_g s_g (q_g . x_g - z_g sum(x_g)): the zero costs one multiply per group.
  std::vector<float> xsum(per_row);
  for (int64_t k = 0; k < per_row; ++k) {
    float s = 0;
    for (int64_t j = 0; j < g; ++j) s += x[k * g + j];
    xsum[k] = s;
  }
  if (avx2) {
    const RowFn row = Avx2Row(bits);
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMinValues)
    for (int64_t r = 0; r < rows; ++r) {
      const float d = row(w, r, x, xsum.data());
      y[r] = accumulate ? y[r] + d : d;
    }
    return;
  }
  const int64_t group_bytes = g * bits / 8;
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMinValues)
  for (int64_t r = 0; r < rows; ++r) {
    float acc = 0;
    for (int64_t k = 0; k < per_row; ++k) {
      const int64_t group = r * per_row + k;
      const float d = GroupDotScalar(w.codes() + group * group_bytes, bits, x + k * g, g);
      acc += w.Scale(group) * (d - w.Zero(group) * xsum[k]);
    }
    y[r] = accumulate ? y[r] + acc : acc;
  }
}

void DequantizeRowsImpl(const MatrixView& w, int64_t r0, int64_t r1, float* dst, bool avx2) {
  const quant::MatrixLayout& l = w.layout;
  if (!avx2) {
    quant::DequantizeRowsReference(w, r0, r1, dst);
    return;
  }
  const int64_t cols = l.cols;
  if (!l.spec.quantized()) {
    Convert16Avx2(w.codes() + r0 * cols * 2, l.spec.dtype16, (r1 - r0) * cols, dst);
    return;
  }
  const int64_t g = l.spec.group_size, group_bytes = g * l.spec.bits / 8;
  for (int64_t group = r0 * cols / g; group < r1 * cols / g; ++group) {
    const uint8_t* codes = w.codes() + group * group_bytes;
    float* out = dst + (group * g - r0 * cols);
    const float s = w.Scale(group), z = w.Zero(group);
    switch (l.spec.bits) {
      case 2: DequantizeGroupAvx2<2>(codes, s, z, g, out); break;
      case 3: DequantizeGroupAvx2<3>(codes, s, z, g, out); break;
      case 4: DequantizeGroupAvx2<4>(codes, s, z, g, out); break;
      default: DequantizeGroupAvx2<8>(codes, s, z, g, out); break;
    }
  }
}

}  // namespace

QuantKernelPath BestQuantKernelPath() {
  return CpuHasAvx2() ? QuantKernelPath::kAvx2 : QuantKernelPath::kScalar;
}

void SetQuantKernelPath(QuantKernelPath path) {
  g_path.store(CpuHasAvx2() ? path : QuantKernelPath::kScalar);
}

QuantKernelPath GetQuantKernelPath() { return g_path.load(std::memory_order_relaxed); }

void DequantizeRows(const MatrixView& w, int64_t r0, int64_t r1, float* dst) {
  DequantizeRowsImpl(w, r0, r1, dst, GetQuantKernelPath() == QuantKernelPath::kAvx2);
}

void QuantMatMulTransB(const MatrixView& w, const float* x, float* y, int64_t n,
                       bool accumulate) {
  const int64_t rows = w.layout.rows, cols = w.layout.cols;
  if (n <= 0 || rows <= 0) return;
  const bool avx2 = GetQuantKernelPath() == QuantKernelPath::kAvx2;
  // A few tokens: decode in registers once per token (decoding is cheaper than writing
  // and re-reading a dequantised tile).
  // Batch-invariant products (MatmulImpl::kRows) always take this path: a token's sums
  // then do not depend on how many tokens share the call.
  constexpr int64_t kMaxMatVecTokens = 2;
  if (n <= kMaxMatVecTokens || GetMatmulImpl() == MatmulImpl::kRows) {
    // y is [n, rows]: a token's outputs are one contiguous row of y.
    for (int64_t t = 0; t < n; ++t) MatVec(w, x + t * cols, y + t * rows, accumulate, avx2);
    return;
  }
  // Prefill: dequantise a tile of rows once (up to 4 MiB, so it stays in cache) and
  // multiply every token against it with sgemm. Dequantisation is parallel over rows;
  // sgemm brings its own threads. (sgemm per tile inside an OpenMP loop was 40x slower
  // with the OpenMP OpenBLAS: its nested teams oversubscribed the cores.)
  const int64_t tile_rows = std::clamp<int64_t>((int64_t{1} << 20) / cols, 16, rows);
  std::vector<float> tile(tile_rows * cols);
  for (int64_t r0 = 0; r0 < rows; r0 += tile_rows) {
    const int64_t r1 = std::min(rows, r0 + tile_rows);
    constexpr int64_t kChunk = 8;
#pragma omp parallel for schedule(static) if ((r1 - r0) * cols >= kParallelMinValues)
    for (int64_t c0 = r0; c0 < r1; c0 += kChunk) {
      DequantizeRowsImpl(w, c0, std::min(r1, c0 + kChunk), tile.data() + (c0 - r0) * cols, avx2);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, r1 - r0, cols, 1.0f, x, cols,
                tile.data(), cols, accumulate ? 1.0f : 0.0f, y + r0, rows);
  }
}

}  // namespace moe::cpu
