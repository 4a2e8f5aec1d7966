// The expert worker linked into the caller's process: experts computed straight from the
// host store. The single-binary quickstart, the tests and `moe generate` use it.
#ifndef MOE_EXPERT_WORKER_IN_PROCESS_BACKEND_H_
#define MOE_EXPERT_WORKER_IN_PROCESS_BACKEND_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "common/expert_backend.h"
#include "expert_worker/expert_ffn.h"
#include "expert_worker/expert_store.h"

namespace moe::expert_worker {

// Not thread-safe: one caller at a time (the scratch buffers are reused).
class InProcessBackend : public ExpertBackend {
 public:
  // `store` must outlive the backend.
  explicit InProcessBackend(const ExpertStore* store) : store_(store) {}

  absl::Status RunExperts(int layer, absl::Span<const float> x, int64_t n,
                          absl::Span<const int32_t> ids, absl::Span<const float> weights,
                          absl::Span<float> out) override;

 private:
  const ExpertStore* store_;
  FfnScratch scratch_;
  std::vector<float> rows_;     // gathered inputs of one expert
  std::vector<float> result_;   // its outputs
  std::vector<int64_t> tokens_; // which token each gathered row came from
  std::vector<float> gains_;    // and its router weight
};

}  // namespace moe::expert_worker

#endif  // MOE_EXPERT_WORKER_IN_PROCESS_BACKEND_H_
