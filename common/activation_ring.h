// The data plane between a coordinator and an expert worker on one machine: a ring of
// call slots in the coordinator's shared activation arena, so that a RunExperts call is
// a few stores and a doorbell instead of a gRPC round trip. gRPC stays for control
// (attach, policy, stats, health) and for workers on other hosts.
//
// Layout, at a 64-byte aligned offset the coordinator names in AttachArena:
//   RingHeader, then `slots` RingEntry, one per arena slot of the coordinator.
// An entry moves kFree -> kPosted (coordinator: request written, doorbell rung) ->
// kRunning (worker claimed it) -> kDone (worker: reply written, entry's state word
// woken) -> kFree (coordinator read the reply). x, out, expert ids and weights are not in
// the entry: it names their offsets in the arena (the host arena, or with on_device the
// coordinator's CUDA IPC arena), and the worker checks everything it reads
// (expert_worker/ring_request.h) on a private copy before touching memory.
//
// Doorbells are futexes on 32-bit words of the shared mapping (FUTEX_WAIT/WAKE without
// FUTEX_PRIVATE_FLAG: the two processes map the page at different addresses). Each side
// may spin a bounded time on the word before sleeping (how long: common/ring_wait.h), and
// the other side issues the wake syscall only when the waiter said it sleeps.
#ifndef MOE_COMMON_ACTIVATION_RING_H_
#define MOE_COMMON_ACTIVATION_RING_H_

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace moe::ring {

inline constexpr uint64_t kRingMagic = 0x31676e6972656f6dULL;  // "moering1"
inline constexpr uint32_t kMaxRingSlots = 64;
inline constexpr size_t kReplyMessageChars = 176;

enum EntryState : uint32_t { kFree = 0, kPosted = 1, kRunning = 2, kDone = 3 };

// What the coordinator asks: RunExperts(layer, x, n, ids, weights, out). Plain data, read
// by the worker into a private copy.
struct RingRequest {
  uint32_t epoch = 0;              // the attach this call belongs to
  uint32_t layer = 0;
  uint32_t num_tokens = 0;
  uint32_t experts_per_token = 0;
  uint32_t on_device = 0;          // 1: x and out are offsets into the CUDA IPC arena
  uint32_t reserved = 0;
  uint64_t x_offset = 0;           // fp32 [num_tokens, hidden]
  uint64_t out_offset = 0;         // fp32 [num_tokens, hidden], overwritten
  uint64_t ids_offset = 0;         // uint32 [num_tokens * experts_per_token], host arena
  uint64_t weights_offset = 0;     // fp32, same shape, host arena
};

// What the worker answers: a status and RunExperts' figures.
struct RingReply {
  int32_t code = 0;  // absl::StatusCode
  uint32_t hits = 0;
  uint32_t misses = 0;
  uint32_t prefetch_hits = 0;
  double load_wait_s = 0;
  double compute_s = 0;
  char message[kReplyMessageChars] = {};  // NUL-terminated when code != 0
};

struct alignas(64) RingEntry {
  std::atomic<uint32_t> state;
  std::atomic<uint32_t> caller_sleeping;  // the coordinator waits in FUTEX_WAIT on state
  RingRequest request;
  RingReply reply;
};

struct alignas(64) RingHeader {
  uint64_t magic;
  uint32_t slots;
  std::atomic<uint32_t> epoch;
  alignas(64) std::atomic<uint32_t> doorbell;        // bumped for every posted call
  std::atomic<uint32_t> worker_sleeping;             // the worker waits in FUTEX_WAIT on it
  // The epoch whose server has stopped (another arena attached, or the worker shutting
  // down): a caller of that epoch attaches again instead of waiting for its deadline.
  std::atomic<uint32_t> stopped_epoch;
};

static_assert(std::atomic<uint32_t>::is_always_lock_free, "futex words must be plain words");
static_assert(sizeof(std::atomic<uint32_t>) == 4);

// Bytes of a ring with `slots` entries.
constexpr uint64_t RingBytes(uint32_t slots) {
  return sizeof(RingHeader) + uint64_t{slots} * sizeof(RingEntry);
}

// Futex on a word of shared memory. Wait returns when *word != expected, when woken, or
// after `timeout` (spurious returns are allowed: callers re-check).
void FutexWait(std::atomic<uint32_t>* word, uint32_t expected, absl::Duration timeout);
void FutexWakeAll(std::atomic<uint32_t>* word);

// A view of a ring at `base` (64-byte aligned, RingBytes(slots) long), for either side.
// It never owns memory; the arena it lies in must outlive it.
class Ring {
 public:
  // INVALID_ARGUMENT for a misaligned base or slots outside [1, kMaxRingSlots].
  static absl::StatusOr<Ring> At(void* base, uint32_t slots);

  uint32_t slots() const { return slots_; }
  RingHeader& header() const { return *header_; }
  RingEntry& entry(uint32_t slot) const { return entries_[slot]; }

  // Coordinator: writes the header and frees every entry under a new epoch (before
  // AttachArena announces the ring; a worker of an older epoch serves nothing more).
  void Reset(uint32_t epoch) const;
  // Coordinator: publishes `request` in `slot` (which it owns) and rings the doorbell.
  void Post(uint32_t slot, const RingRequest& request) const;
  // Coordinator: waits until `slot` is kDone, spinning up to `spin` first and then
  // sleeping at most `timeout`. True when done; `caught_spinning` (if given): whether it
  // was done within the spin.
  bool AwaitDone(uint32_t slot, absl::Duration spin, absl::Duration timeout,
                 bool* caught_spinning = nullptr) const;
  // Coordinator: the reply has been read; the slot is free again.
  void Release(uint32_t slot) const;

  // Worker: claims one posted entry (kPosted -> kRunning), or returns -1.
  int Claim() const;
  // Worker: waits for the doorbell to move past `seen` (spin, then sleep up to timeout).
  // True when it moved within the spin.
  bool AwaitDoorbell(uint32_t seen, absl::Duration spin, absl::Duration timeout) const;
  // Worker: writes the reply of a claimed entry, marks it kDone and wakes the caller.
  void Complete(uint32_t slot, const RingReply& reply) const;
  // Worker: no more calls of `epoch` will be served; wakes every waiting caller.
  void MarkStopped(uint32_t epoch) const;
  // Coordinator: whether the server of `epoch` has stopped.
  bool Stopped(uint32_t epoch) const;

 private:
  Ring(RingHeader* header, RingEntry* entries, uint32_t slots)
      : header_(header), entries_(entries), slots_(slots) {}

  RingHeader* header_;
  RingEntry* entries_;
  uint32_t slots_;
};

// A reply carrying `status` (its message truncated to fit).
RingReply ReplyFor(const absl::Status& status);
// The status a reply carries (an unknown code is INTERNAL).
absl::Status StatusOf(const RingReply& reply);

}  // namespace moe::ring

#endif  // MOE_COMMON_ACTIVATION_RING_H_
