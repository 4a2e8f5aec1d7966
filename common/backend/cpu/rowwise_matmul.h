// A batch-invariant matrix product for the CPU, on fp32 or 16-bit (BF16/F16) stored
// weights: every output y[i, j] is the dot product of x[i] and w[j] computed by one fixed
// sequence of operations that depends only on k, never on n, on which rows share the
// call, or on the thread that runs it. A token's result therefore does not change when
// other tokens join its batch (BLAS picks sgemv for one row and blocked sgemm kernels for
// more, whose sums differ).
//
// Per dot product: eight lanes, lane l accumulating x[8c + l] * w[8c + l] over chunks
// c = 0, 1, ... in order by fused multiply-add; the lanes summed as
// ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)); then the k % 8 tail in order by
// fused multiply-add. The AVX2 and AVX-512 paths compute exactly this (so they equal the
// scalar path bit for bit); register blocking (several rows of w and several tokens at
// once) only changes which dot products run side by side. AVX-512 carries two dot
// products' eight lanes in one register (two rows of w for one token), which doubles
// the multiply-adds per instruction on cores with 512-bit units.
//
// 16-bit weights are widened to fp32 in registers (exact for both types), so their
// product is bit for bit the fp32 product of the widened matrix, at half the bytes read
// and without that matrix in memory.
#ifndef MOE_COMMON_BACKEND_CPU_ROWWISE_MATMUL_H_
#define MOE_COMMON_BACKEND_CPU_ROWWISE_MATMUL_H_

#include <cstdint>

#include "common/dtype.h"

namespace moe::cpu {

// y[n, m] (=|+=) x[n, k] · w[m, k]^T, rows of w parallel over OpenMP threads, on the
// widest path the CPU has.
void RowwiseMatMulTransB(const float* x, const float* w, float* y, int64_t n, int64_t k,
                         int64_t m, bool accumulate);

enum class RowwisePath { kScalar, kAvx2, kAvx512 };
// Whether this CPU can run `path` (the scalar one always).
bool RowwisePathSupported(RowwisePath path);
// The widest path this CPU runs.
RowwisePath BestRowwisePath();
// The same product on one given path (tests compare them); the path must be supported.
void RowwiseMatMulTransBOn(RowwisePath path, const float* x, const float* w, float* y, int64_t n,
                           int64_t k, int64_t m, bool accumulate);

// ys[i][n, m] (=|+=) x[n, k] · widen(ws[i])[m, k]^T for `count` 16-bit matrices of one
// shape and `dtype` (kBF16 or kF16) on one x, in one parallel region (an expert's w1 and
// w3); bit for bit RowwiseMatMulTransBOn on each widened matrix.
void RowwiseMatMul16TransBOn(RowwisePath path, DType dtype, const float* x,
                             const uint16_t* const* ws, float* const* ys, int count, int64_t n,
                             int64_t k, int64_t m, bool accumulate);

}  // namespace moe::cpu

#endif  // MOE_COMMON_BACKEND_CPU_ROWWISE_MATMUL_H_
