#include "coordinator/generator.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace moe::coordinator {

absl::string_view FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kEos: return "eos";
    case FinishReason::kLength: return "length";
    case FinishReason::kStopped: return "stopped";
  }
  return "?";
}

absl::StatusOr<GenerationResult> Generate(const MixtralModel& model,
                                          absl::Span<const int> prompt,
                                          const GenerateOptions& options,
                                          const TokenCallback& on_token) {
  const ModelConfig& c = model.config();
  MOE_RETURN_IF_ERROR(CheckGenerateRequest(c, static_cast<int64_t>(prompt.size()), options));

  using Clock = std::chrono::steady_clock;
  GenerationResult result;
  result.prompt_tokens = static_cast<int>(prompt.size());
  const int64_t capacity = static_cast<int64_t>(prompt.size()) + options.max_new_tokens;
  if (capacity > model.max_context_tokens()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt of ", prompt.size(), " tokens + max_new_tokens ", options.max_new_tokens,
        " exceed the context limit of ", model.max_context_tokens(), " tokens"));
  }
  // On the model's device; freed when the generation ends, whatever the reason.
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<KvCache> owned_cache, model.NewCache(capacity));
  KvCache& cache = *owned_cache;
  Sampler sampler(options.sampling);
  std::vector<float> logits;

  auto step = [&](absl::Span<const int> tokens, ForwardStats* stats) {
    const std::function<absl::Status()> forward = [&] {
      return model.Forward(tokens, cache, MixtralModel::Logits::kLast, &logits, options.cancelled,
                           stats);
    };
    return options.run_step ? options.run_step(forward) : forward();
  };
  auto t0 = Clock::now();
  MOE_RETURN_IF_ERROR(step(prompt, &result.prefill_stats));
  auto t1 = Clock::now();
  result.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();

  while (true) {
    const int token = sampler.Sample(logits);
    result.tokens.push_back(token);
    const bool keep_going = on_token ? on_token(token) : true;
    if (options.stop_at_eos && token == c.eos_token_id) {
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
    const int next[1] = {token};
    MOE_RETURN_IF_ERROR(step(next, &result.decode_stats));
  }
  result.decode_seconds = std::chrono::duration<double>(Clock::now() - t1).count();
  return result;
}

}  // namespace moe::coordinator
