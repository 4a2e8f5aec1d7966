// Internal to the CPU quantized kernels (quant_kernels.cc): the multiply and the widening
// of 16-bit (BF16/F16) stored matrices, fp32 activations. The multiply is the
// batch-invariant rowwise product (rowwise_matmul.h) with the weights widened in
// registers: exact fp32 accumulation, the same bits on every path and for every number of
// rows, and bit for bit the fp32 product of the widened matrix; the fp32 matrix is never
// made.
#ifndef MOE_COMMON_BACKEND_CPU_DENSE16_KERNELS_H_
#define MOE_COMMON_BACKEND_CPU_DENSE16_KERNELS_H_

#include <cstdint>

#include "common/backend/cpu/quant_kernels.h"
#include "common/quant/quant_format.h"

namespace moe::cpu {

// ys[i][n, rows] (=|+=) x[n, cols] · ws[i]^T for count (1 or 2) 16-bit matrices of one
// shape and dtype, in one parallel region. `path` only picks the instructions (kScalar:
// the scalar rowwise path; else AVX-512 where the CPU has it, else AVX2).
void Dense16MatMul(const quant::MatrixView* ws, float* const* ys, int count, const float* x,
                   int64_t n, bool accumulate, QuantKernelPath path);

// dst[count] = the 16-bit values at src widened to fp32, with AVX2 + F16C (the caller
// checks the CPU has them).
void Convert16Avx2(const uint8_t* src, DType dtype, int64_t count, float* dst);

}  // namespace moe::cpu

#endif  // MOE_COMMON_BACKEND_CPU_DENSE16_KERNELS_H_
