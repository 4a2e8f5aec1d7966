// libFuzzer target: the coordinator's request check (CheckGenerateRequest, which every
// Generate passes) on arbitrary prompt lengths, token limits, contexts and sampling
// parameters (NaN and infinities included). It must never crash; what it accepts must
// fit the context and be safe to sample with: the sampler then picks an in-range token
// from arbitrary finite logits.
#include <fuzzer/FuzzedDataProvider.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "coordinator/generator.h"
#include "coordinator/sampler.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

// Any float, NaN and infinities included (the wire carries raw IEEE bits).
float AnyFloat(FuzzedDataProvider& in) {
  const uint32_t bits = in.ConsumeIntegral<uint32_t>();
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  moe::ModelConfig config;
  config.max_position_embeddings = in.ConsumeIntegralInRange<int64_t>(1, int64_t{1} << 24);
  // A prompt's length is a vector's size, the token limit a uint32 on the wire that
  // the service narrows to int: cover every int.
  const int64_t prompt_tokens = in.ConsumeIntegralInRange<int64_t>(0, int64_t{1} << 32);
  moe::coordinator::GenerateOptions options;
  options.max_new_tokens = in.ConsumeIntegral<int>();
  options.sampling.temperature = AnyFloat(in);
  options.sampling.top_p = AnyFloat(in);
  options.sampling.top_k = in.ConsumeIntegral<int>();
  options.sampling.seed = in.ConsumeIntegral<uint64_t>();

  const absl::Status status = moe::coordinator::CheckGenerateRequest(config, prompt_tokens, options);
  if (!status.ok()) {
    FUZZ_CHECK(status.code() == absl::StatusCode::kInvalidArgument);
    FUZZ_CHECK(!status.message().empty());
    return 0;
  }
  FUZZ_CHECK(prompt_tokens >= 1 && options.max_new_tokens >= 1);
  FUZZ_CHECK(prompt_tokens + options.max_new_tokens <= config.max_position_embeddings);
  const auto& s = options.sampling;
  FUZZ_CHECK(std::isfinite(s.temperature) && s.temperature >= 0);
  FUZZ_CHECK(s.top_p > 0 && s.top_p <= 1 && s.top_k >= 0);

  // Accepted parameters must be safe to sample with.
  const size_t vocab = in.ConsumeIntegralInRange<size_t>(1, 64);
  std::vector<float> logits(vocab);
  for (float& l : logits) l = in.ConsumeFloatingPointInRange<float>(-1e4f, 1e4f);
  moe::coordinator::Sampler sampler(s);
  for (int i = 0; i < 3; ++i) {
    const int token = sampler.Sample(logits);
    FUZZ_CHECK(token >= 0 && size_t(token) < vocab);
  }
  return 0;
}
