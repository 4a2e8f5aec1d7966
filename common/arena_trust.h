// What a process that maps another's activation arena (shared host memory or a CUDA IPC
// arena) checks before it trusts it:
// - the id: 128 random bits from the kernel's CSPRNG, written in the arena's header by its
//   creator and compared in full. Knowing it is what entitles a caller to name the arena;
//   it never leaves the two processes.
// - the owner: the uid of the creating process is on an allow-list (our own by default),
//   so that a worker running as root, or reachable over TCP, never maps another user's
//   files or memory on a caller's say-so.
#ifndef MOE_COMMON_ARENA_TRUST_H_
#define MOE_COMMON_ARENA_TRUST_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace moe {

inline constexpr size_t kArenaIdChars = 32;  // lowercase hex

// A fresh random id.
std::string NewArenaId();
// OK when `id` has NewArenaId's form; INVALID_ARGUMENT naming what is wrong (an empty id
// included: it would match any header).
absl::Status CheckArenaId(const std::string& id);

// Whether `uid` is in `allowed`, or is our own effective uid when `allowed` is empty: the
// one allow-list rule for arena owners and for unix-socket peers alike.
bool UidAllowed(uint32_t uid, const std::vector<uint32_t>& allowed);

// Whom an attacher trusts.
struct ArenaAttachPolicy {
  // uids whose processes may share an arena with us. Empty: our own effective uid only.
  std::vector<uint32_t> allowed_uids;
  // The largest arena we map, in usable bytes.
  uint64_t max_bytes = uint64_t{64} << 30;

  bool Allows(uint32_t uid) const;
  std::string AllowedForMessage() const;  // "1000" or "1000,1001"
};

// OK when process `pid` runs as an allowed uid; PERMISSION_DENIED naming the uid, or
// FAILED_PRECONDITION when there is no such process.
absl::Status CheckProcessOwner(uint32_t pid, const ArenaAttachPolicy& policy);

}  // namespace moe

#endif  // MOE_COMMON_ARENA_TRUST_H_
