#include "common/shared_arena.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace moe {
namespace {

std::string RandomId() {
  std::random_device rd;
  return absl::StrFormat("%08x%08x%08x%08x", rd(), rd(), rd(), rd());
}

absl::Status Errno(absl::string_view what) {
  return absl::FailedPreconditionError(absl::StrCat(what, ": ", std::strerror(errno)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<SharedArena>> SharedArena::Create(size_t bytes) {
  const int fd = ::memfd_create("moe-activation-arena", MFD_CLOEXEC);
  if (fd < 0) return Errno("memfd_create for the activation arena");
  const size_t total = kHeaderBytes + bytes;
  if (::ftruncate(fd, static_cast<off_t>(total)) != 0) {
    const absl::Status s = Errno("sizing the activation arena");
    ::close(fd);
    return s;
  }
  void* p = ::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    const absl::Status s = Errno("mapping the activation arena");
    ::close(fd);
    return s;
  }
  std::string id = RandomId();
  std::memcpy(p, id.data(), id.size());
  return std::unique_ptr<SharedArena>(
      new SharedArena(std::move(id), fd, static_cast<uint8_t*>(p), bytes));
}

absl::StatusOr<std::unique_ptr<SharedArena>> SharedArena::Attach(uint32_t pid, int fd,
                                                                 size_t bytes,
                                                                 const std::string& id) {
  const std::string path = absl::StrCat("/proc/", pid, "/fd/", fd);
  // Taken before the fd is opened: the pidfd names this very process even if the pid is
  // reused later.
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, static_cast<pid_t>(pid), 0));
  const int own = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (own < 0) {
    const absl::Status s = Errno(absl::StrCat(
        "cannot open the coordinator's arena ", path,
        " (the worker must run on the same machine as the same user, and the handle must "
        "name a live memfd of that process)"));
    if (pidfd >= 0) ::close(pidfd);
    return s;
  }
  struct stat st;
  if (::fstat(own, &st) != 0 || uint64_t(st.st_size) < kHeaderBytes + bytes) {
    ::close(own);
    if (pidfd >= 0) ::close(pidfd);
    return absl::FailedPreconditionError(absl::StrCat(
        "arena ", path, " holds ", st.st_size, " bytes, fewer than the ", kHeaderBytes + bytes,
        " announced"));
  }
  void* p = ::mmap(nullptr, kHeaderBytes + bytes, PROT_READ | PROT_WRITE, MAP_SHARED, own, 0);
  ::close(own);  // the mapping keeps the memory alive
  if (p == MAP_FAILED) {
    const absl::Status s = Errno(absl::StrCat("mapping arena ", path));
    if (pidfd >= 0) ::close(pidfd);
    return s;
  }
  if (id.size() > kHeaderBytes || std::memcmp(p, id.data(), id.size()) != 0) {
    ::munmap(p, kHeaderBytes + bytes);
    if (pidfd >= 0) ::close(pidfd);
    return absl::FailedPreconditionError(
        absl::StrCat("arena ", path, " does not carry the announced id ", id));
  }
  auto arena = std::unique_ptr<SharedArena>(new SharedArena(id, -1, static_cast<uint8_t*>(p), bytes));
  arena->owner_pid_ = pid;
  arena->owner_pidfd_ = pidfd;
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
  if (offset % alignof(float) != 0 || count > size_ / sizeof(float) ||
      offset > size_ - count * sizeof(float)) {
    return absl::OutOfRangeError(absl::StrCat("arena slice [", offset, ", +", count * 4,
                                              " bytes) is outside the ", size_, "-byte arena"));
  }
  return absl::Span<float>(reinterpret_cast<float*>(base_ + kHeaderBytes + offset), count);
}

}  // namespace moe
