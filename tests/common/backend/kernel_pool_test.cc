// The packed kernels' thread pool (common/backend/cpu/kernel_pool.h): every chunk runs
// exactly once whatever the thread count, from one caller, from several callers at once,
// and from inside an OpenMP parallel region (which runs it on the calling thread).
#include "common/backend/cpu/kernel_pool.h"

#include <omp.h>

#include <atomic>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace moe::cpu {
namespace {

// Runs `chunks` chunks on `threads` threads; returns how often each ran.
std::vector<int> RunCounts(int64_t chunks, int threads) {
  std::vector<std::atomic<int>> runs(chunks);
  auto body = [&](int64_t c) { runs[c].fetch_add(1, std::memory_order_relaxed); };
  ParallelChunks(chunks, threads, body);
  std::vector<int> out;
  for (auto& r : runs) out.push_back(r.load());
  return out;
}

TEST(KernelPoolTest, EveryChunkRunsExactlyOnce) {
  for (int threads : {1, 2, 3, 5}) {
    for (int64_t chunks : {0, 1, 2, 7, 64, 1001}) {
      for (int repeat = 0; repeat < 20; ++repeat) {
        ASSERT_EQ(RunCounts(chunks, threads), std::vector<int>(chunks, 1))
            << threads << " threads, " << chunks << " chunks";
      }
    }
  }
}

TEST(KernelPoolTest, HelpersTakeChunksWhileTheCallerIsBusy) {
  // The caller's first chunk waits until another thread has run one: it can only end if
  // a helper joins (this would hang if the pool ran everything on the caller).
  std::atomic<bool> helped{false};
  const std::thread::id caller = std::this_thread::get_id();
  auto body = [&](int64_t c) {
    if (std::this_thread::get_id() != caller) {
      helped = true;
    } else if (c == 0) {
      while (!helped) std::this_thread::yield();
    }
  };
  ParallelChunks(64, 2, body);
  EXPECT_TRUE(helped);
}

TEST(KernelPoolTest, CallersOnSeveralThreadsEachGetAllTheirChunks) {
  std::vector<std::thread> callers;
  std::atomic<int> failures{0};
  for (int k = 0; k < 4; ++k) {
    callers.emplace_back([&, k] {
      for (int repeat = 0; repeat < 200; ++repeat) {
        const int64_t chunks = 3 + (k * 7 + repeat) % 50;
        if (RunCounts(chunks, 2 + k % 2) != std::vector<int>(chunks, 1)) ++failures;
      }
    });
  }
  for (std::thread& t : callers) t.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST(KernelPoolTest, InsideAnOpenMpRegionRunsOnTheCallingThread) {
  std::atomic<int> failures{0};
#pragma omp parallel num_threads(2)
  {
    const std::thread::id self = std::this_thread::get_id();
    std::vector<int> runs(37, 0);
    auto body = [&](int64_t c) {
      if (std::this_thread::get_id() != self) ++failures;
      ++runs[c];
    };
    ParallelChunks(37, 2, body);
    if (runs != std::vector<int>(37, 1)) ++failures;
  }
  EXPECT_EQ(failures.load(), 0);
}

}  // namespace
}  // namespace moe::cpu
