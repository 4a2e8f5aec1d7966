// Whether another process on this machine still runs, without ever mistaking a process
// that reused its pid for it: a pidfd taken while the process is known to be alive, which
// becomes readable when it exits (zombies included). The coordinator watches the expert
// worker this way while a call sits in the activation ring, where no socket breaks to
// tell it the worker died.
#ifndef MOE_COMMON_PROCESS_WATCH_H_
#define MOE_COMMON_PROCESS_WATCH_H_

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace moe {

class ProcessWatch {
 public:
  // Watches `pid` from now on. FAILED_PRECONDITION when there is no such process or this
  // kernel has no pidfd_open (Linux < 5.3): a caller then has no safe liveness test and
  // must not rely on one.
  static absl::StatusOr<std::unique_ptr<ProcessWatch>> Open(uint32_t pid);
  ~ProcessWatch();
  ProcessWatch(const ProcessWatch&) = delete;
  ProcessWatch& operator=(const ProcessWatch&) = delete;

  uint32_t pid() const { return pid_; }
  // True while the process runs. Never blocks.
  bool Alive() const;
  // Blocks until the process exits (true) or `timeout` passes (false). The bound keeps a
  // waiter responsive to everything else it must notice (deadlines, cancellation).
  bool WaitExit(absl::Duration timeout) const;

 private:
  ProcessWatch(uint32_t pid, int pidfd) : pid_(pid), pidfd_(pidfd) {}

  uint32_t pid_;
  int pidfd_;
};

}  // namespace moe

#endif  // MOE_COMMON_PROCESS_WATCH_H_
