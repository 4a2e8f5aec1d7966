// The compute kernels of a forward pass, behind one interface with a CPU implementation
// (cpu/cpu_backend_kernels.h, bit-identical to the functions in cpu/cpu_kernels.h that
// the CPU engine has always used) and a CUDA one (cuda/cuda_kernels.h). Every pointer is
// device memory of the device the kernels were made for; every call is queued on
// `stream` and returns at once on CUDA (errors of the launch itself are returned,
// asynchronous ones surface at the next Synchronize). Shapes are row-major, in brackets.
// backend_conformance_test checks every implementation against the CPU one.
#ifndef MOE_COMMON_BACKEND_KERNELS_H_
#define MOE_COMMON_BACKEND_KERNELS_H_

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/backend/device.h"
#include "common/quant/quant_format.h"

namespace moe::backend {

enum class WeightFormat { kF32, kBF16, kF16, kPacked };

// A weight matrix W[rows, cols] in device memory, laid out like torch.nn.Linear.weight
// (cols is the input dimension): fp32, raw 16-bit, or packed in the offload format
// (quant_format.h; `layout` gives the sections' offsets from `data`).
struct WeightView {
  WeightFormat format = WeightFormat::kF32;
  int64_t rows = 0, cols = 0;
  const void* data = nullptr;
  quant::MatrixLayout layout;  // kPacked only

  static WeightView F32(const float* data, int64_t rows, int64_t cols) {
    WeightView w;
    w.format = WeightFormat::kF32;
    w.rows = rows;
    w.cols = cols;
    w.data = data;
    return w;
  }
  // A matrix of the offload format: 16-bit layouts become kBF16/kF16, others kPacked.
  static WeightView FromLayout(const quant::MatrixLayout& layout, const void* data);
  // Bytes the matrix occupies.
  int64_t bytes() const;
};

// Rotary embedding parameters (Hugging Face rotate-half convention): angle of pair i at
// position p is p * theta^(-2i / head_dim), computed in double.
struct RopeParams {
  int64_t head_dim = 0;
  double theta = 10000.0;
};

// Thread-safe: calls from several threads on different streams may overlap.
class Kernels {
 public:
  virtual ~Kernels() = default;

  // y[n, w.rows] (=|+=) x[n, w.cols] · W^T.
  [[nodiscard]] virtual absl::Status MatMul(const WeightView& w, const float* x, float* y,
                                            int64_t n, bool accumulate, Stream& stream) = 0;
  // y[n, d] = x * rsqrt(mean(x^2) + eps) * weight[d]; y == x allowed.
  [[nodiscard]] virtual absl::Status RmsNorm(const float* x, const float* weight, float* y,
                                             int64_t n, int64_t d, float eps,
                                             Stream& stream) = 0;
  // x[n, heads, head_dim] rotated in place; token t is at position start + t.
  [[nodiscard]] virtual absl::Status Rope(float* x, int64_t start, int64_t n, int64_t heads,
                                          const RopeParams& rope, Stream& stream) = 0;
  // Causal grouped-query attention of n queries at positions start..start+n-1 over the
  // cache's keys/values for positions 0..start+n-1:
  //   q[n, heads * head_dim], k_cache/v_cache[>= start + n, kv_heads * head_dim],
  //   out[n, heads * head_dim]. window > 0: each query sees only the last `window` keys.
  [[nodiscard]] virtual absl::Status Attention(const float* q, const float* k_cache,
                                               const float* v_cache, float* out, int64_t start,
                                               int64_t n, int64_t heads, int64_t kv_heads,
                                               int64_t head_dim, int64_t window,
                                               Stream& stream) = 0;
  // gate[i] = silu(gate[i]) * up[i] for i < count.
  [[nodiscard]] virtual absl::Status SiluMul(float* gate, const float* up, int64_t count,
                                             Stream& stream) = 0;
  // y[i] += x[i] for i < count.
  [[nodiscard]] virtual absl::Status Add(float* y, const float* x, int64_t count,
                                         Stream& stream) = 0;
  // The router for n tokens: softmax over logits[n, experts], the k largest (ties to the
  // lower id): ids[n, k], weights[n, k] their probabilities, renormalised to sum 1 when
  // `renormalize` (Mixtral; norm_topk_prob of the others).
  [[nodiscard]] virtual absl::Status TopKRouting(const float* logits, int64_t n,
                                                 int64_t experts, int64_t k, bool renormalize,
                                                 int32_t* ids, float* weights,
                                                 Stream& stream) = 0;
  // x[i, j] += bias[j] for i < n, j < d (a projection's bias).
  [[nodiscard]] virtual absl::Status AddBias(float* x, const float* bias, int64_t n, int64_t d,
                                             Stream& stream) = 0;
  // x[i] = min(max(x[i], -limit), limit) for i < count (OLMoE's clip_qkv).
  [[nodiscard]] virtual absl::Status Clamp(float* x, int64_t count, float limit,
                                           Stream& stream) = 0;
  // y[i, :] += sigmoid(gate[i]) * x[i, :] for i < n; x, y [n, d], gate [n] (a shared
  // expert's output scaled by its gate).
  [[nodiscard]] virtual absl::Status SigmoidGatedAdd(float* y, const float* gate, const float* x,
                                                     int64_t n, int64_t d, Stream& stream) = 0;
  // out[i, :] = table[rows[i], :] for i < n; table[*, d]. Rows are not range-checked
  // here: callers validate them on the host.
  [[nodiscard]] virtual absl::Status GatherRows(const float* table, const int32_t* rows,
                                                int64_t n, int64_t d, float* out,
                                                Stream& stream) = 0;
  // out[i, :] = table[rows[i], :] widened to fp32 for i < n; out[n, table.cols]. Any
  // format (fp32, 16-bit, packed): only the named rows are converted, so an embedding
  // table stays as stored. 16-bit rows are widened exactly; packed ones are dequantised as
  // the backend's MatMul prefill does (within rounding of quant::DequantizeRowsReference).
  // Rows are not range-checked here: callers validate them on the host.
  [[nodiscard]] virtual absl::Status GatherWeightRows(const WeightView& table,
                                                      const int32_t* rows, int64_t n, float* out,
                                                      Stream& stream) = 0;
  // out[rows[i], :] += scale[i] * x[i, :] for i < n, in order of i (rows may repeat).
  [[nodiscard]] virtual absl::Status ScatterAddRows(const float* x, const int32_t* rows,
                                                    const float* scale, int64_t n, int64_t d,
                                                    float* out, Stream& stream) = 0;
};

// The kernels of `device` (which must outlive them).
absl::StatusOr<std::unique_ptr<Kernels>> CreateKernels(Device& device);

}  // namespace moe::backend

#endif  // MOE_COMMON_BACKEND_KERNELS_H_
