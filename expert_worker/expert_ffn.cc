#include "expert_worker/expert_ffn.h"

#include "common/backend/cpu/cpu_kernels.h"

namespace moe::expert_worker {

void RunExpertFfn(const float* blob, const ExpertLayout& layout, const float* x, int64_t n,
                  FfnScratch& scratch, float* out) {
  const int64_t h = layout.hidden, i = layout.intermediate;
  scratch.gate.resize(n * i);
  scratch.up.resize(n * i);
  cpu::MatMulTransB(x, blob + layout.w1_offset(), scratch.gate.data(), n, h, i);
  cpu::MatMulTransB(x, blob + layout.w3_offset(), scratch.up.data(), n, h, i);
  cpu::SiluMul(scratch.gate.data(), scratch.up.data(), n * i);
  cpu::MatMulTransB(scratch.gate.data(), blob + layout.w2_offset(), out, n, i, h);
}

}  // namespace moe::expert_worker
