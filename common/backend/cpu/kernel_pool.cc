#include "common/backend/cpu/kernel_pool.h"

#include <immintrin.h>
#include <linux/futex.h>
#include <omp.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

namespace moe::cpu {
namespace {

using Clock = std::chrono::steady_clock;

// How long an idle helper polls for the next call before it sleeps (a decoded token's
// calls follow one another within microseconds, a wake-up from sleep costs tens), and
// how long the caller polls for helpers' claimed chunks before it sleeps. A helper
// yields the core between looks, so that a thread that needs it (an OpenMP helper of
// the attention, another process) gets it; the caller does not: on a busy machine a
// yield can cost it a whole time slice, and it is the one the call waits for.
constexpr auto kHelperPoll = std::chrono::microseconds(40);
constexpr auto kCallerPoll = std::chrono::microseconds(20);

// Sleeps while *word == value (or until a spurious wake-up); Wake wakes every sleeper.
// The futex calls themselves: libstdc++'s std::atomic::wait lost wake-ups here (a
// KernelPoolTest hung one run in a few).
void Sleep(std::atomic<uint32_t>& word, uint32_t value) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAIT_PRIVATE, value, nullptr,
          nullptr, 0);
}
void Wake(std::atomic<uint32_t>& word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr,
          nullptr, 0);
}

// Waits until done() or `poll` has passed; true if done().
template <class Done>
bool Poll(std::chrono::microseconds poll, bool yield, Done done) {
  const Clock::time_point until = Clock::now() + poll;
  for (;;) {
    for (int k = 0; k < 16; ++k) {
      if (done()) return true;
      _mm_pause();
    }
    if (Clock::now() > until) return done();
    if (yield) std::this_thread::yield();
  }
}

class Pool {
 public:
  void Run(int64_t chunks, int threads, ChunkFn fn, void* ctx) {
    std::unique_lock<std::mutex> lock(busy_, std::try_to_lock);
    if (!lock.owns_lock()) {  // another thread's call holds the pool: run here, alone
      for (int64_t i = 0; i < chunks; ++i) fn(ctx, i);
      return;
    }
    Grow(threads - 1);
    const uint32_t epoch = ++epoch_count_;
    // Closes the last job to claims before its fields change: a helper about to claim
    // from it could otherwise read the new chunk count and claim a chunk past its end.
    next_.store(uint64_t{epoch} << 32 | kClosed, std::memory_order_seq_cst);
    fn_.store(fn, std::memory_order_relaxed);
    ctx_.store(ctx, std::memory_order_relaxed);
    chunks_.store(chunks, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    participants_.store(threads - 1, std::memory_order_relaxed);
    // Publishes the job (the stores above) with chunk 0 next, then wakes sleepers: a
    // helper either sees the new epoch before it sleeps or is counted in sleepers_.
    next_.store(uint64_t{epoch} << 32, std::memory_order_seq_cst);
    epoch_.store(epoch, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) Wake(epoch_);

    int64_t mine = 0, i;
    while (Claim(epoch, &i)) {
      fn(ctx, i);
      ++mine;
    }
    // Only chunks a helper has claimed are waited for; none of them can still be unclaimed.
    // The thread that completes the last chunk publishes the epoch in finished_.
    if (done_.fetch_add(mine, std::memory_order_acq_rel) + mine == chunks) return;
    auto finished = [&] { return finished_.load(std::memory_order_acquire) == epoch; };
    if (Poll(kCallerPoll, /*yield=*/false, finished)) return;
    while (!finished()) {  // a helper was descheduled mid-chunk: sleep until it is done
      caller_waiting_.store(true, std::memory_order_seq_cst);
      const uint32_t seen = finished_.load(std::memory_order_seq_cst);
      if (seen != epoch) Sleep(finished_, seen);
      caller_waiting_.store(false, std::memory_order_relaxed);
    }
  }

 private:
  // The chunk index of a job not yet open to claims (above any chunk count).
  static constexpr uint64_t kClosed = 0xffffffffu;

  // Claims the next chunk of job `epoch`; false when it has none left or a newer job
  // replaced it.
  bool Claim(uint32_t epoch, int64_t* chunk) {
    uint64_t w = next_.load(std::memory_order_acquire);
    for (;;) {
      if (uint32_t(w >> 32) != epoch) return false;
      const int64_t i = int64_t(w & 0xffffffffu);
      // chunks_ is this job's: the job cannot end (and be replaced) while chunk i is unclaimed.
      if (i >= chunks_.load(std::memory_order_relaxed)) return false;
      if (next_.compare_exchange_weak(w, w + 1, std::memory_order_acq_rel)) {
        *chunk = i;
        return true;
      }
    }
  }

  void Grow(int helpers) {
    while (int(threads_.size()) < helpers) {
      // The helper starts from the last published epoch: the job about to be published
      // is new to it, even if it first looks after the publication.
      const int index = int(threads_.size());
      const uint32_t seen = epoch_count_;
      threads_.emplace_back([this, index, seen] { Helper(index, seen); });
      threads_.back().detach();  // the pool lives as long as the process
    }
  }

  void Helper(int index, uint32_t seen) {
    for (;;) {
      auto called = [&] { return epoch_.load(std::memory_order_acquire) != seen; };
      if (!Poll(kHelperPoll, /*yield=*/true, called)) {
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        while (epoch_.load(std::memory_order_seq_cst) == seen) {
          Sleep(epoch_, seen);
        }
        sleepers_.fetch_sub(1, std::memory_order_seq_cst);
      }
      seen = epoch_.load(std::memory_order_acquire);
      if (index >= participants_.load(std::memory_order_relaxed)) continue;
      int64_t i;
      while (Claim(seen, &i)) {
        // The job's fields stay its own while chunk i is not done.
        const int64_t chunks = chunks_.load(std::memory_order_relaxed);
        fn_.load(std::memory_order_relaxed)(ctx_.load(std::memory_order_relaxed), i);
        if (done_.fetch_add(1, std::memory_order_acq_rel) + 1 == chunks) {
          finished_.store(seen, std::memory_order_seq_cst);
          if (caller_waiting_.load(std::memory_order_seq_cst)) Wake(finished_);
        }
      }
    }
  }

  std::mutex busy_;                   // held by the calling thread for a whole call
  uint32_t epoch_count_ = 0;          // under busy_
  std::vector<std::thread> threads_;  // under busy_
  std::atomic<uint64_t> next_{0};     // epoch << 32 | the job's next unclaimed chunk
  std::atomic<uint32_t> epoch_{0};    // the current job's epoch; helpers sleep on it
  std::atomic<int> sleepers_{0};
  std::atomic<ChunkFn> fn_{nullptr};
  std::atomic<void*> ctx_{nullptr};
  std::atomic<int64_t> chunks_{0}, done_{0};
  std::atomic<int> participants_{0};  // helpers 0..participants_-1 join the current job
  std::atomic<uint32_t> finished_{0};  // the epoch whose last chunk a helper completed
  std::atomic<bool> caller_waiting_{false};
};

}  // namespace

void ParallelChunks(int64_t chunks, int threads, ChunkFn fn, void* ctx) {
  if (chunks <= 0) return;
  if (threads <= 1 || chunks == 1 || omp_in_parallel()) {
    for (int64_t i = 0; i < chunks; ++i) fn(ctx, i);
    return;
  }
  static Pool* const pool = new Pool;  // never destroyed: its helpers are detached
  pool->Run(chunks, threads, fn, ctx);
}

}  // namespace moe::cpu
