#include "expert_worker/attach_arena_request.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/activation_ring.h"
#include "common/arena_trust.h"
#include "common/checked_math.h"
#include "common/status.h"

namespace moe::expert_worker {
namespace {

constexpr uint32_t kMaxPid = 1u << 22;     // Linux's PID_MAX_LIMIT
constexpr int32_t kMaxFd = 1 << 20;        // the kernel's nr_open ceiling
constexpr size_t kCudaIpcHandleBytes = 64;  // sizeof(cudaIpcMemHandle_t)
constexpr size_t kMaxBusIdChars = 32;       // "0000:65:00.0" is 12

absl::Status CheckPid(absl::string_view field, uint32_t pid) {
  if (pid == 0 || pid > kMaxPid) {
    return absl::InvalidArgumentError(absl::StrCat("AttachArena: ", field, " ", pid,
                                                   " is not a process id"));
  }
  return absl::OkStatus();
}

absl::Status CheckSharedMemory(absl::string_view field, const v1::SharedMemoryHandle& shm) {
  MOE_RETURN_IF_ERROR(CheckPid(absl::StrCat(field, ".pid"), shm.pid()));
  if (shm.fd() < 0 || shm.fd() > kMaxFd) {
    return absl::InvalidArgumentError(
        absl::StrCat("AttachArena: ", field, ".fd ", shm.fd(), " is not a file descriptor"));
  }
  return absl::OkStatus();
}

absl::Status CheckSize(absl::string_view field, uint64_t bytes, uint64_t max_bytes) {
  if (bytes == 0 || bytes > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("AttachArena: ", field, " of ", bytes,
                                                   " usable bytes is not in [1, ", max_bytes,
                                                   "]"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<AttachArenaShape> CheckAttachArenaRequest(const v1::AttachArenaRequest& request,
                                                         const AttachArenaLimits& limits) {
  AttachArenaShape shape;
  switch (request.handle_case()) {
    case v1::AttachArenaRequest::kSharedMemory:
      MOE_RETURN_IF_ERROR(CheckSharedMemory("shared_memory", request.shared_memory()));
      break;
    case v1::AttachArenaRequest::kCudaIpc: {
      const v1::CudaIpcHandle& cuda = request.cuda_ipc();
      shape.cuda_ipc = true;
      if (cuda.ipc_mem_handle().size() != kCudaIpcHandleBytes) {
        return absl::InvalidArgumentError(absl::StrCat("AttachArena: cuda_ipc.ipc_mem_handle is ",
                                                       cuda.ipc_mem_handle().size(),
                                                       " bytes, not ", kCudaIpcHandleBytes));
      }
      if (cuda.pci_bus_id().size() > kMaxBusIdChars || cuda.device() < 0) {
        return absl::InvalidArgumentError(
            "AttachArena: cuda_ipc names no plausible device (pci_bus_id, device)");
      }
      MOE_RETURN_IF_ERROR(CheckPid("cuda_ipc.exporter_pid", cuda.exporter_pid()));
      break;
    }
    default:
      return absl::InvalidArgumentError("AttachArena: no arena handle");
  }
  MOE_RETURN_IF_ERROR(Annotate(CheckArenaId(request.arena_id()), "AttachArena"));
  MOE_RETURN_IF_ERROR(CheckSize("an arena", request.size_bytes(), limits.max_bytes));
  shape.bytes = request.size_bytes();
  shape.call_tokens = request.max_tokens_per_call() == 0
                          ? limits.max_call_tokens
                          : std::min<int64_t>(request.max_tokens_per_call(), limits.max_call_tokens);
  if (request.has_ring_arena() && !(shape.cuda_ipc && request.has_ring())) {
    return absl::InvalidArgumentError(
        "AttachArena: ring_arena comes only with a CUDA IPC handle and a ring");
  }
  if (request.has_ring()) {
    const v1::RingOffer& offer = request.ring();
    // The arena the ring's words lie in: host memory either way.
    uint64_t ring_bytes_in = shape.bytes;
    if (shape.cuda_ipc) {
      if (!request.has_ring_arena()) {
        return absl::InvalidArgumentError(
            "AttachArena: a ring beside a CUDA IPC arena needs ring_arena (its words are host "
            "memory)");
      }
      const v1::RingHostArena& host = request.ring_arena();
      MOE_RETURN_IF_ERROR(CheckSharedMemory("ring_arena.shared_memory", host.shared_memory()));
      MOE_RETURN_IF_ERROR(Annotate(CheckArenaId(host.arena_id()), "AttachArena: ring_arena"));
      MOE_RETURN_IF_ERROR(CheckSize("ring_arena", host.size_bytes(), limits.max_bytes));
      shape.ring_arena_bytes = host.size_bytes();
      ring_bytes_in = host.size_bytes();
    }
    if (offer.slots() < 1 || offer.slots() > ring::kMaxRingSlots) {
      return absl::InvalidArgumentError(absl::StrCat("AttachArena: ring.slots ", offer.slots(),
                                                     " is not in [1, ", ring::kMaxRingSlots, "]"));
    }
    if (offer.offset() % alignof(ring::RingHeader) != 0 ||
        !RangeWithin(offer.offset(), ring::RingBytes(offer.slots()), ring_bytes_in)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "AttachArena: a ring of ", ring::RingBytes(offer.slots()), " bytes at ", offer.offset(),
          " is not 64-byte aligned inside the ", ring_bytes_in, "-byte ",
          shape.cuda_ipc ? "ring_arena" : "arena"));
    }
    shape.ring = true;
    shape.ring_offset = offer.offset();
    shape.ring_slots = offer.slots();
    shape.ring_epoch = offer.epoch();
  }
  return shape;
}

}  // namespace moe::expert_worker
