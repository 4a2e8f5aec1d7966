// Host memory shared by the coordinator and a co-located expert worker, so that hidden
// states cross between them by offset rather than inside RPC bytes. The coordinator
// creates a memfd; the worker maps the same pages through /proc/<pid>/fd/<fd> (same
// machine, an allowed user). The memory dies with the last mapping: nothing to clean up
// when either process is killed.
//
// The worker trusts nothing in the attach request: it maps only a memfd sealed against
// shrinking and growing (so a truncation can never turn an access into SIGBUS), of
// exactly the announced size, owned by an allowed uid, whose header carries the full
// 128-bit random id the request names.
#ifndef MOE_COMMON_SHARED_ARENA_H_
#define MOE_COMMON_SHARED_ARENA_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/activation_arena.h"
#include "common/arena_trust.h"

namespace moe {

// Owns one mapping. Thread-safe for concurrent readers. The first kHeaderBytes hold the arena id (a check that the worker
// mapped what the coordinator meant); usable offsets start after it.
class SharedArena final : public ActivationArena {
 public:
  static constexpr size_t kHeaderBytes = 64;

  // Creates a new arena of `bytes` usable bytes with a random id.
  static absl::StatusOr<std::unique_ptr<SharedArena>> Create(size_t bytes);
  // Maps another process's arena. INVALID_ARGUMENT for a malformed id or size;
  // PERMISSION_DENIED for a foreign owner; FAILED_PRECONDITION, naming why, for anything
  // that is not such an arena (not a sealed memfd, wrong size, wrong id).
  static absl::StatusOr<std::unique_ptr<SharedArena>> Attach(uint32_t pid, int fd, uint64_t bytes,
                                                             const std::string& id,
                                                             const ArenaAttachPolicy& policy = {});
  ~SharedArena() override;
  SharedArena(const SharedArena&) = delete;
  SharedArena& operator=(const SharedArena&) = delete;

  const std::string& id() const override { return id_; }
  int fd() const { return fd_; }
  // For an attachment: the creator's pid, and whether that process still runs (a pidfd
  // taken at attach time, so a reused pid is never mistaken for it). An attachment
  // outliving its creator pins the memory; the attacher should drop it.
  uint32_t owner_pid() const override { return owner_pid_; }
  bool OwnerAlive() const override;
  size_t size() const override { return size_; }  // usable bytes
  bool on_device() const override { return false; }
  // `count` floats at byte `offset` (relative to the usable region), or OUT_OF_RANGE.
  absl::StatusOr<absl::Span<float>> Floats(uint64_t offset, uint64_t count) const;
  // `bytes` at byte `offset` of the usable region, `align`-aligned there, or OUT_OF_RANGE.
  absl::StatusOr<void*> At(uint64_t offset, uint64_t bytes, uint64_t align) const;
  absl::StatusOr<void*> At(uint64_t offset, uint64_t bytes) const override {
    return At(offset, bytes, sizeof(float));
  }

 private:
  SharedArena(std::string id, int fd, uint8_t* base, size_t size)
      : id_(std::move(id)), fd_(fd), base_(base), size_(size) {}

  std::string id_;
  int fd_;         // the creator's memfd (-1 for an attachment)
  uint32_t owner_pid_ = 0;  // attachments only
  int owner_pidfd_ = -1;    // attachments only; -1 where pidfd_open is not available
  uint8_t* base_;  // mapping of kHeaderBytes + size_ bytes
  size_t size_;
};

}  // namespace moe

#endif  // MOE_COMMON_SHARED_ARENA_H_
