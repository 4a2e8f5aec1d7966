// libFuzzer target for CheckAttachArenaRequest: arbitrary wire bytes as an AttachArena
// request, under arbitrary limits. Whatever it accepts must be safe to hand to
// SharedArena::Attach / DeviceIpcArena::Open: a well-formed id, a size in bounds (so
// header + size cannot wrap), a plausible pid and fd or a 64-byte CUDA handle, and
// tokens per call in [1, the worker's limit]; an offered ring inside the host arena it
// lies in (beside a CUDA IPC handle: the ring_arena, checked as a shared-memory arena).
#include <cstdint>
#include <cstring>

#include "common/activation_ring.h"
#include "common/arena_trust.h"
#include "common/checked_math.h"
#include "expert_worker/attach_arena_request.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

constexpr size_t kLimitBytes = 12;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < kLimitBytes) return 0;
  moe::expert_worker::AttachArenaLimits limits;
  uint64_t max_bytes;
  uint32_t tokens;
  std::memcpy(&max_bytes, data, sizeof max_bytes);
  std::memcpy(&tokens, data + 8, sizeof tokens);
  limits.max_bytes = max_bytes % (uint64_t{1} << 40);  // the worker's bound is 64 GiB
  limits.max_call_tokens = 1 + tokens % (1 << 20);
  moe::v1::AttachArenaRequest request;
  if (!request.ParseFromArray(data + kLimitBytes, static_cast<int>(size - kLimitBytes))) return 0;

  const auto shape = moe::expert_worker::CheckAttachArenaRequest(request, limits);
  if (!shape.ok()) {
    FUZZ_CHECK(shape.status().code() == absl::StatusCode::kInvalidArgument);
    FUZZ_CHECK(!shape.status().message().empty());
    return 0;
  }
  FUZZ_CHECK(moe::CheckArenaId(request.arena_id()).ok());
  FUZZ_CHECK(shape->bytes >= 1 && shape->bytes <= limits.max_bytes);
  FUZZ_CHECK(shape->bytes + 64 > shape->bytes);  // header + size does not wrap
  FUZZ_CHECK(shape->call_tokens >= 1 && shape->call_tokens <= limits.max_call_tokens);
  if (shape->cuda_ipc) {
    FUZZ_CHECK(request.has_cuda_ipc() && request.cuda_ipc().ipc_mem_handle().size() == 64);
    FUZZ_CHECK(request.cuda_ipc().exporter_pid() > 0);
  } else {
    FUZZ_CHECK(request.has_shared_memory() && request.shared_memory().pid() > 0 &&
               request.shared_memory().fd() >= 0);
  }
  if (shape->ring) {
    // The ring lies in host memory: the shared-memory arena, or beside a device arena the
    // ring_arena, whose handle, id and size passed the same checks.
    const uint64_t host_bytes = shape->cuda_ipc ? shape->ring_arena_bytes : shape->bytes;
    FUZZ_CHECK(host_bytes >= 1 && host_bytes <= limits.max_bytes);
    FUZZ_CHECK(shape->ring_offset % 64 == 0);
    FUZZ_CHECK(moe::RangeWithin(shape->ring_offset, moe::ring::RingBytes(shape->ring_slots),
                                host_bytes));
    if (shape->cuda_ipc) {
      const auto& host = request.ring_arena();
      FUZZ_CHECK(request.has_ring_arena() && moe::CheckArenaId(host.arena_id()).ok());
      FUZZ_CHECK(host.shared_memory().pid() > 0 && host.shared_memory().fd() >= 0);
    }
  } else {
    FUZZ_CHECK(!request.has_ring_arena());
  }
  return 0;
}
