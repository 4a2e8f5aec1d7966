// Continuous batching: every generation on a model steps together on one thread. Each
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
#include "coordinator/generator.h"
#include "coordinator/mixtral_model.h"

namespace moe::coordinator {

struct BatchSchedulerOptions {
  // Rows of one forward pass: one per running stream, the rest for prompt chunks. Also
  // bounds the pass's scratch memory. When more streams decode than this, they take
  // turns.
  int64_t max_batch_tokens = 256;
};

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
  BatchScheduler(const MixtralModel* model, BatchSchedulerOptions options);
  void Loop();
  // Takes `stream` off the running list, hands its caller `last_token` (if >= 0) and
  // wakes it; the step thread only.
  void Retire(Stream* stream, absl::Status status, int last_token = -1);
  // One forward pass over `running_`'s next rows; the step thread only.
  void Step();

  const MixtralModel* model_;
  const BatchSchedulerOptions options_;

  mutable std::mutex mu_;
  std::condition_variable wake_;    // the step thread: streams arrived or stopped
  std::vector<Stream*> incoming_;   // guarded by mu_: submitted, not yet stepped
  bool stopping_ = false;           // guarded by mu_
  BatchTotals totals_;              // guarded by mu_
  // The step thread's own: streams in arrival order, and where the next turn starts
  // when more streams decode than a step holds.
  std::vector<Stream*> running_;
  size_t turn_ = 0;
  std::thread thread_;
};

}  // namespace moe::coordinator

#endif  // MOE_COORDINATOR_BATCH_SCHEDULER_H_
