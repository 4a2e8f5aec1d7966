// Continuous batching: the generations on a model step together on one thread (or on
// one of a few, BatchSchedulerOptions::lanes, each with its own streams). Each
// step is one forward pass over every running stream's next token plus chunks of
// waiting prompts, up to a budget of rows (MixtralModel::Forward over several
// sequences: one matrix product per dense projection, attention per stream over its own
// KV cache, one routing and one RunExperts per layer). Each stream then samples its
// own token; streams join and leave between steps.
//
// One thread matters beyond batching: OpenMP (and OpenBLAS on it) keeps a spinning
// thread team per calling thread, so passes issued from many threads fight over the
// cores.
//
// A stream's tokens do not depend on what shares its steps: on the CPU every kernel's
// per-row arithmetic is independent of the other rows (cpu/rowwise_matmul.h), attention
// reads only the stream's own cache, and its sampler is its own.
#ifndef MOE_COORDINATOR_BATCH_SCHEDULER_H_
#define MOE_COORDINATOR_BATCH_SCHEDULER_H_

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "coordinator/epoch_broadcast.h"
#include "coordinator/generator.h"
#include "coordinator/mixtral_model.h"

namespace moe::coordinator {

struct BatchSchedulerOptions {
  // Rows of one forward pass: one per running stream, the rest for prompt chunks. Also
  // bounds the pass's scratch memory. When more streams decode than this, they take
  // turns.
  int64_t max_batch_tokens = 256;
  // Step threads, each stepping its own share of the streams (a stream stays in the lane
  // it joined, the one with fewest streams then). With two lanes one lane's dense half
  // computes while the expert worker serves the other's RunExperts, instead of each
  // waiting for the other. Each lane's pass has its own rows budget and scratch. In
  // [1, kMaxBatchLanes].
  int lanes = 1;
};
// Two: the model's scratch pool keeps two sets between passes (a third concurrent
// pass would allocate its scratch every step), and two cover one pass computing while
// the other waits for the worker.
inline constexpr int kMaxBatchLanes = 2;
// Rows of one pass at most (its scratch grows with them).
inline constexpr int64_t kMaxBatchTokens = int64_t{1} << 20;

// The one check of the options, by Create and by the coordinator binary before it loads
// the model; the message names the flag that sets each field.
absl::Status CheckBatchSchedulerOptions(const BatchSchedulerOptions& options);

// What the steps did since start (each pass counted once).
struct BatchTotals {
  uint64_t steps = 0;         // forward passes that completed
  uint64_t prompt_rows = 0;   // prompt tokens they carried
  uint64_t decode_rows = 0;   // generated tokens they carried
  uint64_t aborted = 0;       // passes stopped because one of their streams ended
  ForwardStats forward;       // of the completed passes
};

// Thread-safe. Owns the step thread. `model` must outlive the scheduler, and every
// Generate call must have returned before it is destroyed.
class BatchScheduler {
 public:
  static absl::StatusOr<std::unique_ptr<BatchScheduler>> Create(const MixtralModel* model,
                                                                BatchSchedulerOptions options);
  ~BatchScheduler();
  BatchScheduler(const BatchScheduler&) = delete;
  BatchScheduler& operator=(const BatchScheduler&) = delete;

  // Runs one generation in the shared steps and blocks until it ends; the contract of
  // coordinator::Generate (generator.h). `on_token` runs on the calling thread, so a
  // slow consumer delays only its own stream. The stream's KV cache is allocated here
  // and freed before this returns, whatever the reason.
  //
  // Per stream: `options.cancelled` is asked before every step and every layer of the
  // steps it is in (and while they wait for a lost expert worker); when it says true
  // the step is abandoned, this stream ends CANCELLED, and the step is run again
  // without it (abandoned steps leave no trace). A step that fails otherwise ends every
  // stream in it with that status (e.g. UNAVAILABLE when no expert worker came back
  // within the grace).
  absl::StatusOr<GenerationResult> Generate(absl::Span<const int> prompt,
                                            const GenerateOptions& options,
                                            const TokenCallback& on_token);

  const MixtralModel& model() const { return *model_; }
  const BatchSchedulerOptions& options() const { return options_; }
  BatchTotals totals() const;

 private:
  struct Stream;
  // One step thread and the streams it steps.
  struct Lane {
    std::vector<Stream*> incoming;  // guarded by mu_: submitted, not yet stepped
    int streams = 0;                // guarded by mu_: submitted and not yet returned
    // The lane's thread's own: streams in arrival order, and where the next turn starts
    // when more streams decode than a step holds.
    std::vector<Stream*> running;
    size_t turn = 0;
    std::thread thread;
    // Wakes the lane's callers: once per step for all the tokens it handed over (one
    // system call, not one per stream), and at each retirement.
    EpochBroadcast handed;
  };
  BatchScheduler(const MixtralModel* model, BatchSchedulerOptions options);
  void Loop(Lane& lane);
  // Takes `stream` off its lane's running list, hands its caller `last_token` (if >= 0)
  // and, if `wake`, wakes the lane's callers (a step wakes them once for all its
  // streams); the lane's thread only.
  void Retire(Lane& lane, Stream* stream, absl::Status status, int last_token = -1,
              bool wake = true);
  // Blocks the caller of `stream` until `ready()` (asked under the stream's lock, which
  // is held when this returns) is true.
  template <typename Ready>
  static std::unique_lock<std::mutex> AwaitStream(Lane& lane, Stream& stream, Ready ready);
  // One forward pass over the lane's next rows; the lane's thread only.
  void Step(Lane& lane);

  const MixtralModel* model_;
  const BatchSchedulerOptions options_;

  mutable std::mutex mu_;
  std::condition_variable wake_;  // the step threads: streams arrived or stopped
  bool stopping_ = false;         // guarded by mu_
  BatchTotals totals_;            // guarded by mu_
  std::vector<std::unique_ptr<Lane>> lanes_;  // fixed after construction
};

}  // namespace moe::coordinator

#endif  // MOE_COORDINATOR_BATCH_SCHEDULER_H_
