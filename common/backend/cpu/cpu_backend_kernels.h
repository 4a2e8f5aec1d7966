// backend::Kernels on the CPU: thin adapters over cpu_kernels.h and quant_kernels.h, the
// functions the CPU engine has always used, so an engine on this backend computes
// bit-identically to it. The reference the CUDA kernels are tested against.
#ifndef MOE_COMMON_BACKEND_CPU_CPU_BACKEND_KERNELS_H_
#define MOE_COMMON_BACKEND_CPU_CPU_BACKEND_KERNELS_H_

#include "common/backend/kernels.h"

namespace moe::cpu {

class CpuKernels : public backend::Kernels {
 public:
  absl::Status MatMul(const backend::WeightView& w, const float* x, float* y, int64_t n,
                      bool accumulate, backend::Stream& stream) override;
  absl::Status RmsNorm(const float* x, const float* weight, float* y, int64_t n, int64_t d,
                       float eps, backend::Stream& stream) override;
  absl::Status Rope(float* x, int64_t start, int64_t n, int64_t heads,
                    const backend::RopeParams& rope, backend::Stream& stream) override;
  absl::Status Attention(const float* q, const float* k_cache, const float* v_cache, float* out,
                         int64_t start, int64_t n, int64_t heads, int64_t kv_heads,
                         int64_t head_dim, int64_t window, backend::Stream& stream) override;
  absl::Status SiluMul(float* gate, const float* up, int64_t count,
                       backend::Stream& stream) override;
  absl::Status Add(float* y, const float* x, int64_t count, backend::Stream& stream) override;
  absl::Status TopKRouting(const float* logits, int64_t n, int64_t experts, int64_t k,
                           bool renormalize, int32_t* ids, float* weights,
                           backend::Stream& stream) override;
  absl::Status AddBias(float* x, const float* bias, int64_t n, int64_t d,
                       backend::Stream& stream) override;
  absl::Status Clamp(float* x, int64_t count, float limit, backend::Stream& stream) override;
  absl::Status SigmoidGatedAdd(float* y, const float* gate, const float* x, int64_t n, int64_t d,
                               backend::Stream& stream) override;
  absl::Status GatherRows(const float* table, const int32_t* rows, int64_t n, int64_t d,
                          float* out, backend::Stream& stream) override;
  absl::Status GatherWeightRows(const backend::WeightView& table, const int32_t* rows, int64_t n,
                                float* out, backend::Stream& stream) override;
  absl::Status ScatterAddRows(const float* x, const int32_t* rows, const float* scale, int64_t n,
                              int64_t d, float* out, backend::Stream& stream) override;
};

}  // namespace moe::cpu

#endif  // MOE_COMMON_BACKEND_CPU_CPU_BACKEND_KERNELS_H_
