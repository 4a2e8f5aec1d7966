// Continuous batching over the in-process backend: 16 generations of different prompt
// and output lengths, greedy and seeded, join and leave one shared BatchScheduler; each
// must give exactly its solo run's tokens (batch invariance), on the bundled fp32 model
// and on its 4/3-bit conversion. Cancellation and stops stay per stream.
#include "coordinator/batch_scheduler.h"

#include <omp.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "coordinator/kv_cache.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tools/cli/local_engine.h"

namespace moe::coordinator {
namespace {

struct Request {
  std::vector<int> prompt;
  GenerateOptions options;
};

// Prompts of 1..61 tokens (several longer than a step's budget below, so they are
// prefilled in chunks between other streams' decode rows), 4..33 new tokens, greedy
// and seeded sampling with top-k and top-p, some stopping at EOS.
std::vector<Request> MakeRequests(const ModelConfig& c, int count) {
  std::mt19937 rng(42);
  std::uniform_int_distribution<int> token(3, int(c.vocab_size) - 1);
  std::vector<Request> requests(count);
  for (int i = 0; i < count; ++i) {
    Request& r = requests[i];
    r.prompt.push_back(1);  // BOS
    const int length = (i * 13) % 61;
    for (int t = 0; t < length; ++t) r.prompt.push_back(token(rng));
    r.options.max_new_tokens = 4 + (i * 11) % 30;
    r.options.stop_at_eos = i % 3 == 0;
    if (i % 2 == 1) {
      r.options.sampling.temperature = 0.9f;
      r.options.sampling.top_k = i % 4 == 1 ? 40 : 0;
      r.options.sampling.top_p = i % 4 == 3 ? 0.9f : 1.0f;
      r.options.sampling.seed = 1000 + i;
    }
  }
  return requests;
}

// Releases waiters once a count is reached (a latch for the staggered starts).
class Gate {
 public:
  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return open_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

// Runs every request through one scheduler, request i submitted once request i - 1 has
// its first few tokens (or has ended), so that streams join while others decode and
// leave at different steps. `on_token(i, count)` may stop stream i (false).
std::vector<absl::StatusOr<GenerationResult>> RunStaggered(
    BatchScheduler& scheduler, std::vector<Request> requests,
    const std::function<bool(int, int)>& on_token = nullptr) {
  const int count = int(requests.size());
  std::vector<absl::StatusOr<GenerationResult>> results(count, absl::UnknownError("not run"));
  std::vector<Gate> started(count);
  std::vector<std::thread> threads;
  for (int i = 0; i < count; ++i) {
    threads.emplace_back([&, i] {
      if (i > 0) started[i - 1].Wait();
      GenerateOptions options = requests[i].options;
      options.scheduler = &scheduler;
      int tokens = 0;
      results[i] = Generate(scheduler.model(), requests[i].prompt, options, [&](int) {
        ++tokens;
        if (tokens == 1 + i % 3) started[i].Open();
        return on_token ? on_token(i, tokens) : true;
      });
      started[i].Open();
    });
  }
  for (std::thread& t : threads) t.join();
  return results;
}

class BatchSchedulerTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    const std::string dir = GetParam() == "bundled"
                                ? std::string(MOE_SOURCE_DIR) + "/models/kjv-moe"
                                : std::string(MOE_BINARY_DIR) + "/converted/" + GetParam();
    auto engine = LocalEngine::Open(dir, /*cache_per_layer=*/3);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = *std::move(engine);
  }

  // Each request alone, in a scheduler of its own (its whole prompt in one pass).
  std::vector<GenerationResult> Solo(const std::vector<Request>& requests) {
    std::vector<GenerationResult> solo;
    for (const Request& r : requests) {
      auto result = Generate(engine_->model(), r.prompt, r.options, nullptr);
      EXPECT_TRUE(result.ok()) << result.status();
      solo.push_back(result.ok() ? *result : GenerationResult{});
    }
    return solo;
  }

  std::unique_ptr<BatchScheduler> Scheduler(int64_t max_batch_tokens) {
    auto scheduler = BatchScheduler::Create(&engine_->model(), {max_batch_tokens});
    EXPECT_TRUE(scheduler.ok()) << scheduler.status();
    return *std::move(scheduler);
  }

  std::unique_ptr<LocalEngine> engine_;
};

// The property behind the scheduler's: one pass over several sequences (prefill chunks
// and decode rows mixed) gives every sequence bit for bit the logits of its own pass.
// Token equality alone would hide differences of an ulp.
TEST_P(BatchSchedulerTest, ABatchedPassGivesEachSequenceItsSoloLogitsBitForBit) {
  const MixtralModel& model = engine_->model();
  const std::vector<Request> requests = MakeRequests(engine_->config(), 7);
  const int count = int(requests.size());
  auto caches = [&] {
    std::vector<std::unique_ptr<KvCache>> made;
    for (int i = 0; i < count; ++i) made.push_back(*model.NewCache(128));
    return made;
  };
  // Solo: each prompt in one pass (every row's logits), then one decode token.
  auto solo_caches = caches();
  std::vector<std::vector<float>> solo_prefill(count), solo_decode(count);
  for (int i = 0; i < count; ++i) {
    ASSERT_TRUE(model.Forward(requests[i].prompt, *solo_caches[i], MixtralModel::Logits::kAll,
                              &solo_prefill[i]).ok());
    const int next[1] = {int(i + 5)};
    ASSERT_TRUE(model.Forward(next, *solo_caches[i], MixtralModel::Logits::kLast,
                              &solo_decode[i]).ok());
  }
  // Batched: the first three prompts in one pass, then their decode tokens together with
  // the other prompts' in a second pass.
  auto batch_caches = caches();
  std::vector<std::vector<float>> prefill(count), decode(count);
  std::vector<MixtralModel::Sequence> first, second;
  std::vector<int> next(count);
  for (int i = 0; i < 3; ++i) {
    first.push_back({requests[i].prompt, batch_caches[i].get(), MixtralModel::Logits::kAll,
                     &prefill[i]});
  }
  ASSERT_TRUE(model.Forward(first).ok());
  for (int i = 0; i < count; ++i) {
    next[i] = i + 5;
    if (i < 3) {
      second.push_back({absl::MakeConstSpan(&next[i], 1), batch_caches[i].get(),
                        MixtralModel::Logits::kLast, &decode[i]});
    } else {
      second.push_back({requests[i].prompt, batch_caches[i].get(), MixtralModel::Logits::kAll,
                        &prefill[i]});
    }
  }
  ASSERT_TRUE(model.Forward(second).ok());
  for (int i = 0; i < count; ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(prefill[i], solo_prefill[i]);
    if (i < 3) {
      EXPECT_EQ(decode[i], solo_decode[i]);
    }
    EXPECT_EQ(batch_caches[i]->length(), int64_t(requests[i].prompt.size()) + (i < 3 ? 1 : 0));
  }
}

TEST_P(BatchSchedulerTest, SixteenStreamsJoiningAndLeavingEachGiveTheirSoloTokens) {
  const std::vector<Request> requests = MakeRequests(engine_->config(), 16);
  const std::vector<GenerationResult> solo = Solo(requests);
  // 12 rows a step: fewer than the streams, so decoders also take turns.
  auto scheduler = Scheduler(12);
  const auto batched = RunStaggered(*scheduler, requests);
  for (size_t i = 0; i < requests.size(); ++i) {
    SCOPED_TRACE(i);
    ASSERT_TRUE(batched[i].ok()) << batched[i].status();
    EXPECT_EQ(batched[i]->tokens, solo[i].tokens);
    EXPECT_EQ(batched[i]->finish_reason, solo[i].finish_reason);
    EXPECT_EQ(batched[i]->prompt_tokens, int(requests[i].prompt.size()));
  }
  // The steps were shared: on average several rows per pass.
  const BatchTotals totals = scheduler->totals();
  EXPECT_GT(totals.prompt_rows + totals.decode_rows, 3 * totals.steps)
      << totals.steps << " steps, " << totals.prompt_rows << " prompt rows, "
      << totals.decode_rows << " decode rows";
  EXPECT_EQ(KvCache::LiveCaches(), 0);
}

// Two step threads, each batching its own share of the streams, call the model (and
// its experts) at once: each stream still gets its solo tokens.
TEST_P(BatchSchedulerTest, TwoLanesSteppingAtOnceEachStreamGetsItsSoloTokens) {
  const std::vector<Request> requests = MakeRequests(engine_->config(), 16);
  const std::vector<GenerationResult> solo = Solo(requests);
  auto scheduler = BatchScheduler::Create(&engine_->model(), {12, /*lanes=*/2});
  ASSERT_TRUE(scheduler.ok()) << scheduler.status();
  const auto batched = RunStaggered(**scheduler, requests);
  for (size_t i = 0; i < requests.size(); ++i) {
    SCOPED_TRACE(i);
    ASSERT_TRUE(batched[i].ok()) << batched[i].status();
    EXPECT_EQ(batched[i]->tokens, solo[i].tokens);
    EXPECT_EQ(batched[i]->finish_reason, solo[i].finish_reason);
  }
  const BatchTotals totals = (*scheduler)->totals();
  EXPECT_GT(totals.prompt_rows + totals.decode_rows, 2 * totals.steps)
      << totals.steps << " steps, " << totals.prompt_rows << " prompt rows, "
      << totals.decode_rows << " decode rows";
  EXPECT_EQ(KvCache::LiveCaches(), 0);
}

// Each bound of the options refused by name, at both ends, before any thread starts.
TEST_P(BatchSchedulerTest, OptionsOutsideTheirBoundsAreRefusedNamingTheFlag) {
  const struct {
    BatchSchedulerOptions options;
    const char* flag;
  } bad[] = {{{0, 1}, "--max-batch-tokens 0"},
             {{kMaxBatchTokens + 1, 1}, "--max-batch-tokens 1048577"},
             {{12, 0}, "--batch-lanes 0"},
             {{12, kMaxBatchLanes + 1}, "--batch-lanes 3"}};
  for (const auto& b : bad) {
    SCOPED_TRACE(b.flag);
    auto scheduler = BatchScheduler::Create(&engine_->model(), b.options);
    ASSERT_FALSE(scheduler.ok());
    EXPECT_EQ(scheduler.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(scheduler.status().message(), ::testing::HasSubstr(b.flag));
  }
  EXPECT_TRUE(CheckBatchSchedulerOptions({kMaxBatchTokens, kMaxBatchLanes}).ok());
}

TEST_P(BatchSchedulerTest, CancelledAndStoppedStreamsEndAloneTheOthersAreUnchanged) {
  std::vector<Request> requests = MakeRequests(engine_->config(), 6);
  for (Request& r : requests) {
    r.options.max_new_tokens = 24;
    r.options.stop_at_eos = false;
  }
  const std::vector<GenerationResult> solo = Solo(requests);
  // Stream 1 is cancelled after its third token (as a client that goes away); stream 3
  // stops itself at its fifth (as a stop string does).
  std::atomic<bool> cancel{false};
  requests[1].options.cancelled = [&] { return cancel.load(); };
  auto scheduler = Scheduler(16);
  const auto batched = RunStaggered(*scheduler, requests, [&](int i, int count) {
    if (i == 1 && count == 3) cancel = true;
    return !(i == 3 && count == 5);
  });
  EXPECT_EQ(batched[1].status().code(), absl::StatusCode::kCancelled) << batched[1].status();
  ASSERT_TRUE(batched[3].ok()) << batched[3].status();
  EXPECT_EQ(batched[3]->finish_reason, FinishReason::kStopped);
  EXPECT_EQ(batched[3]->tokens,
            std::vector<int>(solo[3].tokens.begin(), solo[3].tokens.begin() + 5));
  for (int i : {0, 2, 4, 5}) {
    SCOPED_TRACE(i);
    ASSERT_TRUE(batched[i].ok()) << batched[i].status();
    EXPECT_EQ(batched[i]->tokens, solo[i].tokens);
  }
  EXPECT_EQ(KvCache::LiveCaches(), 0);
  EXPECT_EQ(KvCache::LiveBytes(), 0);
}

TEST_P(BatchSchedulerTest, BadRequestsFailAloneBeforeAnyStep) {
  auto scheduler = Scheduler(16);
  GenerateOptions options;
  options.scheduler = scheduler.get();
  const std::vector<int> bad = {1, int(engine_->config().vocab_size)};
  auto result = Generate(engine_->model(), bad, options, nullptr);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status();
  EXPECT_NE(result.status().message().find("outside the vocabulary"), absl::string_view::npos);
  EXPECT_EQ(scheduler->totals().steps, 0u);
  EXPECT_FALSE(BatchScheduler::Create(&engine_->model(), {0}).ok());
  EXPECT_FALSE(BatchScheduler::Create(&engine_->model(), {16, 0}).ok());
  EXPECT_FALSE(BatchScheduler::Create(&engine_->model(), {16, kMaxBatchLanes + 1}).ok());
}

// The step thread computes with its creator's OpenMP thread count (`moe generate
// --threads N`), not the process default a new thread would start with.
TEST(BatchSchedulerThreadsTest, StepsRunWithTheCreatorsOpenMpThreadCount) {
  auto engine = LocalEngine::Open(std::string(MOE_SOURCE_DIR) + "/models/kjv-moe");
  ASSERT_TRUE(engine.ok()) << engine.status();
  const int saved = omp_get_max_threads();
  for (const int threads : {saved + 1, 1}) {
    omp_set_num_threads(threads);
    std::atomic<int> seen{0};
    GenerateOptions options;
    options.max_new_tokens = 2;
    options.cancelled = [&] {  // runs on the step thread
      seen = omp_get_max_threads();
      return false;
    };
    auto scheduler = BatchScheduler::Create(&(*engine)->model(), {});
    ASSERT_TRUE(scheduler.ok()) << scheduler.status();
    ASSERT_TRUE((*scheduler)->Generate({1, 5, 9}, options, [](int) { return true; }).ok());
    EXPECT_EQ(seen.load(), threads);
  }
  omp_set_num_threads(saved);
}

INSTANTIATE_TEST_SUITE_P(Models, BatchSchedulerTest, ::testing::Values("bundled", "hqq_4_3"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace moe::coordinator
