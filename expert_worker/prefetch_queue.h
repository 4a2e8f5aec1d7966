// Loads hinted experts into the slot cache on a background thread, so that a later
// RunExperts finds them resident. A hint never blocks its caller. (On a device whose copies
// are queued, not made, by the caller (Device::AsyncCopiesForRead: a GPU, a modelled
// link) they are issued at once on the caller's thread: queuing never blocks.) Each hint is a round:
// the guessed experts of one layer. A newer round for a layer supersedes a queued older
// one and ends the protection of what the older one loaded; a round never evicts one of
// its own experts to load another (with a batch's hint wider than the slots, that would
// only churn); demand loads overtake queued copies (SlotCache's high-priority stream). Experts are
// loaded in the hint's order, so a hint lists the most wanted first.
#ifndef MOE_EXPERT_WORKER_PREFETCH_QUEUE_H_
#define MOE_EXPERT_WORKER_PREFETCH_QUEUE_H_

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "expert_worker/slot_cache.h"

namespace moe::expert_worker {

// Thread-safe. `cache` must outlive the queue; destruction drops pending hints.
class PrefetchQueue {
 public:
  // At most `capacity` rounds wait; older ones are dropped first (they are stalest).
  PrefetchQueue(SlotCache* cache, size_t capacity = 64);
  ~PrefetchQueue();

  void Enqueue(int layer, std::vector<int> experts);
  // Blocks until every hint enqueued so far is handled (for tests and benchmarks).
  void Drain();
  uint64_t loaded() const;
  uint64_t dropped() const;

 private:
  void Loop();

  SlotCache* cache_;
  const size_t capacity_;
  mutable std::mutex mu_;
  std::condition_variable changed_;
  std::deque<std::pair<int, std::vector<int>>> pending_;  // guarded by mu_
  bool busy_ = false;                        // guarded by mu_
  bool stopping_ = false;                    // guarded by mu_
  uint64_t loaded_ = 0, dropped_ = 0;  // guarded by mu_
  std::thread thread_;
};

}  // namespace moe::expert_worker

#endif  // MOE_EXPERT_WORKER_PREFETCH_QUEUE_H_
