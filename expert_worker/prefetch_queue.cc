#include "expert_worker/prefetch_queue.h"

#include "common/logging.h"

namespace moe::expert_worker {

PrefetchQueue::PrefetchQueue(SlotCache* cache, size_t capacity)
    : cache_(cache), capacity_(capacity), thread_([this] { Loop(); }) {}

PrefetchQueue::~PrefetchQueue() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    pending_.clear();
  }
  changed_.notify_all();
  thread_.join();
}

void PrefetchQueue::Enqueue(int layer, std::vector<int> experts) {
  if (cache_->device().AsyncCopiesForRead()) {
    // The copies are only queued (on a GPU's copy engine, or a modelled link's
    // timetable: microseconds): issue them here, as a GPU issues async copies from the
    // calling thread, and wake no thread.
    cache_->ClearProtection(layer, experts);
    uint64_t loaded = 0;
    for (int expert : experts) loaded += cache_->Prefetch(layer, expert, experts);
    std::lock_guard<std::mutex> lock(mu_);
    loaded_ += loaded;
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (it->first == layer) {  // superseded
        it = pending_.erase(it);
        ++dropped_;
      } else {
        ++it;
      }
    }
    if (pending_.size() >= capacity_) {
      pending_.pop_front();
      ++dropped_;
    }
    pending_.emplace_back(layer, std::move(experts));
  }
  changed_.notify_all();
}

void PrefetchQueue::Drain() {
  std::unique_lock<std::mutex> lock(mu_);
  changed_.wait(lock, [&] { return pending_.empty() && !busy_; });
}

uint64_t PrefetchQueue::loaded() const {
  std::lock_guard<std::mutex> lock(mu_);
  return loaded_;
}

uint64_t PrefetchQueue::dropped() const {
  std::lock_guard<std::mutex> lock(mu_);
  return dropped_;
}

void PrefetchQueue::Loop() {
  // This thread queues the cache's copies: they go to the cache's device.
  const absl::Status bound = cache_->device().BindThread();
  if (!bound.ok()) MOE_LOG(ERROR) << "prefetch thread: " << bound;
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    changed_.wait(lock, [&] { return stopping_ || !pending_.empty(); });
    if (stopping_) return;
    auto [layer, experts] = std::move(pending_.front());
    pending_.pop_front();
    busy_ = true;
    lock.unlock();
    cache_->ClearProtection(layer, experts);
    uint64_t loaded = 0;
    for (int expert : experts) loaded += cache_->Prefetch(layer, expert, experts);
    lock.lock();
    busy_ = false;
    loaded_ += loaded;
    changed_.notify_all();
  }
}

}  // namespace moe::expert_worker
