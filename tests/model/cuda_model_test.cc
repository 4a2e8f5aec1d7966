// The coordinator half on CUDA against the CPU: the bundled model and its 4/3 HQQ
// conversion give the CPU's logits within tolerance (prefill and decode through the KV
// cache) and the same greedy tokens. SKIPPED where no CUDA device can be opened.
#include <cmath>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/backend/device.h"
#include "coordinator/generator.h"
#include "coordinator/kv_cache.h"
#include "coordinator/mixtral_model.h"
#include "gtest/gtest.h"
#include "tools/cli/local_engine.h"

namespace moe {
namespace {

namespace fs = std::filesystem;
using coordinator::KvCache;
using coordinator::MixtralModel;

const fs::path kBundled = fs::path(MOE_SOURCE_DIR) / "models" / "kjv-moe";
const fs::path kConverted43 = fs::path(MOE_BINARY_DIR) / "converted" / "hqq_4_3";

// fp32 on both sides; only summation order (cuBLAS, reductions) differs.
constexpr double kLogitTolerance = 1e-3;

// Why CUDA cannot run here, or "" when it can.
std::string CudaUnavailableReason() {
  auto device = backend::OpenDevice("cuda");
  if (device.ok()) return "";
  if (absl::IsUnavailable(device.status()) || absl::IsUnimplemented(device.status())) {
    return std::string(device.status().message());
  }
  ADD_FAILURE() << "OpenDevice(\"cuda\") failed unexpectedly: " << device.status();
  return "error";
}

#define SKIP_WITHOUT_CUDA()                                                   \
  do {                                                                        \
    const std::string reason = CudaUnavailableReason();                       \
    if (!reason.empty()) GTEST_SKIP() << "no CUDA device: " << reason;        \
  } while (0)

std::unique_ptr<LocalEngine> Open(const fs::path& dir, const std::string& device) {
  EngineOptions options;
  options.device = device;
  options.context_tokens = 256;
  auto engine = LocalEngine::Open(dir.string(), options);
  EXPECT_TRUE(engine.ok()) << device << ": " << engine.status();
  return engine.ok() ? *std::move(engine) : nullptr;
}

std::vector<int> Prompt(int64_t vocab) {
  std::vector<int> ids = {1, 415, 28705, 17, 302, 13, 28, 99, 5, 400, 1200, 77, 3, 250};
  for (int& id : ids) id %= vocab;
  return ids;
}

// Every row's logits of half the prompt in one pass, then the rest one token at a time.
std::vector<float> PrefillThenDecode(LocalEngine& engine, const std::vector<int>& tokens) {
  MixtralModel& model = engine.model();
  auto cache = model.NewCache(tokens.size());
  EXPECT_TRUE(cache.ok()) << cache.status();
  if (!cache.ok()) return {};
  std::vector<float> all, logits;
  const size_t half = tokens.size() / 2;
  absl::Status s = model.Forward(absl::MakeConstSpan(tokens).first(half), **cache,
                                 MixtralModel::Logits::kAll, &logits);
  EXPECT_TRUE(s.ok()) << s;
  all = logits;
  for (size_t t = half; t < tokens.size() && s.ok(); ++t) {
    s = model.Forward(absl::MakeConstSpan(&tokens[t], 1), **cache, MixtralModel::Logits::kLast,
                      &logits);
    EXPECT_TRUE(s.ok()) << s;
    all.insert(all.end(), logits.begin(), logits.end());
  }
  return all;
}

double RelativeMaxError(const std::vector<float>& actual, const std::vector<float>& expected) {
  double max_err = 0, max_ref = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    max_err = std::max(max_err, double(std::fabs(actual[i] - expected[i])));
    max_ref = std::max(max_ref, double(std::fabs(expected[i])));
  }
  return max_ref > 0 ? max_err / max_ref : max_err;
}

std::vector<int> Greedy(LocalEngine& engine, const std::vector<int>& prompt, int tokens) {
  coordinator::GenerateOptions options;
  options.max_new_tokens = tokens;
  options.sampling.temperature = 0;
  options.stop_at_eos = false;
  auto result = coordinator::Generate(engine.model(), prompt, options, nullptr);
  EXPECT_TRUE(result.ok()) << result.status();
  return result.ok() ? result->tokens : std::vector<int>();
}

void ExpectCudaMatchesCpu(const fs::path& dir) {
  auto cpu = Open(dir, "cpu");
  auto cuda = Open(dir, "cuda");
  ASSERT_TRUE(cpu && cuda);
  EXPECT_EQ(cuda->device().kind(), backend::DeviceKind::kCuda);
  const std::vector<int> prompt = Prompt(cpu->config().vocab_size);
  const std::vector<float> expected = PrefillThenDecode(*cpu, prompt);
  const std::vector<float> actual = PrefillThenDecode(*cuda, prompt);
  ASSERT_EQ(actual.size(), expected.size());
  EXPECT_LT(RelativeMaxError(actual, expected), kLogitTolerance) << dir;
  EXPECT_EQ(Greedy(*cuda, prompt, 24), Greedy(*cpu, prompt, 24)) << dir;
}

TEST(CudaModelTest, BundledModelGivesTheCpuLogitsAndGreedyTokens) {
  SKIP_WITHOUT_CUDA();
  ExpectCudaMatchesCpu(kBundled);
}

TEST(CudaModelTest, FourThreeConvertedModelGivesTheCpuLogitsAndGreedyTokens) {
  SKIP_WITHOUT_CUDA();
  ExpectCudaMatchesCpu(kConverted43);
}

TEST(CudaModelTest, SpeculationAndConcurrentPassesOnTheDeviceKeepTheLogits) {
  SKIP_WITHOUT_CUDA();
  auto cuda = Open(kBundled, "cuda");
  ASSERT_NE(cuda, nullptr);
  const std::vector<int> prompt = Prompt(cuda->config().vocab_size);
  const std::vector<float> plain = PrefillThenDecode(*cuda, prompt);
  cuda->model().set_speculation({2, 2});
  std::vector<float> a, b;
  std::thread other([&] { b = PrefillThenDecode(*cuda, prompt); });
  a = PrefillThenDecode(*cuda, prompt);
  other.join();
  // Speculation and a concurrent pass on its own stream change nothing (beyond what a
  // kernel with a run-dependent reduction order might).
  ASSERT_EQ(a.size(), plain.size());
  ASSERT_EQ(b.size(), plain.size());
  EXPECT_LT(RelativeMaxError(a, plain), 1e-5);
  EXPECT_LT(RelativeMaxError(b, plain), 1e-5);
  EXPECT_GT(cuda->model().speculation_stats().hinted, 0u);
}

TEST(CudaModelTest, AHostCacheIsRefusedByADeviceModel) {
  SKIP_WITHOUT_CUDA();
  auto cuda = Open(kBundled, "cuda");
  ASSERT_NE(cuda, nullptr);
  KvCache host_cache(cuda->config(), 4);
  std::vector<float> logits;
  const int token[1] = {1};
  const absl::Status s =
      cuda->model().Forward(token, host_cache, MixtralModel::Logits::kLast, &logits);
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
}

}  // namespace
}  // namespace moe
