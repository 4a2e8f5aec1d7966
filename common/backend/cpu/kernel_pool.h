// A small pool of helper threads for the packed matrix kernels (quant_kernels.cc), in
// place of an OpenMP parallel region per call.
//
// Why: a decoded token runs ~70 such calls, each a few tens of microseconds. With OpenMP
// threads that sleep between regions (OMP_WAIT_POLICY=PASSIVE, which a shared machine
// needs: spinning threads there lose 10x and more), every region pays a futex wake-up of
// its helper before the helper's fixed half can start, and another of the caller at the
// region's closing barrier. Here the caller never waits for a helper to arrive: work is
// claimed chunk by chunk, first come first served, so a helper that starts late (woken
// from sleep, or descheduled) takes fewer chunks or none, and the caller waits only for
// chunks a helper has claimed. Helpers poll a short while after each call (a token's
// next call comes within microseconds), yielding the core between looks, then sleep; so
// does a caller whose helper was descheduled mid-chunk.
//
// Every chunk runs exactly once, on whichever thread claims it: a kernel whose chunks
// write disjoint outputs gives the same bits whatever the thread count.
#ifndef MOE_COMMON_BACKEND_CPU_KERNEL_POOL_H_
#define MOE_COMMON_BACKEND_CPU_KERNEL_POOL_H_

#include <cstdint>

namespace moe::cpu {

using ChunkFn = void (*)(void* ctx, int64_t chunk);

// Runs fn(ctx, i) for every i in [0, chunks) on the calling thread and up to threads - 1
// helpers; returns when all have finished. Runs everything on the calling thread when
// threads <= 1, inside an OpenMP parallel region, or while another thread's call holds the
// pool (calls from several threads are safe). chunks < 2^31.
void ParallelChunks(int64_t chunks, int threads, ChunkFn fn, void* ctx);

// The same for any callable body(int64_t chunk).
template <class Body>
void ParallelChunks(int64_t chunks, int threads, Body& body) {
  ParallelChunks(
      chunks, threads,
      [](void* ctx, int64_t chunk) { (*static_cast<Body*>(ctx))(chunk); },
      const_cast<void*>(static_cast<const void*>(&body)));
}

}  // namespace moe::cpu

#endif  // MOE_COMMON_BACKEND_CPU_KERNEL_POOL_H_
