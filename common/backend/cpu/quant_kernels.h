// Fused dequantise-and-multiply for the offload format's matrices (quant_format.h) on the
// CPU: codes are decoded into registers and multiplied without materialising the fp32
// matrix (matrix-vector, decode), or a tile of rows is dequantised once and reused for
// every token (matrix-matrix, prefill). An AVX2+FMA path is chosen at run time when the
// CPU has it; the scalar path is the fallback and what the AVX2 path is tested against,
// both against quant::DequantizeRowsReference followed by MatMulTransBReference.
#ifndef MOE_COMMON_BACKEND_CPU_QUANT_KERNELS_H_
#define MOE_COMMON_BACKEND_CPU_QUANT_KERNELS_H_

#include <cstdint>

#include "common/quant/quant_format.h"

namespace moe::cpu {

// Which code the quantized kernels run. Process-wide; tests and bench switch it.
enum class QuantKernelPath { kAvx2, kScalar };
// kAvx2 when the CPU supports AVX2 and FMA (and F16C), else kScalar.
QuantKernelPath BestQuantKernelPath();
void SetQuantKernelPath(QuantKernelPath path);  // kAvx2 on a CPU without it: kScalar
QuantKernelPath GetQuantKernelPath();

// y[n, rows] (=|+=) x[n, cols] · dequant(w)^T: w is laid out like torch.nn.Linear.weight,
// [rows, cols]. Parallel over output rows (OpenMP).
void QuantMatMulTransB(const quant::MatrixView& w, const float* x, float* y, int64_t n,
                       bool accumulate = false);

// dst[r1 - r0, cols] = rows [r0, r1) of dequant(w), with the fast path.
void DequantizeRows(const quant::MatrixView& w, int64_t r0, int64_t r1, float* dst);

}  // namespace moe::cpu

#endif  // MOE_COMMON_BACKEND_CPU_QUANT_KERNELS_H_
