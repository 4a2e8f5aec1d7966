// What the expert worker needs of an attached activation arena, whichever memory it is:
// the coordinator's sealed memfd (common/shared_arena.h) or its CUDA IPC allocation
// (common/backend/device_ipc_arena.h). One interface, so that the worker resolves a
// call's offsets, watches the owner and reports the arena without asking which it has.
#ifndef MOE_COMMON_ACTIVATION_ARENA_H_
#define MOE_COMMON_ACTIVATION_ARENA_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace moe {

class ActivationArena {
 public:
  virtual ~ActivationArena() = default;

  // The 128-bit id its header carries (32 hex digits).
  virtual const std::string& id() const = 0;
  // Usable bytes (after the header).
  virtual size_t size() const = 0;
  // Device memory: the worker computes on it in place with its device's kernels, and
  // the host never dereferences it.
  virtual bool on_device() const = 0;
  // For an attachment: the creating process (0 for our own arena), and whether it still
  // runs (an attachment outliving its creator pins the memory; drop it).
  virtual uint32_t owner_pid() const = 0;
  virtual bool OwnerAlive() const = 0;
  // The address of `bytes` at `offset` of the usable region; OUT_OF_RANGE when the range
  // is not inside it or `offset` is not 4-byte aligned. Never wraps.
  virtual absl::StatusOr<void*> At(uint64_t offset, uint64_t bytes) const = 0;
};

}  // namespace moe

#endif  // MOE_COMMON_ACTIVATION_ARENA_H_
