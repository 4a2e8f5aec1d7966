#include "expert_worker/expert_ffn.h"

#include "common/backend/cpu/cpu_kernels.h"
#include "common/backend/cpu/quant_kernels.h"

namespace moe::expert_worker {

void RunExpertFfn(const float* blob, const ExpertLayout& layout, const float* x, int64_t n,
                  FfnScratch& scratch, float* out) {
  const int64_t h = layout.hidden, i = layout.intermediate;
  scratch.gate.resize(n * i);
  scratch.up.resize(n * i);
  if (layout.packed) {
    // A converted blob: fused dequantise-and-multiply straight from the slot.
    const auto* bytes = reinterpret_cast<const uint8_t*>(blob);
    const quant::ExpertBlobLayout& p = *layout.packed;
    // w1 and w3 in one call: one activation rounding, one parallel region.
    cpu::QuantMatMulTransB2({p.w1, bytes + p.w1_offset}, {p.w3, bytes + p.w3_offset}, x,
                            scratch.gate.data(), scratch.up.data(), n);
    cpu::SiluMul(scratch.gate.data(), scratch.up.data(), n * i);
    cpu::QuantMatMulTransB({p.w2, bytes + p.w2_offset}, scratch.gate.data(), out, n);
    return;
  }
  cpu::MatMulTransB(x, blob + layout.w1_offset(), scratch.gate.data(), n, h, i);
  cpu::MatMulTransB(x, blob + layout.w3_offset(), scratch.up.data(), n, h, i);
  cpu::SiluMul(scratch.gate.data(), scratch.up.data(), n * i);
  cpu::MatMulTransB(scratch.gate.data(), blob + layout.w2_offset(), out, n, i, h);
}

}  // namespace moe::expert_worker
