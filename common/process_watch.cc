#include "common/process_watch.h"

#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace moe {

absl::StatusOr<std::unique_ptr<ProcessWatch>> ProcessWatch::Open(uint32_t pid) {
  if (pid == 0 || pid > (1u << 22)) {
    return absl::FailedPreconditionError(absl::StrCat(pid, " is not a process id"));
  }
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, static_cast<pid_t>(pid), 0));
  if (pidfd < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot watch process ", pid, ": pidfd_open: ", std::strerror(errno)));
  }
  return std::unique_ptr<ProcessWatch>(new ProcessWatch(pid, pidfd));
}

ProcessWatch::~ProcessWatch() { ::close(pidfd_); }

bool ProcessWatch::Alive() const { return !WaitExit(absl::ZeroDuration()); }

bool ProcessWatch::WaitExit(absl::Duration timeout) const {
  struct pollfd p = {pidfd_, POLLIN, 0};
  const int ms = static_cast<int>(
      std::clamp<int64_t>(absl::ToInt64Milliseconds(timeout), 0, 60 * 1000));
  int ready;
  do {
    ready = ::poll(&p, 1, ms);
  } while (ready < 0 && errno == EINTR);
  return ready > 0;
}

}  // namespace moe
