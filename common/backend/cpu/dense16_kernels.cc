#include "common/backend/cpu/dense16_kernels.h"

#include <immintrin.h>

#include "common/backend/cpu/rowwise_matmul.h"

namespace moe::cpu {
namespace {

// Every rowwise path computes the same bits; the quantized kernels' path only picks how.
RowwisePath RowwisePathFor(QuantKernelPath path) {
  switch (path) {
    case QuantKernelPath::kScalar: return RowwisePath::kScalar;
    case QuantKernelPath::kAvx512Vnni:
      if (RowwisePathSupported(RowwisePath::kAvx512)) return RowwisePath::kAvx512;
      [[fallthrough]];
    default: return RowwisePath::kAvx2;
  }
}

}  // namespace

void Dense16MatMul(const quant::MatrixView* ws, float* const* ys, int count, const float* x,
                   int64_t n, bool accumulate, QuantKernelPath path) {
  const quant::MatrixLayout& l = ws[0].layout;
  const uint16_t* w16[2];  // count is 1 or 2 (QuantMatMulTransB2)
  for (int i = 0; i < count; ++i) w16[i] = reinterpret_cast<const uint16_t*>(ws[i].codes());
  RowwiseMatMul16TransBOn(RowwisePathFor(path), l.spec.dtype16, x, w16, ys, count, n, l.cols,
                          l.rows, accumulate);
}

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
void Convert16Avx2(const uint8_t* src, DType dtype, int64_t count, float* dst) {
  const auto* v = reinterpret_cast<const uint16_t*>(src);
  int64_t c = 0;
  for (; c + 8 <= count; c += 8) {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(v + c));
    _mm256_storeu_ps(dst + c, dtype == DType::kF16
                                  ? _mm256_cvtph_ps(raw)
                                  : _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16)));
  }
  for (; c < count; ++c) dst[c] = dtype == DType::kBF16 ? Bf16ToF32(v[c]) : F16ToF32(v[c]);
}
#pragma GCC pop_options

}  // namespace moe::cpu
