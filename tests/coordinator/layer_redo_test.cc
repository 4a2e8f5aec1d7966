// A generation whose expert backend goes away mid-pass (UNAVAILABLE) waits for it and
// redoes the layer step: the tokens are those of an undisturbed run (for every stream
// of a batched step). Past the grace it fails with UNAVAILABLE and frees its KV cache. The backend here is the worker linked
// in, wrapped to fail chosen calls; tests/integration kills real worker processes.
#include <atomic>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/model_dir.h"
#include "coordinator/batch_scheduler.h"
#include "coordinator/dense_weights.h"
#include "coordinator/generator.h"
#include "coordinator/kv_cache.h"
#include "coordinator/mixtral_model.h"
#include "expert_worker/expert_runner.h"
#include "expert_worker/expert_stack.h"
#include "expert_worker/slot_cache.h"
#include "gtest/gtest.h"

namespace moe::coordinator {
namespace {

// Fails the RunExperts calls numbered in `fail_calls` (from 0) with UNAVAILABLE, as a
// killed worker does; AwaitRecovery answers `recovery`.
class FlakyBackend : public ExpertBackend {
 public:
  explicit FlakyBackend(ExpertBackend* inner) : inner_(inner) {}
  absl::StatusOr<std::unique_ptr<ActivationBatch>> Lend(int64_t rows) override {
    return inner_->Lend(rows);
  }
  absl::Status RunExperts(int layer, ActivationBatch& batch, absl::Span<const int32_t> ids,
                          absl::Span<const float> weights, ExpertCallStats* stats) override {
    max_rows = std::max(max_rows, batch.rows());
    if (fail_calls.count(calls_++) > 0) {
      // What a dying worker may leave behind: garbage in the batch.
      for (float& v : batch.out()) v = 1e30f;
      for (float& v : batch.x()) v = 1e30f;
      return absl::UnavailableError("worker gone");
    }
    return inner_->RunExperts(layer, batch, ids, weights, stats);
  }
  absl::Status AwaitRecovery(const std::function<bool()>& cancelled) override {
    ++recoveries;
    if (on_wait) on_wait();
    if (cancelled && cancelled()) return absl::CancelledError("cancelled while waiting");
    return recovery;
  }

  std::set<int> fail_calls;
  absl::Status recovery = absl::OkStatus();
  int recoveries = 0;
  int64_t max_rows = 0;  // the most rows one call carried
  std::function<void()> on_wait;

 private:
  ExpertBackend* inner_;
  int calls_ = 0;
};

class LayerRedoTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto dir = ModelDir::Open(std::string(MOE_SOURCE_DIR) + "/models/kjv-moe");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_ = new ModelDir(*std::move(dir));
    auto stack = expert_worker::ExpertStack::Load(*dir_, nullptr, {.cache_per_layer = 2});
    ASSERT_TRUE(stack.ok()) << stack.status();
    stack_ = stack->release();
    backend_ = new expert_worker::InProcessBackend(&stack_->cache());
  }
  static void TearDownTestSuite() {
    delete backend_;
    delete stack_;
    delete dir_;
  }

  std::unique_ptr<MixtralModel> Model(ExpertBackend* backend) {
    auto dense = DenseWeights::Load(*dir_->checkpoint, dir_->config);
    EXPECT_TRUE(dense.ok()) << dense.status();
    auto model = MixtralModel::Create(dir_->config, *std::move(dense), backend);
    EXPECT_TRUE(model.ok()) << model.status();
    return *std::move(model);
  }

  static GenerateOptions Options(float temperature) {
    GenerateOptions options;
    options.max_new_tokens = 24;
    options.stop_at_eos = false;
    options.sampling.temperature = temperature;
    options.sampling.seed = 7;
    return options;
  }

  static inline ModelDir* dir_;
  static inline expert_worker::ExpertStack* stack_;
  static inline expert_worker::InProcessBackend* backend_;
  const std::vector<int> prompt_ = {1, 400, 23, 77, 5};
};

TEST_F(LayerRedoTest, RedoneLayerStepsGiveTheUndisturbedTokensGreedyAndSeeded) {
  for (float temperature : {0.0f, 0.9f}) {
    SCOPED_TRACE(temperature);
    auto plain = Model(backend_);
    auto undisturbed = Generate(*plain, prompt_, Options(temperature), nullptr);
    ASSERT_TRUE(undisturbed.ok()) << undisturbed.status();

    FlakyBackend flaky(backend_);
    // In the prefill (call 1), mid-decode, twice in a row on one layer, and late.
    flaky.fail_calls = {1, 17, 40, 41, 90};
    auto model = Model(&flaky);
    auto redone = Generate(*model, prompt_, Options(temperature), nullptr);
    ASSERT_TRUE(redone.ok()) << redone.status();
    EXPECT_EQ(redone->tokens, undisturbed->tokens);
    EXPECT_EQ(flaky.recoveries, 5);
  }
}

TEST_F(LayerRedoTest, PastTheGraceTheGenerationFailsUnavailableAndFreesItsCache) {
  FlakyBackend flaky(backend_);
  flaky.fail_calls = {30};
  flaky.recovery = absl::UnavailableError("no expert worker answered within the grace");
  auto model = Model(&flaky);
  int tokens = 0;
  auto result = Generate(*model, prompt_, Options(0.0f), [&](int) { return ++tokens, true; });
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable) << result.status();
  EXPECT_GT(tokens, 0);
  EXPECT_LT(tokens, 24);
  EXPECT_EQ(KvCache::LiveCaches(), 0);
  EXPECT_EQ(KvCache::LiveBytes(), 0);
}

TEST_F(LayerRedoTest, ACancelWhileWaitingForTheWorkerEndsTheGenerationCancelled) {
  FlakyBackend flaky(backend_);
  flaky.fail_calls = {10};
  auto model = Model(&flaky);
  GenerateOptions options = Options(0.0f);
  bool cancel = false;
  options.cancelled = [&] { return cancel; };
  flaky.on_wait = [&] { cancel = true; };  // the client goes away during the wait
  auto result = Generate(*model, prompt_, options, nullptr);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled) << result.status();
  EXPECT_EQ(flaky.recoveries, 1);
  EXPECT_EQ(KvCache::LiveCaches(), 0);
}

TEST_F(LayerRedoTest, ABackendThatNeverRecoversIsNotRetriedForever) {
  // Answers "recovered" but keeps failing: the layer gives up after a few redos.
  FlakyBackend flaky(backend_);
  for (int i = 0; i < 100; ++i) flaky.fail_calls.insert(i);
  auto model = Model(&flaky);
  auto result = Generate(*model, prompt_, Options(0.0f), nullptr);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_LE(flaky.recoveries, 10);
}

// Generations sharing a BatchScheduler's steps, all submitted at once; the results in
// request order. `cancelled[i]`, when set, is stream i's cancellation.
std::vector<absl::StatusOr<GenerationResult>> RunTogether(
    const MixtralModel& model, const std::vector<std::vector<int>>& prompts,
    const std::vector<GenerateOptions>& options) {
  auto scheduler = BatchScheduler::Create(&model, {64});
  EXPECT_TRUE(scheduler.ok()) << scheduler.status();
  std::vector<absl::StatusOr<GenerationResult>> results(prompts.size(),
                                                        absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < prompts.size(); ++i) {
    threads.emplace_back([&, i] {
      GenerateOptions o = options[i];
      o.scheduler = scheduler->get();
      results[i] = Generate(model, prompts[i], o, nullptr);
    });
  }
  for (std::thread& t : threads) t.join();
  return results;
}

class BatchedRedoTest : public LayerRedoTest {
 protected:
  BatchedRedoTest() {
    for (int i = 0; i < 4; ++i) {
      prompts_.push_back({1, 400 + 17 * i, 23, 77 + i, 5});
      prompts_.back().resize(5 + 3 * i, 99);
      options_.push_back(Options(i % 2 == 0 ? 0.0f : 0.9f));
      options_.back().sampling.seed = 7 + i;
    }
  }
  // Each alone on the undisturbed backend.
  std::vector<GenerationResult> Undisturbed() {
    auto plain = Model(backend_);
    std::vector<GenerationResult> solo;
    for (size_t i = 0; i < prompts_.size(); ++i) {
      auto result = Generate(*plain, prompts_[i], options_[i], nullptr);
      EXPECT_TRUE(result.ok()) << result.status();
      solo.push_back(result.ok() ? *result : GenerationResult{});
    }
    return solo;
  }
  std::vector<std::vector<int>> prompts_;
  std::vector<GenerateOptions> options_;
};

TEST_F(BatchedRedoTest, ARedoneStepIsRedoneForTheWholeBatchAndEveryStreamKeepsItsTokens) {
  const std::vector<GenerationResult> solo = Undisturbed();
  FlakyBackend flaky(backend_);
  flaky.fail_calls = {2, 9, 10, 30, 45};
  auto model = Model(&flaky);
  const auto batched = RunTogether(*model, prompts_, options_);
  for (size_t i = 0; i < prompts_.size(); ++i) {
    SCOPED_TRACE(i);
    ASSERT_TRUE(batched[i].ok()) << batched[i].status();
    EXPECT_EQ(batched[i]->tokens, solo[i].tokens);
  }
  EXPECT_EQ(flaky.recoveries, 5);
  EXPECT_GT(flaky.max_rows, 5);  // the streams did share steps
  EXPECT_EQ(KvCache::LiveCaches(), 0);
}

TEST_F(BatchedRedoTest, AStreamCancelledWhileItsBatchWaitsForTheWorkerEndsAlone) {
  const std::vector<GenerationResult> solo = Undisturbed();
  FlakyBackend flaky(backend_);
  flaky.fail_calls = {12};
  std::atomic<bool> cancel{false};
  options_[2].cancelled = [&] { return cancel.load(); };
  flaky.on_wait = [&] { cancel = true; };  // stream 2's client leaves during the wait
  auto model = Model(&flaky);
  const auto batched = RunTogether(*model, prompts_, options_);
  EXPECT_EQ(batched[2].status().code(), absl::StatusCode::kCancelled) << batched[2].status();
  for (int i : {0, 1, 3}) {
    SCOPED_TRACE(i);
    ASSERT_TRUE(batched[i].ok()) << batched[i].status();
    EXPECT_EQ(batched[i]->tokens, solo[i].tokens);
  }
  EXPECT_EQ(flaky.recoveries, 1);
  EXPECT_EQ(KvCache::LiveCaches(), 0);
}

TEST_F(BatchedRedoTest, PastTheGraceEveryStreamOfTheStepFailsUnavailable) {
  FlakyBackend flaky(backend_);
  for (int i = 20; i < 200; ++i) flaky.fail_calls.insert(i);
  flaky.recovery = absl::UnavailableError("no expert worker answered within the grace");
  auto model = Model(&flaky);
  const auto batched = RunTogether(*model, prompts_, options_);
  for (const auto& result : batched) {
    EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable) << result.status();
  }
  EXPECT_EQ(KvCache::LiveCaches(), 0);
}

}  // namespace
}  // namespace moe::coordinator
