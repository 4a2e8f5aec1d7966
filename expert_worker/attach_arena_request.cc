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

}  // namespace

absl::StatusOr<AttachArenaShape> CheckAttachArenaRequest(const v1::AttachArenaRequest& request,
                                                         const AttachArenaLimits& limits) {
  AttachArenaShape shape;
  switch (request.handle_case()) {
    case v1::AttachArenaRequest::kSharedMemory: {
      MOE_RETURN_IF_ERROR(CheckPid("shared_memory.pid", request.shared_memory().pid()));
      const int32_t fd = request.shared_memory().fd();
      if (fd < 0 || fd > kMaxFd) {
        return absl::InvalidArgumentError(
            absl::StrCat("AttachArena: shared_memory.fd ", fd, " is not a file descriptor"));
      }
      break;
    }
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
  if (request.size_bytes() == 0 || request.size_bytes() > limits.max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("AttachArena: an arena of ", request.size_bytes(),
                                                   " usable bytes is not in [1, ",
                                                   limits.max_bytes, "]"));
  }
  shape.bytes = request.size_bytes();
  shape.call_tokens = request.max_tokens_per_call() == 0
                          ? limits.max_call_tokens
                          : std::min<int64_t>(request.max_tokens_per_call(), limits.max_call_tokens);
  if (request.has_ring()) {
    const v1::RingOffer& offer = request.ring();
    if (shape.cuda_ipc) {
      return absl::InvalidArgumentError(
          "AttachArena: a ring is offered only with a shared-memory arena");
    }
    if (offer.slots() < 1 || offer.slots() > ring::kMaxRingSlots) {
      return absl::InvalidArgumentError(absl::StrCat("AttachArena: ring.slots ", offer.slots(),
                                                     " is not in [1, ", ring::kMaxRingSlots, "]"));
    }
    if (offer.offset() % alignof(ring::RingHeader) != 0 ||
        !RangeWithin(offer.offset(), ring::RingBytes(offer.slots()), shape.bytes)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "AttachArena: a ring of ", ring::RingBytes(offer.slots()), " bytes at ", offer.offset(),
          " is not 64-byte aligned inside the ", shape.bytes, "-byte arena"));
    }
    shape.ring = true;
    shape.ring_offset = offer.offset();
    shape.ring_slots = offer.slots();
    shape.ring_epoch = offer.epoch();
  }
  return shape;
}

}  // namespace moe::expert_worker
