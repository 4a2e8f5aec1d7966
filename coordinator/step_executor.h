// Runs forward passes of concurrent generations one at a time on one thread, in
// arrival order. One thread matters: OpenMP (and OpenBLAS on it) keeps a spinning thread
// team per calling thread, so passes issued from many gRPC threads fight over the cores
// (seen on 2 cores: decode through the coordinator several times slower than in-process
// until passes moved to one thread).
#ifndef MOE_COORDINATOR_STEP_EXECUTOR_H_
#define MOE_COORDINATOR_STEP_EXECUTOR_H_

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "absl/status/status.h"

namespace moe::coordinator {

// Thread-safe. Destruction waits for the queued steps.
class StepExecutor {
 public:
  StepExecutor();
  ~StepExecutor();
  StepExecutor(const StepExecutor&) = delete;
  StepExecutor& operator=(const StepExecutor&) = delete;

  // Runs `step` on the executor thread and returns its status.
  absl::Status Run(const std::function<absl::Status()>& step);

 private:
  struct Task {
    const std::function<absl::Status()>* step;
    absl::Status* result;
    bool* done;
  };
  void Loop();

  std::mutex mu_;
  std::condition_variable changed_;
  std::deque<Task> queue_;  // guarded by mu_
  bool stopping_ = false;   // guarded by mu_
  std::thread thread_;
};

}  // namespace moe::coordinator

#endif  // MOE_COORDINATOR_STEP_EXECUTOR_H_
