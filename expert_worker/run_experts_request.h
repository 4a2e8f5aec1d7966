// The checks a RunExperts request passes before the worker touches any memory for it:
// the layer, shapes, expert ids and weights, and where its tensors are (slices inside
// the attached arena, or inline bytes of the right size). Pure (no arena, no cache), so
// that tests/fuzz can feed it arbitrary wire bytes.
#ifndef MOE_EXPERT_WORKER_RUN_EXPERTS_REQUEST_H_
#define MOE_EXPERT_WORKER_RUN_EXPERTS_REQUEST_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "moe/v1/expert_worker.pb.h"

namespace moe::expert_worker {

// What the worker serves and has attached.
struct RunExpertsLimits {
  int num_layers = 0;
  int num_experts = 0;
  int64_t hidden = 0;
  int64_t max_tokens = 0;    // per call: from the arena's slots, or the worker's limit
  uint64_t arena_bytes = 0;  // usable bytes of the attached arena; 0: none attached
  std::string arena_id;      // its id
};

struct RunExpertsShape {
  int layer = 0;
  int64_t tokens = 0;             // n >= 1
  int64_t experts_per_token = 0;  // k in [1, num_experts]
  uint64_t tensor_bytes = 0;      // n * hidden * 4, of x and of out alike
};

// INVALID_ARGUMENT naming the problem for a malformed request; OUT_OF_RANGE for a slice
// that does not lie inside the arena; FAILED_PRECONDITION when it refers to an arena that
// is not the attached one (the caller attaches again). When it
// returns a shape, every id is < num_experts, every weight is finite, and each slice lies
// inside the arena, 4-byte aligned, `tensor_bytes` long, input and output not overlapping.
absl::StatusOr<RunExpertsShape> CheckRunExpertsRequest(const v1::RunExpertsRequest& request,
                                                       const RunExpertsLimits& limits);

}  // namespace moe::expert_worker

#endif  // MOE_EXPERT_WORKER_RUN_EXPERTS_REQUEST_H_
