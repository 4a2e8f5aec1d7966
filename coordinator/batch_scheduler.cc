#include "coordinator/batch_scheduler.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "coordinator/kv_cache.h"
#include "coordinator/sampler.h"

namespace moe::coordinator {

struct BatchScheduler::Stream {
  Stream(std::vector<int> prompt_ids, const GenerateOptions& generate)
      : prompt(std::move(prompt_ids)), options(generate), sampler(generate.sampling) {}

  // Set before submission, read-only afterwards.
  const std::vector<int> prompt;
  const GenerateOptions options;
  std::unique_ptr<KvCache> cache;

  // The step thread's own until the stream is retired; then the caller's.
  Sampler sampler;
  int64_t prompt_done = 0;  // prompt tokens in the cache
  int next_token = 0;       // the last sampled token, the input of the next step
  int sampled = 0;
  std::vector<float> logits;
  ForwardStats prefill_stats, decode_stats;

  // The caller wants no more tokens; read by the step thread without the lock (a
  // pass in flight is abandoned for it).
  std::atomic<bool> stop{false};
  // The hand-off to the caller, one lock per stream: a step's 32 callers waking for
  // their tokens do not queue on one mutex (nor on the step thread's). The caller sleeps
  // on its lane's EpochBroadcast.
  std::mutex mu;
  std::deque<int> tokens;  // guarded by mu: sampled, not yet handed to the caller
  bool retired = false;    // guarded by mu: the step thread no longer touches the stream
  absl::Status status;     // guarded by mu: why it was retired, if not by EOS, length or stop
};

template <typename Ready>
std::unique_lock<std::mutex> BatchScheduler::AwaitStream(Lane& lane, Stream& stream, Ready ready) {
  for (;;) {
    const uint32_t seen = lane.handed.epoch();
    std::unique_lock<std::mutex> lock(stream.mu);
    if (ready()) return lock;
    lock.unlock();
    lane.handed.Wait(seen);
  }
}

absl::Status CheckBatchSchedulerOptions(const BatchSchedulerOptions& options) {
  if (options.max_batch_tokens < 1 || options.max_batch_tokens > kMaxBatchTokens) {
    return absl::InvalidArgumentError(absl::StrCat("--max-batch-tokens ", options.max_batch_tokens,
                                                   " must be in [1, ", kMaxBatchTokens, "]"));
  }
  if (options.lanes < 1 || options.lanes > kMaxBatchLanes) {
    return absl::InvalidArgumentError(
        absl::StrCat("--batch-lanes ", options.lanes, " must be in [1, ", kMaxBatchLanes, "]"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<BatchScheduler>> BatchScheduler::Create(
    const MixtralModel* model, BatchSchedulerOptions options) {
  if (model == nullptr) return absl::InvalidArgumentError("BatchScheduler: no model");
  MOE_RETURN_IF_ERROR(CheckBatchSchedulerOptions(options));
  return std::unique_ptr<BatchScheduler>(new BatchScheduler(model, options));
}

// OpenMP's thread count is a per-thread setting that a new thread does not inherit: the
// step thread takes its creator's, so that `moe generate --threads N` (omp_set_num_threads
// on the main thread) reaches the kernels the steps run.
BatchScheduler::BatchScheduler(const MixtralModel* model, BatchSchedulerOptions options)
    : model_(model), options_(options) {
  for (int i = 0; i < options_.lanes; ++i) lanes_.push_back(std::make_unique<Lane>());
  for (auto& lane : lanes_) {
    lane->thread = std::thread([this, l = lane.get(), threads = omp_get_max_threads()] {
      omp_set_num_threads(threads);
      Loop(*l);
    });
  }
}

BatchScheduler::~BatchScheduler() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto& lane : lanes_) lane->thread.join();
}

BatchTotals BatchScheduler::totals() const {
  std::lock_guard<std::mutex> lock(mu_);
  return totals_;
}

void BatchScheduler::Retire(Lane& lane, Stream* stream, absl::Status status, int last_token,
                            bool wake) {
  lane.running.erase(std::remove(lane.running.begin(), lane.running.end(), stream),
                     lane.running.end());
  {
    std::lock_guard<std::mutex> lock(stream->mu);
    if (last_token >= 0) stream->tokens.push_back(last_token);
    stream->status = std::move(status);
    stream->retired = true;
  }
  // Once the caller sees `retired` it may free the stream: the wake-up is the lane's,
  // which outlives every caller.
  if (wake) lane.handed.NotifyAll();
}

void BatchScheduler::Loop(Lane& lane) {
  std::vector<Stream*>& running = lane.running;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [&] { return stopping_ || !lane.incoming.empty() || !running.empty(); });
      running.insert(running.end(), lane.incoming.begin(), lane.incoming.end());
      lane.incoming.clear();
      if (stopping_) {
        while (!running.empty()) {
          Retire(lane, running.back(), absl::UnavailableError("the generation scheduler stopped"));
        }
        return;
      }
      for (Stream* s : std::vector<Stream*>(running)) {
        if (s->stop.load()) Retire(lane, s, absl::OkStatus());
      }
    }
    // Asked outside the lock: a caller's check may take a system call.
    std::vector<Stream*> cancelled;
    for (Stream* s : running) {
      if (s->options.cancelled && s->options.cancelled()) cancelled.push_back(s);
    }
    for (Stream* s : cancelled) Retire(lane, s, absl::CancelledError("generation cancelled"));
    if (!running.empty()) Step(lane);
  }
}

void BatchScheduler::Step(Lane& lane) {
  const int64_t budget = options_.max_batch_tokens;
  // Streams past their prompt decode one token each (in turns when they outnumber the
  // budget); prompt chunks fill the rest, oldest stream first.
  std::vector<Stream*> decoders, prefilling;
  for (Stream* s : lane.running) {
    (s->prompt_done == int64_t(s->prompt.size()) ? decoders : prefilling).push_back(s);
  }
  if (int64_t(decoders.size()) > budget) {
    const size_t first = lane.turn % decoders.size();
    std::rotate(decoders.begin(), decoders.begin() + first, decoders.end());
    decoders.resize(budget);
    lane.turn = first + budget;
  }
  std::vector<Stream*> chosen;
  std::vector<MixtralModel::Sequence> batch;
  std::vector<int64_t> chunk;  // prompt tokens per chosen stream (0: a decode row)
  for (Stream* s : decoders) {
    chosen.push_back(s);
    batch.push_back({absl::MakeConstSpan(&s->next_token, 1), s->cache.get(),
                     MixtralModel::Logits::kLast, &s->logits});
    chunk.push_back(0);
  }
  int64_t used = int64_t(decoders.size());
  for (Stream* s : prefilling) {
    if (used >= budget) break;
    const int64_t left = int64_t(s->prompt.size()) - s->prompt_done;
    const int64_t c = std::min(left, budget - used);
    chosen.push_back(s);
    batch.push_back({absl::MakeConstSpan(s->prompt).subspan(s->prompt_done, c), s->cache.get(),
                     c == left ? MixtralModel::Logits::kLast : MixtralModel::Logits::kNone,
                     &s->logits});
    chunk.push_back(c);
    used += c;
  }

  // Any stream of the pass that is to end stops it (within a layer, also while it waits
  // for a lost worker); the pass is then run again without it.
  auto must_end = [](Stream* s) {
    return s->stop.load() || (s->options.cancelled && s->options.cancelled());
  };
  ForwardStats pass;
  const absl::Status status = model_->Forward(
      batch, [&] { return std::any_of(chosen.begin(), chosen.end(), must_end); }, &pass);
  if (!status.ok()) {
    std::vector<bool> ending(chosen.size());
    bool any = false;
    if (absl::IsCancelled(status)) {
      for (size_t i = 0; i < chosen.size(); ++i) any |= ending[i] = must_end(chosen[i]);
    }
    if (any) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++totals_.aborted;
      }
      for (size_t i = 0; i < chosen.size(); ++i) {
        if (!ending[i]) continue;
        Retire(lane, chosen[i],
               chosen[i]->stop.load() ? absl::OkStatus()
                                      : absl::CancelledError("generation cancelled"));
      }
    } else {
      for (Stream* s : chosen) Retire(lane, s, status);
    }
    return;
  }

  // Each stream that finished its prompt or decoded samples its next token.
  std::vector<int> token(chosen.size(), -1);
  for (size_t i = 0; i < chosen.size(); ++i) {
    Stream* s = chosen[i];
    if (chunk[i] > 0) {
      s->prefill_stats += pass;
      s->prompt_done += chunk[i];
      if (s->prompt_done < int64_t(s->prompt.size())) continue;
    } else {
      s->decode_stats += pass;
    }
    token[i] = s->sampler.Sample(s->logits);
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++totals_.steps;
    totals_.forward += pass;
    for (size_t i = 0; i < chosen.size(); ++i) {
      if (chunk[i] > 0) {
        totals_.prompt_rows += chunk[i];
      } else {
        ++totals_.decode_rows;
      }
    }
  }
  const int eos = static_cast<int>(model_->config().eos_token_id);
  for (size_t i = 0; i < chosen.size(); ++i) {
    if (token[i] < 0) continue;
    Stream* s = chosen[i];
    s->next_token = token[i];
    ++s->sampled;
    if ((s->options.stop_at_eos && token[i] == eos) || s->sampled >= s->options.max_new_tokens) {
      Retire(lane, s, absl::OkStatus(), token[i], /*wake=*/false);  // s may be freed from here
      continue;
    }
    std::lock_guard<std::mutex> lock(s->mu);
    s->tokens.push_back(token[i]);
  }
  // One wake-up for every caller of the step (a futex call per stream cost the step
  // thread ~8% of its time at 32 streams), outside every stream's lock.
  lane.handed.NotifyAll();
}

absl::StatusOr<GenerationResult> BatchScheduler::Generate(absl::Span<const int> prompt,
                                                          const GenerateOptions& options,
                                                          const TokenCallback& on_token) {
  const MixtralModel& model = *model_;
  const ModelConfig& c = model.config();
  MOE_RETURN_IF_ERROR(CheckGenerateRequest(c, static_cast<int64_t>(prompt.size()), options));
  const int64_t capacity = static_cast<int64_t>(prompt.size()) + options.max_new_tokens;
  if (capacity > model.max_context_tokens()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt of ", prompt.size(), " tokens + max_new_tokens ", options.max_new_tokens,
        " exceed the context limit of ", model.max_context_tokens(), " tokens"));
  }
  // Checked here so that a bad prompt fails alone, not the step it would share.
  for (size_t t = 0; t < prompt.size(); ++t) {
    if (prompt[t] < 0 || prompt[t] >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", prompt[t], " at index ", t,
                                                     " is outside the vocabulary [0, ",
                                                     c.vocab_size, ")"));
    }
  }
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  auto stream = std::make_unique<Stream>(std::vector<int>(prompt.begin(), prompt.end()), options);
  // On the model's device; freed when this returns, whatever the reason (the step
  // thread has let go of the stream by then).
  MOE_ASSIGN_OR_RETURN(stream->cache, model.NewCache(capacity));
  Lane* lane = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return absl::UnavailableError("the generation scheduler stopped");
    for (auto& l : lanes_) {
      if (lane == nullptr || l->streams < lane->streams) lane = l.get();
    }
    ++lane->streams;
    lane->incoming.push_back(stream.get());
  }
  absl::Cleanup leave = [this, lane] {
    std::lock_guard<std::mutex> lock(mu_);
    --lane->streams;
  };
  wake_.notify_all();

  GenerationResult result;
  result.prompt_tokens = static_cast<int>(prompt.size());
  Clock::time_point t1 = t0;
  absl::Status status;
  const int eos = static_cast<int>(c.eos_token_id);
  while (true) {
    int token;
    {
      std::unique_lock<std::mutex> lock = AwaitStream(
          *lane, *stream, [&] { return !stream->tokens.empty() || stream->retired; });
      if (stream->tokens.empty()) {
        status = stream->status.ok()
                     ? absl::InternalError("the generation ended before its last token")
                     : stream->status;
        break;
      }
      token = stream->tokens.front();
      stream->tokens.pop_front();
    }
    if (result.tokens.empty()) {
      t1 = Clock::now();
      result.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
    }
    result.tokens.push_back(token);
    const bool keep_going = on_token ? on_token(token) : true;
    if (options.stop_at_eos && token == eos) {
      result.finish_reason = FinishReason::kEos;
      break;
    }
    if (!keep_going) {
      result.finish_reason = FinishReason::kStopped;
      break;
    }
    if (int(result.tokens.size()) >= options.max_new_tokens) {
      result.finish_reason = FinishReason::kLength;
      break;
    }
  }
  // The step thread lets go of the stream (it may be in a pass) before it is freed.
  stream->stop = true;
  {
    std::lock_guard<std::mutex> lock(mu_);
    wake_.notify_all();
  }
  AwaitStream(*lane, *stream, [&] { return stream->retired; });
  MOE_RETURN_IF_ERROR(status);
  if (!result.tokens.empty()) {
    result.decode_seconds = std::chrono::duration<double>(Clock::now() - t1).count();
  }
  result.prefill_stats = stream->prefill_stats;
  result.decode_stats = stream->decode_stats;
  return result;
}

}  // namespace moe::coordinator
