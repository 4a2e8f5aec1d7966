// The CUDA kernels behind backend::Kernels (launchers declared in cuda_kernel_launch.h).
// Each has a plain CPU reference it is checked against in backend_conformance_test:
// cpu::MatMulTransBReference (after quant::DequantizeRowsReference for the packed
// format), and the loops of cpu_kernels.cc for the others. Indices are 64-bit wherever a
// product of two dimensions can pass 2^31.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common/backend/cuda/cuda_kernel_launch.h"
#include "common/backend/cuda/packed_block.h"

namespace moe::cuda::launch {
namespace {

constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kBlock = 32;           // values per packed block (quant_format.h)
constexpr int kMetaGroup = 128;      // groups per MetaParams (quant_format.h)
constexpr int kThreads = 256;        // elementwise kernels
constexpr int kRowsPerBlock = 8;     // decode: one warp per output row
constexpr int kAttnWarps = 4;        // attention: warps per (query, head, split) block
constexpr int64_t kMaxGridBlocks = int64_t{1} << 20;  // grid-stride kernels loop past it

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

__device__ __forceinline__ double WarpSumDouble(double v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

int GridFor(int64_t count, int threads) {
  const int64_t blocks = (count + threads - 1) / threads;
  return static_cast<int>(blocks < kMaxGridBlocks ? blocks : kMaxGridBlocks);
}

// Reduces a warp's per-token partial sums and writes row r of each token's output.
template <int N>
__device__ __forceinline__ void StoreRow(const float (&acc)[N], float* y, int64_t rows, int64_t r,
                                         int n, bool accumulate, int lane) {
#pragma unroll
  for (int t = 0; t < N; ++t) {
    const float sum = WarpSum(acc[t]);
    if (lane == 0 && t < n) {
      float* p = y + t * rows + r;
      *p = accumulate ? *p + sum : sum;
    }
  }
}

__device__ __forceinline__ float Dot4(float4 a, float4 b) {
  return a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
}

// ---- MatMul, decode: one warp per output row, every weight byte read once for all n
// tokens with 16-byte loads; consecutive lanes read consecutive 16 bytes (coalesced).
// Weights are streamed (__ldcs: read once, do not keep them in L1); x is small and re-read
// by every warp, so it goes through the read-only cache (__ldg).

template <int N>
__global__ void __launch_bounds__(kRowsPerBlock * kWarp)
    MatVecF32Kernel(const float* __restrict__ w, int64_t rows, int64_t cols,
                    const float* __restrict__ x, float* y, int n, bool accumulate) {
  const int lane = threadIdx.x % kWarp;
  const int64_t r = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  if (r >= rows) return;  // the whole warp leaves together
  const float4* wr = reinterpret_cast<const float4*>(w + r * cols);
  const int64_t c4 = cols / 4;
  float acc[N] = {};
#pragma unroll 4
  for (int64_t i = lane; i < c4; i += kWarp) {
    const float4 a = __ldcs(wr + i);
#pragma unroll
    for (int t = 0; t < N; ++t) {
      if (t < n) acc[t] += Dot4(a, __ldg(reinterpret_cast<const float4*>(x + t * cols) + i));
    }
  }
  StoreRow<N>(acc, y, rows, r, n, accumulate, lane);
}

// Eight 16-bit values (one 16-byte load) as floats.
template <bool kF16>
__device__ __forceinline__ void Convert8(uint4 raw, float (&v)[8]) {
  const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if constexpr (kF16) {
      const __half2 h = *reinterpret_cast<const __half2*>(&words[i]);
      const float2 f = __half22float2(h);
      v[2 * i] = f.x;  // the low half is the earlier element (little-endian)
      v[2 * i + 1] = f.y;
    } else {
      v[2 * i] = __uint_as_float(words[i] << 16);
      v[2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
    }
  }
}

template <int N, bool kF16>
__global__ void __launch_bounds__(kRowsPerBlock * kWarp)
    MatVec16Kernel(const uint16_t* __restrict__ w, int64_t rows, int64_t cols,
                   const float* __restrict__ x, float* y, int n, bool accumulate) {
  const int lane = threadIdx.x % kWarp;
  const int64_t r = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  if (r >= rows) return;
  const uint4* wr = reinterpret_cast<const uint4*>(w + r * cols);
  const int64_t c8 = cols / 8;
  float acc[N] = {};
#pragma unroll 2
  for (int64_t i = lane; i < c8; i += kWarp) {
    float v[8];
    Convert8<kF16>(__ldcs(wr + i), v);
#pragma unroll
    for (int t = 0; t < N; ++t) {
      if (t < n) {
        const float4* xt = reinterpret_cast<const float4*>(x + t * cols) + 2 * i;
        const float4 a = __ldg(xt), b = __ldg(xt + 1);
        acc[t] += v[0] * a.x + v[1] * a.y + v[2] * a.z + v[3] * a.w + v[4] * b.x + v[5] * b.y +
                  v[6] * b.z + v[7] * b.w;
      }
    }
  }
  StoreRow<N>(acc, y, rows, r, n, accumulate, lane);
}

// One packed block (kBits * 4 bytes = kBits words) in registers; word kBits is 0 so the
// 3-bit decode may read one word past a field that ends the block.
template <int kBits>
__device__ __forceinline__ void LoadBlock(const uint8_t* p, uint32_t (&w)[kBits + 1]) {
  if constexpr (kBits == 8) {
    const uint4 a = __ldcs(reinterpret_cast<const uint4*>(p));
    const uint4 b = __ldcs(reinterpret_cast<const uint4*>(p) + 1);
    w[0] = a.x; w[1] = a.y; w[2] = a.z; w[3] = a.w;
    w[4] = b.x; w[5] = b.y; w[6] = b.z; w[7] = b.w;
  } else if constexpr (kBits == 4) {
    const uint4 a = __ldcs(reinterpret_cast<const uint4*>(p));
    w[0] = a.x; w[1] = a.y; w[2] = a.z; w[3] = a.w;
  } else if constexpr (kBits == 2) {
    const uint2 a = __ldcs(reinterpret_cast<const uint2*>(p));
    w[0] = a.x; w[1] = a.y;
  } else {  // 3 bits: 12-byte blocks are 4-byte aligned
    const uint32_t* q = reinterpret_cast<const uint32_t*>(p);
    w[0] = __ldcs(q); w[1] = __ldcs(q + 1); w[2] = __ldcs(q + 2);
  }
  w[kBits] = 0;
}

__device__ __forceinline__ float GroupScale(const DeviceMatrix& m, int64_t group) {
  const float* meta = m.meta + 4 * (group / kMetaGroup);
  return __ldg(meta) + __ldg(meta + 1) * float(__ldg(m.scales + group));
}
__device__ __forceinline__ float GroupZero(const DeviceMatrix& m, int64_t group) {
  const float* meta = m.meta + 4 * (group / kMetaGroup);
  return __ldg(meta + 2) + __ldg(meta + 3) * float(__ldg(m.zeros + group));
}

// Packed decode: lane-per-block (consecutive lanes read consecutive blocks). Per block and
// token: sum_i q_i x_i and sum_i x_i, then W x = s (q.x - z sum x), as the CPU's kernel.
template <int N, int kBits>
__global__ void __launch_bounds__(kRowsPerBlock * kWarp)
    MatVecPackedKernel(DeviceMatrix m, const float* __restrict__ x, float* y, int n,
                       bool accumulate) {
  constexpr int kBlockBytes = kBits * kBlock / 8;
  const int lane = threadIdx.x % kWarp;
  const int64_t r = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  if (r >= m.rows) return;
  const int64_t cols = m.cols, blocks = cols / kBlock, per_row = cols / m.group_size;
  const uint8_t* row_codes = m.codes + r * blocks * kBlockBytes;
  float acc[N] = {};
  for (int64_t b = lane; b < blocks; b += kWarp) {
    uint32_t words[kBits + 1];
    LoadBlock<kBits>(row_codes + b * kBlockBytes, words);
    const int64_t group = r * per_row + b * kBlock / m.group_size;
    const float s = GroupScale(m, group), z = GroupZero(m, group);
    float q[kBlock];
#pragma unroll
    for (int i = 0; i < kBlock; ++i) q[i] = float(BlockCode<kBits>(words, i));
#pragma unroll
    for (int t = 0; t < N; ++t) {
      if (t < n) {
        const float4* xb = reinterpret_cast<const float4*>(x + t * cols + b * kBlock);
        float dot = 0, xsum = 0;
#pragma unroll
        for (int j = 0; j < kBlock / 4; ++j) {
          const float4 v = __ldg(xb + j);
          dot += q[4 * j] * v.x + q[4 * j + 1] * v.y + q[4 * j + 2] * v.z + q[4 * j + 3] * v.w;
          xsum += (v.x + v.y) + (v.z + v.w);
        }
        acc[t] += s * (dot - z * xsum);
      }
    }
  }
  StoreRow<N>(acc, y, m.rows, r, n, accumulate, lane);
}

template <int N>
cudaError_t LaunchMatVecQuantN(const DeviceMatrix& w, const float* x, float* y, int n,
                               bool accumulate, cudaStream_t stream) {
  const int64_t blocks64 = (w.rows + kRowsPerBlock - 1) / kRowsPerBlock;
  const dim3 grid(static_cast<unsigned>(blocks64)), block(kRowsPerBlock * kWarp);
  switch (w.bits) {
    case 16:
      if (w.f16) {
        MatVec16Kernel<N, true><<<grid, block, 0, stream>>>(
            reinterpret_cast<const uint16_t*>(w.codes), w.rows, w.cols, x, y, n, accumulate);
      } else {
        MatVec16Kernel<N, false><<<grid, block, 0, stream>>>(
            reinterpret_cast<const uint16_t*>(w.codes), w.rows, w.cols, x, y, n, accumulate);
      }
      break;
    case 8: MatVecPackedKernel<N, 8><<<grid, block, 0, stream>>>(w, x, y, n, accumulate); break;
    case 4: MatVecPackedKernel<N, 4><<<grid, block, 0, stream>>>(w, x, y, n, accumulate); break;
    case 3: MatVecPackedKernel<N, 3><<<grid, block, 0, stream>>>(w, x, y, n, accumulate); break;
    case 2: MatVecPackedKernel<N, 2><<<grid, block, 0, stream>>>(w, x, y, n, accumulate); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

// ---- Dequantisation for the prefill path: one thread per value, byte loads (any
// alignment), the same arithmetic as quant::DequantizeRowsReference.

__device__ __forceinline__ int UnpackCode(const uint8_t* block, int bits, int i) {
  switch (bits) {
    case 8: return block[i];
    case 4: return (block[i % 16] >> (4 * (i / 16))) & 15;
    case 2: return (block[i % 8] >> (2 * (i / 8))) & 3;
    default: {  // 3
      const int bit = 12 * (i % 8) + 3 * (i / 8), byte = bit / 8, shift = bit % 8;
      int v = block[byte] >> shift;
      if (shift > 5) v |= block[byte + 1] << (8 - shift);
      return v & 7;
    }
  }
}

// Value `index` (row-major) of `m` as fp32.
__device__ __forceinline__ float DequantizeValue(const DeviceMatrix& m, int64_t index) {
  if (m.bits == 16) {
    const uint32_t bits16 = uint32_t(m.codes[2 * index]) | (uint32_t(m.codes[2 * index + 1]) << 8);
    return m.f16 ? __half2float(__ushort_as_half(static_cast<unsigned short>(bits16)))
                 : __uint_as_float(bits16 << 16);
  }
  const uint8_t* block = m.codes + (index / kBlock) * (m.bits * kBlock / 8);
  const int q = UnpackCode(block, m.bits, int(index % kBlock));
  const int64_t group = index / m.group_size;
  const float* meta = m.meta + 4 * (group / kMetaGroup);
  const float s = meta[0] + meta[1] * float(m.scales[group]);
  const float z = meta[2] + meta[3] * float(m.zeros[group]);
  return s * (float(q) - z);
}

__global__ void DequantizeKernel(DeviceMatrix m, int64_t r0, int64_t count, float* dst) {
  const int64_t base = r0 * m.cols;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += int64_t(gridDim.x) * blockDim.x) {
    dst[i] = DequantizeValue(m, base + i);
  }
}

// The embedding lookup of a table kept as stored: only the named rows are converted.
__global__ void GatherDequantizedRowsKernel(DeviceMatrix m, const int32_t* rows, int64_t n,
                                            float* out) {
  const int64_t count = n * m.cols;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += int64_t(gridDim.x) * blockDim.x) {
    out[i] = DequantizeValue(m, int64_t(rows[i / m.cols]) * m.cols + i % m.cols);
  }
}

// ---- Elementwise and row kernels.

// One block per row; the sum of squares in double, as the CPU does.
__global__ void RmsNormKernel(const float* x, const float* __restrict__ weight, float* y,
                              int64_t d, float eps) {
  __shared__ double partial[kThreads / kWarp];
  const float* xr = x + int64_t(blockIdx.x) * d;
  float* yr = y + int64_t(blockIdx.x) * d;
  double sum = 0;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) sum += double(xr[j]) * xr[j];
  sum = WarpSumDouble(sum);
  if (threadIdx.x % kWarp == 0) partial[threadIdx.x / kWarp] = sum;
  __syncthreads();
  double total = 0;
  for (int w = 0; w < kThreads / kWarp; ++w) total += partial[w];
  const float scale = static_cast<float>(1.0 / sqrt(total / double(d) + double(eps)));
  // Each thread rewrites only the elements it read, after every read (in place is safe).
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) yr[j] = xr[j] * scale * weight[j];
}

__global__ void RopeKernel(float* x, int64_t start, int64_t n, int64_t heads, int64_t head_dim,
                           double theta) {
  const int64_t half = head_dim / 2, count = n * heads * half;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < count;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = idx % half, th = idx / half, t = th / heads;
    // The angle in double, as cpu::RopeTable computes it.
    const double inv_freq = 1.0 / pow(theta, double(2 * i) / double(head_dim));
    const double angle = double(start + t) * inv_freq;
    const float c = static_cast<float>(cos(angle)), s = static_cast<float>(sin(angle));
    float* v = x + th * head_dim;
    const float a = v[i], b = v[i + half];
    v[i] = a * c - b * s;
    v[i + half] = b * c + a * s;
  }
}

__global__ void SiluMulKernel(float* gate, const float* up, int64_t count) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float g = gate[i];
    gate[i] = g / (1.0f + expf(-g)) * up[i];
  }
}

__global__ void AddKernel(float* y, const float* x, int64_t count) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += int64_t(gridDim.x) * blockDim.x) {
    y[i] += x[i];
  }
}

// One thread per token: experts are few (8 for Mixtral), so the O(k * experts) selection
// of cpu::TopKRouting is cheaper than any cooperation. Probabilities are recomputed from
// the logits instead of stored, with the CPU's arithmetic (exp in float, sum in double).
__global__ void TopKRoutingKernel(const float* logits, int64_t n, int64_t experts, int64_t k,
                                  bool renormalize, int32_t* ids, float* weights) {
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < n;
       t += int64_t(gridDim.x) * blockDim.x) {
    const float* l = logits + t * experts;
    int32_t* id = ids + t * k;
    float* wt = weights + t * k;
    float max = -INFINITY;
    for (int64_t e = 0; e < experts; ++e) max = fmaxf(max, l[e]);
    double sum = 0;
    for (int64_t e = 0; e < experts; ++e) sum += expf(l[e] - max);
    const float inv = static_cast<float>(1.0 / sum);
    double total = 0;
    for (int64_t slot = 0; slot < k; ++slot) {
      int64_t best = -1;
      float best_p = 0;
      for (int64_t e = 0; e < experts; ++e) {
        bool taken = false;
        for (int64_t s = 0; s < slot; ++s) taken |= id[s] == e;
        const float p = expf(l[e] - max) * inv;
        if (!taken && (best < 0 || p > best_p)) {  // strict: ties stay with the lower id
          best = e;
          best_p = p;
        }
      }
      id[slot] = static_cast<int32_t>(best);
      wt[slot] = best_p;
      total += best_p;
    }
    if (!renormalize) continue;
    for (int64_t slot = 0; slot < k; ++slot) wt[slot] = static_cast<float>(wt[slot] / total);
  }
}

__global__ void AddBiasKernel(float* x, const float* bias, int64_t n, int64_t d) {
  const int64_t count = n * d;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += int64_t(gridDim.x) * blockDim.x) {
    x[i] += bias[i % d];
  }
}

__global__ void ClampKernel(float* x, int64_t count, float limit) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += int64_t(gridDim.x) * blockDim.x) {
    x[i] = fminf(fmaxf(x[i], -limit), limit);
  }
}

__global__ void SigmoidGatedAddKernel(float* y, const float* gate, const float* x, int64_t n,
                                      int64_t d) {
  const int64_t count = n * d;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float g = 1.0f / (1.0f + expf(-gate[i / d]));
    y[i] += g * x[i];
  }
}

__global__ void GatherRowsKernel(const float* table, const int32_t* rows, int64_t n, int64_t d,
                                 float* out) {
  const int64_t count = n * d;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += int64_t(gridDim.x) * blockDim.x) {
    out[i] = table[int64_t(rows[i / d]) * d + i % d];
  }
}

// One thread per column walks i in order, so repeated rows add in the order of i.
__global__ void ScatterAddRowsKernel(const float* x, const int32_t* rows, const float* scale,
                                     int64_t n, int64_t d, float* out) {
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < d;
       c += int64_t(gridDim.x) * blockDim.x) {
    for (int64_t i = 0; i < n; ++i) out[int64_t(rows[i]) * d + c] += scale[i] * x[i * d + c];
  }
}

// ---- Attention: one block per (query token, head, key split). Each warp walks every
// kAttnWarps-th key of the split with an online softmax (running max m, sum l, and the
// weighted value sum in kDims registers per lane: dimension lane + 32 j); the warps are
// combined in shared memory. With one split the block writes the output; with several
// (long contexts: flash-decoding, so one query's keys occupy many SMs) it writes its
// (m, l, acc) to scratch and AttentionCombineKernel merges the splits.
template <int kDims>
__global__ void __launch_bounds__(kAttnWarps * kWarp)
    AttentionKernel(const float* __restrict__ q, const float* __restrict__ k_cache,
                    const float* __restrict__ v_cache, float* out, int64_t start, int64_t heads,
                    int64_t kv_heads, int64_t head_dim, int64_t window, float scale, int splits,
                    float* scratch_m, float* scratch_l, float* scratch_acc) {
  __shared__ float sm_m[kAttnWarps], sm_l[kAttnWarps];
  __shared__ float sm_acc[kAttnWarps][kDims * kWarp];
  const int64_t t = blockIdx.x, h = blockIdx.y;
  const int split = blockIdx.z;
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int64_t pos = start + t;
  const int64_t first = window > 0 ? (pos - window + 1 > 0 ? pos - window + 1 : 0) : 0;
  const int64_t count = pos - first + 1;
  const int64_t per = (count + splits - 1) / splits;
  const int64_t k0 = first + split * per;
  const int64_t k1 = k0 + per < pos + 1 ? k0 + per : pos + 1;
  const int64_t q_stride = heads * head_dim, kv_stride = kv_heads * head_dim;
  const int64_t kv_off = (h / (heads / kv_heads)) * head_dim;

  float qv[kDims], acc[kDims];
#pragma unroll
  for (int j = 0; j < kDims; ++j) {
    const int64_t d = lane + kWarp * j;
    qv[j] = d < head_dim ? q[t * q_stride + h * head_dim + d] : 0.0f;
    acc[j] = 0;
  }
  float m = -INFINITY, l = 0;
  for (int64_t key = k0 + warp; key < k1; key += kAttnWarps) {
    const float* kr = k_cache + key * kv_stride + kv_off;
    float dot = 0;
#pragma unroll
    for (int j = 0; j < kDims; ++j) {
      const int64_t d = lane + kWarp * j;
      if (d < head_dim) dot += qv[j] * kr[d];
    }
    const float s = WarpSum(dot) * scale;
    const float m_new = fmaxf(m, s);
    const float correction = expf(m - m_new);  // 0 for the first key (m = -inf)
    const float p = expf(s - m_new);
    l = l * correction + p;
    const float* vr = v_cache + key * kv_stride + kv_off;
#pragma unroll
    for (int j = 0; j < kDims; ++j) {
      const int64_t d = lane + kWarp * j;
      acc[j] = acc[j] * correction + (d < head_dim ? p * vr[d] : 0.0f);
    }
    m = m_new;
  }
  if (lane == 0) {
    sm_m[warp] = m;
    sm_l[warp] = l;
  }
#pragma unroll
  for (int j = 0; j < kDims; ++j) sm_acc[warp][lane + kWarp * j] = acc[j];
  __syncthreads();

  float block_m = -INFINITY;
  for (int w = 0; w < kAttnWarps; ++w) block_m = fmaxf(block_m, sm_m[w]);
  float factor[kAttnWarps];
  float block_l = 0;
  for (int w = 0; w < kAttnWarps; ++w) {
    // A warp that saw no key has m = -inf and contributes nothing.
    factor[w] = sm_m[w] == -INFINITY ? 0.0f : expf(sm_m[w] - block_m);
    block_l += sm_l[w] * factor[w];
  }
  const int64_t partial = (t * heads + h) * splits + split;
  for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float a = 0;
    for (int w = 0; w < kAttnWarps; ++w) a += sm_acc[w][d] * factor[w];
    if (splits == 1) {
      out[t * q_stride + h * head_dim + d] = a / block_l;  // count >= 1, so block_l > 0
    } else {
      scratch_acc[partial * head_dim + d] = a;
    }
  }
  if (splits > 1 && threadIdx.x == 0) {
    scratch_m[partial] = block_m;
    scratch_l[partial] = block_l;
  }
}

__global__ void AttentionCombineKernel(float* out, int64_t heads, int64_t head_dim, int splits,
                                       const float* scratch_m, const float* scratch_l,
                                       const float* scratch_acc) {
  const int64_t t = blockIdx.x, h = blockIdx.y;
  const int64_t base = (t * heads + h) * splits;
  float m = -INFINITY;
  for (int s = 0; s < splits; ++s) m = fmaxf(m, scratch_m[base + s]);
  float l = 0;
  for (int s = 0; s < splits; ++s) {
    const float ms = scratch_m[base + s];
    l += ms == -INFINITY ? 0.0f : scratch_l[base + s] * expf(ms - m);
  }
  for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float a = 0;
    for (int s = 0; s < splits; ++s) {
      const float ms = scratch_m[base + s];
      if (ms != -INFINITY) a += scratch_acc[(base + s) * head_dim + d] * expf(ms - m);
    }
    out[t * heads * head_dim + h * head_dim + d] = a / l;
  }
}

template <int kDims>
cudaError_t LaunchAttention(const float* q, const float* k_cache, const float* v_cache,
                            float* out, int64_t start, int64_t n, int64_t heads,
                            int64_t kv_heads, int64_t head_dim, int64_t window, int splits,
                            float* scratch, cudaStream_t stream) {
  const float scale = static_cast<float>(1.0 / sqrt(double(head_dim)));
  float* scratch_m = scratch;
  float* scratch_l = scratch ? scratch + n * heads * splits : nullptr;
  float* scratch_acc = scratch ? scratch + 2 * n * heads * splits : nullptr;
  const dim3 grid(static_cast<unsigned>(n), static_cast<unsigned>(heads),
                  static_cast<unsigned>(splits));
  AttentionKernel<kDims><<<grid, kAttnWarps * kWarp, 0, stream>>>(
      q, k_cache, v_cache, out, start, heads, kv_heads, head_dim, window, scale, splits,
      scratch_m, scratch_l, scratch_acc);
  cudaError_t error = cudaGetLastError();
  if (error != cudaSuccess || splits == 1) return error;
  AttentionCombineKernel<<<dim3(static_cast<unsigned>(n), static_cast<unsigned>(heads)), 128, 0,
                           stream>>>(out, heads, head_dim, splits, scratch_m, scratch_l,
                                     scratch_acc);
  return cudaGetLastError();
}

}  // namespace

bool MatVecF32Supported(const float* w, int64_t cols, const float* x) {
  return cols % 4 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(x) % 16 == 0;
}

bool MatVecQuantSupported(const DeviceMatrix& w, const float* x) {
  if (reinterpret_cast<uintptr_t>(x) % 16 != 0 || reinterpret_cast<uintptr_t>(w.codes) % 16 != 0) {
    return false;
  }
  return w.bits == 16 ? w.cols % 8 == 0 : w.cols % kBlock == 0;
}

cudaError_t MatVecF32(const float* w, int64_t rows, int64_t cols, const float* x, float* y, int n,
                      bool accumulate, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock));
  const dim3 block(kRowsPerBlock * kWarp);
  if (n <= 1) {
    MatVecF32Kernel<1><<<grid, block, 0, stream>>>(w, rows, cols, x, y, n, accumulate);
  } else if (n <= 2) {
    MatVecF32Kernel<2><<<grid, block, 0, stream>>>(w, rows, cols, x, y, n, accumulate);
  } else if (n <= 4) {
    MatVecF32Kernel<4><<<grid, block, 0, stream>>>(w, rows, cols, x, y, n, accumulate);
  } else {
    MatVecF32Kernel<8><<<grid, block, 0, stream>>>(w, rows, cols, x, y, n, accumulate);
  }
  return cudaGetLastError();
}

cudaError_t MatVecQuant(const DeviceMatrix& w, const float* x, float* y, int n, bool accumulate,
                        cudaStream_t stream) {
  if (n <= 1) return LaunchMatVecQuantN<1>(w, x, y, n, accumulate, stream);
  if (n <= 2) return LaunchMatVecQuantN<2>(w, x, y, n, accumulate, stream);
  if (n <= 4) return LaunchMatVecQuantN<4>(w, x, y, n, accumulate, stream);
  return LaunchMatVecQuantN<8>(w, x, y, n, accumulate, stream);
}

cudaError_t DequantizeRows(const DeviceMatrix& w, int64_t r0, int64_t r1, float* dst,
                           cudaStream_t stream) {
  const int64_t count = (r1 - r0) * w.cols;
  DequantizeKernel<<<GridFor(count, kThreads), kThreads, 0, stream>>>(w, r0, count, dst);
  return cudaGetLastError();
}

cudaError_t GatherDequantizedRows(const DeviceMatrix& w, const int32_t* rows, int64_t n,
                                  float* out, cudaStream_t stream) {
  GatherDequantizedRowsKernel<<<GridFor(n * w.cols, kThreads), kThreads, 0, stream>>>(w, rows, n,
                                                                                    out);
  return cudaGetLastError();
}

cudaError_t RmsNorm(const float* x, const float* weight, float* y, int64_t n, int64_t d,
                    float eps, cudaStream_t stream) {
  RmsNormKernel<<<static_cast<unsigned>(n), kThreads, 0, stream>>>(x, weight, y, d, eps);
  return cudaGetLastError();
}

cudaError_t Rope(float* x, int64_t start, int64_t n, int64_t heads, int64_t head_dim,
                 double theta, cudaStream_t stream) {
  RopeKernel<<<GridFor(n * heads * (head_dim / 2), kThreads), kThreads, 0, stream>>>(
      x, start, n, heads, head_dim, theta);
  return cudaGetLastError();
}

int AttentionSplits(int64_t max_keys) {
  // Below 512 keys one block per (query, head) is enough work; above, 256 keys a split,
  // at most 32 splits.
  if (max_keys < 512) return 1;
  const int64_t splits = (max_keys + 255) / 256;
  return static_cast<int>(splits < 32 ? splits : 32);
}

int64_t AttentionScratchFloats(int64_t n, int64_t heads, int64_t head_dim, int splits) {
  return splits <= 1 ? 0 : n * heads * splits * (head_dim + 2);
}

cudaError_t Attention(const float* q, const float* k_cache, const float* v_cache, float* out,
                      int64_t start, int64_t n, int64_t heads, int64_t kv_heads,
                      int64_t head_dim, int64_t window, int splits, float* scratch,
                      cudaStream_t stream) {
  const int dims = static_cast<int>((head_dim + kWarp - 1) / kWarp);
  if (dims <= 1) {
    return LaunchAttention<1>(q, k_cache, v_cache, out, start, n, heads, kv_heads, head_dim,
                              window, splits, scratch, stream);
  }
  if (dims <= 2) {
    return LaunchAttention<2>(q, k_cache, v_cache, out, start, n, heads, kv_heads, head_dim,
                              window, splits, scratch, stream);
  }
  if (dims <= 4) {
    return LaunchAttention<4>(q, k_cache, v_cache, out, start, n, heads, kv_heads, head_dim,
                              window, splits, scratch, stream);
  }
  return LaunchAttention<8>(q, k_cache, v_cache, out, start, n, heads, kv_heads, head_dim,
                            window, splits, scratch, stream);
}

cudaError_t SiluMul(float* gate, const float* up, int64_t count, cudaStream_t stream) {
  SiluMulKernel<<<GridFor(count, kThreads), kThreads, 0, stream>>>(gate, up, count);
  return cudaGetLastError();
}

cudaError_t Add(float* y, const float* x, int64_t count, cudaStream_t stream) {
  AddKernel<<<GridFor(count, kThreads), kThreads, 0, stream>>>(y, x, count);
  return cudaGetLastError();
}

cudaError_t TopKRouting(const float* logits, int64_t n, int64_t experts, int64_t k,
                        bool renormalize, int32_t* ids, float* weights, cudaStream_t stream) {
  TopKRoutingKernel<<<GridFor(n, 128), 128, 0, stream>>>(logits, n, experts, k, renormalize, ids,
                                                         weights);
  return cudaGetLastError();
}

cudaError_t AddBias(float* x, const float* bias, int64_t n, int64_t d, cudaStream_t stream) {
  AddBiasKernel<<<GridFor(n * d, kThreads), kThreads, 0, stream>>>(x, bias, n, d);
  return cudaGetLastError();
}

cudaError_t Clamp(float* x, int64_t count, float limit, cudaStream_t stream) {
  ClampKernel<<<GridFor(count, kThreads), kThreads, 0, stream>>>(x, count, limit);
  return cudaGetLastError();
}

cudaError_t SigmoidGatedAdd(float* y, const float* gate, const float* x, int64_t n, int64_t d,
                            cudaStream_t stream) {
  SigmoidGatedAddKernel<<<GridFor(n * d, kThreads), kThreads, 0, stream>>>(y, gate, x, n, d);
  return cudaGetLastError();
}

cudaError_t GatherRows(const float* table, const int32_t* rows, int64_t n, int64_t d, float* out,
                       cudaStream_t stream) {
  GatherRowsKernel<<<GridFor(n * d, kThreads), kThreads, 0, stream>>>(table, rows, n, d, out);
  return cudaGetLastError();
}

cudaError_t ScatterAddRows(const float* x, const int32_t* rows, const float* scale, int64_t n,
                           int64_t d, float* out, cudaStream_t stream) {
  ScatterAddRowsKernel<<<GridFor(d, kThreads), kThreads, 0, stream>>>(x, rows, scale, n, d, out);
  return cudaGetLastError();
}

}  // namespace moe::cuda::launch
