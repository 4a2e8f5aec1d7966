// Fused dequantise-and-multiply for the offload format's matrices (quant_format.h) on the
// CPU, without materialising the fp32 matrix.
//
// Packed 2/3/4/8-bit matrices: each token's activation row is quantized to int8 per
// block of 32 values (scale max|x| / 127, as llama.cpp's Q8 activations), and each
// block's dot product with the weight codes is exact in int32 (AVX2 maddubs, or VNNI
// dpbusd where the CPU has it); the scales then apply in fp32:
//   y = sum_g s_g (sum_{b in g} d_b (q_b . xq_b) - z_g xs_g),  xs_g = sum_{b in g} d_b sum(xq_b).
// The activation's rounding (at most d_b / 2 per value) is the only numerical change
// from dequantise-then-multiply; the int sums are exact.
// 16-bit (BF16/F16) matrices: the 16-bit weights are widened in registers and multiplied
// by the fp32 activations.
//
// Decode and prefill run the same kernels: a weight row is decoded into registers once per
// tile of up to 4 tokens and used for each, and every (row, token) result is accumulated
// in the same order whatever the number of tokens in the call and wherever the token
// falls in a tile (batch invariance: a token's outputs do not depend on its batch).
// One token runs 4 rows at a time (more tokens: 2 rows, on AVX-512 VNNI's 32 registers
// with tiles of up to 4 tokens; 4-bit on AVX-512 VNNI: 4 rows x 4 tokens, two tokens a
// 512-bit register), so that independent accumulator chains hide the FMA
// latency and the per-row costs are shared (a row of the 734 M model's w1 is only 16
// pairs of blocks).
// Parallel over output rows (OpenMP): each thread streams its own contiguous run of rows.
#ifndef MOE_COMMON_BACKEND_CPU_QUANT_KERNELS_H_
#define MOE_COMMON_BACKEND_CPU_QUANT_KERNELS_H_

#include <cstdint>

#include "common/quant/quant_format.h"

namespace moe::cpu {

// Which code the quantized kernels run. Process-wide; tests and bench switch it. The
// scalar path is the fallback and the plain-C++ reading of the algorithm above.
enum class QuantKernelPath {
  kScalar,
  kAvx2,        // AVX2 + FMA + F16C: maddubs for the int8 dots
  kAvxVnni,     // + AVX-VNNI (VEX dpbusd)
  kAvx512Vnni,  // + AVX-512 VNNI/VL/BW (EVEX dpbusd on 256-bit registers)
};
// The fastest path this CPU supports.
QuantKernelPath BestQuantKernelPath();
// True when this CPU can run `path`.
bool QuantKernelPathSupported(QuantKernelPath path);
// An unsupported `path` falls back to BestQuantKernelPath().
void SetQuantKernelPath(QuantKernelPath path);
QuantKernelPath GetQuantKernelPath();
const char* QuantKernelPathName(QuantKernelPath path);

// y[n, rows] (=|+=) x[n, cols] · dequant(w)^T: w is laid out like torch.nn.Linear.weight,
// [rows, cols].
void QuantMatMulTransB(const quant::MatrixView& w, const float* x, float* y, int64_t n,
                       bool accumulate = false);

// ya = x · dequant(a)^T and yb = x · dequant(b)^T, bit for bit the two calls above, but
// with one activation rounding and one parallel region when a and b have one shape and
// format (an expert's w1 and w3).
void QuantMatMulTransB2(const quant::MatrixView& a, const quant::MatrixView& b, const float* x,
                        float* ya, float* yb, int64_t n);

// The activation quantization every path uses for packed matrices: x[cols] (cols a
// multiple of quant::kBlock) to q[cols] int8 and scale[cols / kBlock], x ~= scale * q.
// On AVX2 unless the path is kScalar; the same values either way (NaN inputs aside).
void QuantizeActivationBlocks(const float* x, int64_t cols, int8_t* q, float* scale);

// dst[r1 - r0, cols] = rows [r0, r1) of dequant(w), with the fast path.
void DequantizeRows(const quant::MatrixView& w, int64_t r0, int64_t r1, float* dst);

}  // namespace moe::cpu

#endif  // MOE_COMMON_BACKEND_CPU_QUANT_KERNELS_H_
