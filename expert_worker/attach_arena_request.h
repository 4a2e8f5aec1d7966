// The checks an AttachArena request passes before the worker opens, maps or asks the
// kernel anything for it: which handle, an id of the right form, a size in bounds, a
// pid and fd (or a CUDA IPC handle) that can be real, and the tokens per call it will
// accept. Pure, so that tests/fuzz can feed it arbitrary wire bytes; what only the
// kernel can tell (is it a sealed memfd of that size, whose uid) SharedArena::Attach
// checks next.
#ifndef MOE_EXPERT_WORKER_ATTACH_ARENA_REQUEST_H_
#define MOE_EXPERT_WORKER_ATTACH_ARENA_REQUEST_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "moe/v1/expert_worker.pb.h"

namespace moe::expert_worker {

struct AttachArenaLimits {
  uint64_t max_bytes = 0;       // the largest arena mapped, usable bytes
  int64_t max_call_tokens = 0;  // the worker's --max-call-tokens
};

struct AttachArenaShape {
  bool cuda_ipc = false;    // else shared memory
  uint64_t bytes = 0;       // usable bytes, in [1, max_bytes]
  int64_t call_tokens = 0;  // in [1, max_call_tokens]
  // The offered ring: inside the arena (with a CUDA IPC handle: inside ring_arena, the
  // shared-memory arena beside it), 64-byte aligned.
  bool ring = false;
  uint64_t ring_arena_bytes = 0;  // with cuda_ipc: ring_arena's usable bytes
  uint64_t ring_offset = 0;
  uint32_t ring_slots = 0;  // in [1, ring::kMaxRingSlots]
  uint32_t ring_epoch = 0;
};

// INVALID_ARGUMENT naming the field for anything malformed.
absl::StatusOr<AttachArenaShape> CheckAttachArenaRequest(const v1::AttachArenaRequest& request,
                                                         const AttachArenaLimits& limits);

}  // namespace moe::expert_worker

#endif  // MOE_EXPERT_WORKER_ATTACH_ARENA_REQUEST_H_
