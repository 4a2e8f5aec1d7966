// The checks a call taken from the activation ring passes before the worker touches any
// memory for it: the pure counterpart of run_experts_request.h for the ring data plane.
// The worker copies the entry out of the shared mapping first (the coordinator could
// change it under a check otherwise), checks the copy, then copies the routes it names
// and checks those (CheckRoutes) before computing. Pure, so tests/fuzz feed it anything.
#ifndef MOE_EXPERT_WORKER_RING_REQUEST_H_
#define MOE_EXPERT_WORKER_RING_REQUEST_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/activation_ring.h"

namespace moe::expert_worker {

// What the worker serves and has attached for this ring.
struct RingLimits {
  uint32_t epoch = 0;        // the attach the ring belongs to
  int num_layers = 0;
  int num_experts = 0;
  int64_t hidden = 0;
  int64_t max_tokens = 0;    // per call, as accepted at attach time
  uint64_t arena_bytes = 0;  // usable bytes of the host arena holding the ring
  uint64_t device_arena_bytes = 0;  // of the CUDA IPC arena; 0: none attached
  uint64_t ring_offset = 0;  // the ring's own bytes in the host arena: no call may name them
  uint64_t ring_bytes = 0;
};

struct RingShape {
  int layer = 0;
  int64_t tokens = 0;             // n >= 1
  int64_t experts_per_token = 0;  // k in [1, num_experts]
  uint64_t routes = 0;            // n * k ids, and as many weights
  uint64_t tensor_bytes = 0;      // n * hidden * 4, of x and of out alike
  bool on_device = false;         // x and out lie in the device arena
};

// FAILED_PRECONDITION for an entry of another attach (a stale epoch) or one naming a
// device arena that is not attached; INVALID_ARGUMENT naming the field for a malformed
// one; OUT_OF_RANGE for a range outside its arena or over the ring. When it returns a
// shape: every range lies inside its arena, 4-byte aligned, of the size the shape needs,
// outside the ring; out shares no byte with x, the ids or the weights.
absl::StatusOr<RingShape> CheckRingRequest(const ring::RingRequest& request,
                                           const RingLimits& limits);

// INVALID_ARGUMENT unless every id is < num_experts and every weight finite, and the two
// have the same length.
absl::Status CheckRoutes(absl::Span<const uint32_t> ids, absl::Span<const float> weights,
                         int num_experts);

}  // namespace moe::expert_worker

#endif  // MOE_EXPERT_WORKER_RING_REQUEST_H_
