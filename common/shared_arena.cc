#include "common/shared_arena.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "common/arena_trust.h"
#include "common/checked_math.h"
#include "common/logging.h"
#include "common/status.h"

namespace moe {
namespace {

constexpr char kMemfdName[] = "moe-activation-arena";

absl::Status Errno(absl::string_view what) {
  return absl::FailedPreconditionError(absl::StrCat(what, ": ", std::strerror(errno)));
}

// Closes an fd when it goes out of scope (every early return of Attach).
struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<SharedArena>> SharedArena::Create(size_t bytes) {
  const std::optional<uint64_t> total = CheckedAdd(kHeaderBytes, bytes);
  if (!total.has_value() || *total > uint64_t(std::numeric_limits<off_t>::max())) {
    return absl::InvalidArgumentError(absl::StrCat("activation arena of ", bytes, " bytes is too large"));
  }
  const int fd = ::memfd_create(kMemfdName, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return Errno("memfd_create for the activation arena");
  FdCloser closer{fd};
  if (::ftruncate(fd, static_cast<off_t>(*total)) != 0) return Errno("sizing the activation arena");
  // Sealed at its size for good: a worker that maps it can never be made to fault on a
  // page past a truncation, and it refuses arenas without these seals.
  if (::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    return Errno("sealing the activation arena");
  }
  void* p = ::mmap(nullptr, *total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return Errno("mapping the activation arena");
  std::string id = NewArenaId();
  std::memcpy(p, id.data(), id.size());
  closer.fd = -1;  // the arena owns it now
  return std::unique_ptr<SharedArena>(
      new SharedArena(std::move(id), fd, static_cast<uint8_t*>(p), bytes));
}

absl::StatusOr<std::unique_ptr<SharedArena>> SharedArena::Attach(uint32_t pid, int fd,
                                                                 uint64_t bytes,
                                                                 const std::string& id,
                                                                 const ArenaAttachPolicy& policy) {
  MOE_RETURN_IF_ERROR(CheckArenaId(id));
  if (bytes == 0 || bytes > policy.max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("arena of ", bytes,
                                                   " usable bytes is not in [1, ",
                                                   policy.max_bytes, "]"));
  }
  const uint64_t total = kHeaderBytes + bytes;  // cannot wrap: bytes <= max_bytes < 2^63
  if (pid == 0 || fd < 0) {
    return absl::InvalidArgumentError(absl::StrCat("arena handle names pid ", pid, " fd ", fd));
  }
  const std::string path = absl::StrCat("/proc/", pid, "/fd/", fd);
  // Taken before the fd is opened: the pidfd names this very process even if the pid is
  // reused later.
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, static_cast<pid_t>(pid), 0));
  FdCloser pidfd_closer{pidfd};
  // Whose process it is, before touching its files: a root worker could open anyone's.
  MOE_RETURN_IF_ERROR(CheckProcessOwner(pid, policy));
  // The kernel's name for the fd: a memfd reads "/memfd:NAME (deleted)".
  char target[256] = {};
  const ssize_t target_len = ::readlink(path.c_str(), target, sizeof(target) - 1);
  const std::string expected_name = absl::StrCat("/memfd:", kMemfdName);
  if (target_len < 0) {
    return Errno(absl::StrCat("cannot read arena handle ", path));
  }
  if (!absl::StartsWith(absl::string_view(target, size_t(target_len)), expected_name)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "arena handle ", path, " is ", QuoteForMessage(absl::string_view(target, size_t(target_len))),
        ", not an activation arena memfd"));
  }
  const int own = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (own < 0) {
    return Errno(absl::StrCat(
        "cannot open the coordinator's arena ", path,
        " (the worker must run on the same machine as an allowed user, and the handle must "
        "name a live memfd of that process)"));
  }
  FdCloser own_closer{own};
  struct stat st;
  if (::fstat(own, &st) != 0) return Errno(absl::StrCat("stat of arena ", path));
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat("arena ", path, " is not a memfd"));
  }
  if (!policy.Allows(st.st_uid)) {
    return absl::PermissionDeniedError(absl::StrCat("arena ", path, " belongs to uid ", st.st_uid,
                                                    ", which may not share an arena with this worker"));
  }
  const int seals = ::fcntl(own, F_GET_SEALS);
  if (seals < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("arena ", path, " cannot be sealed, so it is not a memfd"));
  }
  if ((seals & F_SEAL_SHRINK) == 0 || (seals & F_SEAL_GROW) == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "arena ", path, " is not sealed against shrinking and growing (seals 0x",
        absl::Hex(seals), "): a truncation could fault the worker"));
  }
  if (uint64_t(st.st_size) != total) {
    return absl::FailedPreconditionError(absl::StrCat(
        "arena ", path, " holds ", st.st_size, " bytes, not the ", total, " announced (",
        kHeaderBytes, " header + ", bytes, ")"));
  }
  void* p = ::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, own, 0);
  if (p == MAP_FAILED) return Errno(absl::StrCat("mapping arena ", path));
  if (std::memcmp(p, id.data(), kArenaIdChars) != 0) {
    ::munmap(p, total);
    return absl::FailedPreconditionError(
        absl::StrCat("arena ", path, " does not carry the announced id ", id));
  }
  auto arena = std::unique_ptr<SharedArena>(new SharedArena(id, -1, static_cast<uint8_t*>(p), bytes));
  arena->owner_pid_ = pid;
  arena->owner_pidfd_ = pidfd;
  pidfd_closer.fd = -1;
  return arena;
}

bool SharedArena::OwnerAlive() const {
  if (owner_pid_ == 0) return true;  // our own arena
  if (owner_pidfd_ >= 0) {
    // A pidfd becomes readable when its process exits (zombies included).
    struct pollfd p = {owner_pidfd_, POLLIN, 0};
    return ::poll(&p, 1, 0) == 0;
  }
  std::ifstream stat(absl::StrCat("/proc/", owner_pid_, "/stat"));
  std::string line;
  if (!std::getline(stat, line)) return false;
  const size_t paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] != 'Z';
}

SharedArena::~SharedArena() {
  ::munmap(base_, kHeaderBytes + size_);
  if (fd_ >= 0) ::close(fd_);
  if (owner_pidfd_ >= 0) ::close(owner_pidfd_);
}

absl::StatusOr<absl::Span<float>> SharedArena::Floats(uint64_t offset, uint64_t count) const {
  const std::optional<uint64_t> bytes = CheckedMul(count, sizeof(float));
  if (offset % alignof(float) != 0 || !bytes.has_value() || !RangeWithin(offset, *bytes, size_)) {
    return absl::OutOfRangeError(absl::StrCat("arena slice of ", count, " floats at ", offset,
                                              " is unaligned or outside the ", size_,
                                              "-byte arena"));
  }
  return absl::Span<float>(reinterpret_cast<float*>(base_ + kHeaderBytes + offset), count);
}

absl::StatusOr<void*> SharedArena::At(uint64_t offset, uint64_t bytes, uint64_t align) const {
  if (align == 0 || offset % align != 0 || !RangeWithin(offset, bytes, size_)) {
    return absl::OutOfRangeError(absl::StrCat("arena range of ", bytes, " bytes at ", offset,
                                              " is not ", align, "-byte aligned inside the ",
                                              size_, "-byte arena"));
  }
  return static_cast<void*>(base_ + kHeaderBytes + offset);
}

}  // namespace moe
