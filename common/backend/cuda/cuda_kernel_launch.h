// The CUDA kernels' launchers (cuda_kernels.cu), called by CudaKernels (cuda_kernels.cc).
// Plain C++17 with no Abseil so that nvcc compiles the .cu file: each launcher queues its
// kernel(s) on `stream` and returns cudaGetLastError() of the launch. The caller has
// validated shapes and pointers (cuda_kernels.cc) and made the device current. Shapes
// are row-major, in brackets; every pointer is device memory.
#ifndef MOE_COMMON_BACKEND_CUDA_CUDA_KERNEL_LAUNCH_H_
#define MOE_COMMON_BACKEND_CUDA_CUDA_KERNEL_LAUNCH_H_

#include <cuda_runtime_api.h>

#include <cstdint>

namespace moe::cuda::launch {

// The most tokens the matrix-vector (decode) kernels take; more go through cuBLAS.
inline constexpr int kMaxDecodeTokens = 8;
// The largest head_dim Attention supports (each lane keeps head_dim / 32 accumulators).
inline constexpr int kMaxHeadDim = 256;

// A weight matrix W[rows, cols] that is not fp32 (quant_format.h's layout, unpacked into
// pointers): raw bf16/f16 (bits 16), or packed codes with per-group uint8 scale/zero
// codes and per-128-group meta parameters {s_min, s_step, z_min, z_step}.
struct DeviceMatrix {
  int64_t rows = 0, cols = 0;
  int bits = 16;
  bool f16 = false;  // bits 16: f16 (true) or bf16 (false)
  int64_t group_size = 0;
  const uint8_t* codes = nullptr;
  const uint8_t* scales = nullptr;
  const uint8_t* zeros = nullptr;
  const float* meta = nullptr;  // 4 floats per meta group
};

// y[n, rows] (=|+=) x[n, cols] · W^T for n in [1, kMaxDecodeTokens]. Needs x 16-byte
// aligned and cols % 4 == 0 (fp32: w 16-byte aligned too).
cudaError_t MatVecF32(const float* w, int64_t rows, int64_t cols, const float* x, float* y,
                      int n, bool accumulate, cudaStream_t stream);
// Needs x and the codes 16-byte aligned; 16-bit: cols % 8 == 0.
cudaError_t MatVecQuant(const DeviceMatrix& w, const float* x, float* y, int n, bool accumulate,
                        cudaStream_t stream);
// Whether the decode kernels accept these pointers and shape.
bool MatVecF32Supported(const float* w, int64_t cols, const float* x);
bool MatVecQuantSupported(const DeviceMatrix& w, const float* x);

// dst[r1 - r0, cols] = rows [r0, r1) of W as fp32 (any alignment).
cudaError_t DequantizeRows(const DeviceMatrix& w, int64_t r0, int64_t r1, float* dst,
                           cudaStream_t stream);
// out[i, :] = row rows[i] of W as fp32 for i < n; out[n, cols] (any alignment).
cudaError_t GatherDequantizedRows(const DeviceMatrix& w, const int32_t* rows, int64_t n,
                                  float* out, cudaStream_t stream);

// y[n, d] = x * rsqrt(mean(x^2) + eps) * weight; y == x allowed.
cudaError_t RmsNorm(const float* x, const float* weight, float* y, int64_t n, int64_t d,
                    float eps, cudaStream_t stream);
// x[n, heads, head_dim] rotated in place, token t at position start + t; head_dim even.
cudaError_t Rope(float* x, int64_t start, int64_t n, int64_t heads, int64_t head_dim,
                 double theta, cudaStream_t stream);

// How many key blocks Attention splits each query's keys into (1: no split), and the
// scratch floats it then needs.
int AttentionSplits(int64_t max_keys);
int64_t AttentionScratchFloats(int64_t n, int64_t heads, int64_t head_dim, int splits);
// kernels.h's Attention; head_dim <= kMaxHeadDim; `scratch` holds
// AttentionScratchFloats(...) floats when splits > 1 (else may be null).
cudaError_t Attention(const float* q, const float* k_cache, const float* v_cache, float* out,
                      int64_t start, int64_t n, int64_t heads, int64_t kv_heads,
                      int64_t head_dim, int64_t window, int splits, float* scratch,
                      cudaStream_t stream);

cudaError_t SiluMul(float* gate, const float* up, int64_t count, cudaStream_t stream);
cudaError_t Add(float* y, const float* x, int64_t count, cudaStream_t stream);
cudaError_t TopKRouting(const float* logits, int64_t n, int64_t experts, int64_t k,
                        bool renormalize, int32_t* ids, float* weights, cudaStream_t stream);
cudaError_t AddBias(float* x, const float* bias, int64_t n, int64_t d, cudaStream_t stream);
cudaError_t Clamp(float* x, int64_t count, float limit, cudaStream_t stream);
cudaError_t SigmoidGatedAdd(float* y, const float* gate, const float* x, int64_t n, int64_t d,
                            cudaStream_t stream);
cudaError_t GatherRows(const float* table, const int32_t* rows, int64_t n, int64_t d, float* out,
                       cudaStream_t stream);
cudaError_t ScatterAddRows(const float* x, const int32_t* rows, const float* scale, int64_t n,
                           int64_t d, float* out, cudaStream_t stream);

}  // namespace moe::cuda::launch

#endif  // MOE_COMMON_BACKEND_CUDA_CUDA_KERNEL_LAUNCH_H_
