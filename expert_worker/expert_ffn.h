// The expert FFN: w2(silu(w1 x) * w3 x), on the CPU, as the engine computed it before the
// worker moved onto backend::Kernels; kept as the reference expert_runner_test checks the
// runner against bit for bit.
#ifndef MOE_EXPERT_WORKER_EXPERT_FFN_H_
#define MOE_EXPERT_WORKER_EXPERT_FFN_H_

#include <cstdint>
#include <vector>

#include "expert_worker/expert_store.h"

namespace moe::expert_worker {

// Reusable scratch for RunExpertFfn; one per thread.
struct FfnScratch {
  std::vector<float> gate;  // [n, I]
  std::vector<float> up;    // [n, I]
};

// out[n, H] = w2(silu(w1 x) * w3 x) for x[n, H], with the expert in `blob` (layout as in
// ExpertLayout: fp32, or packed bytes when layout.packed is set).
void RunExpertFfn(const float* blob, const ExpertLayout& layout, const float* x, int64_t n,
                  FfnScratch& scratch, float* out);

}  // namespace moe::expert_worker

#endif  // MOE_EXPERT_WORKER_EXPERT_FFN_H_
