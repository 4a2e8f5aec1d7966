#include "coordinator/step_executor.h"

namespace moe::coordinator {

StepExecutor::StepExecutor() : thread_([this] { Loop(); }) {}

StepExecutor::~StepExecutor() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  changed_.notify_all();
  thread_.join();
}

absl::Status StepExecutor::Run(const std::function<absl::Status()>& step) {
  absl::Status result;
  bool done = false;
  std::unique_lock<std::mutex> lock(mu_);
  queue_.push_back(Task{&step, &result, &done});
  changed_.notify_all();
  changed_.wait(lock, [&] { return done; });
  return result;
}

void StepExecutor::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    changed_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping with nothing left
    Task task = queue_.front();
    queue_.pop_front();
    lock.unlock();
    absl::Status status = (*task.step)();
    lock.lock();
    *task.result = std::move(status);
    *task.done = true;
    changed_.notify_all();
  }
}

}  // namespace moe::coordinator
