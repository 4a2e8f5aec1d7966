// The generation loop: prefill the prompt, then decode one token at a time until EOS,
// the token limit or a stop requested by the caller. It runs in a BatchScheduler's
// steps (batch_scheduler.h), shared with the scheduler's other generations.
#ifndef MOE_COORDINATOR_GENERATOR_H_
#define MOE_COORDINATOR_GENERATOR_H_

#include <functional>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "coordinator/mixtral_model.h"
#include "coordinator/sampler.h"

namespace moe::coordinator {

class BatchScheduler;

struct GenerateOptions {
  int max_new_tokens = 64;
  SamplingParams sampling;
  bool stop_at_eos = true;
  // Asked before every layer step (on the scheduler's thread); true ends the
  // generation with CANCELLED.
  std::function<bool()> cancelled;
  // The scheduler whose steps carry the generation (it must serve the same model).
  // Null: a scheduler of its own, for this generation alone.
  BatchScheduler* scheduler = nullptr;
};

// Printed as "eos", "length" and "stop" (FinishReasonName in generation_service.h).
enum class FinishReason { kEos, kLength, kStopped };

struct GenerationResult {
  std::vector<int> tokens;  // new tokens, EOS included when it ended the generation
  FinishReason finish_reason = FinishReason::kLength;
  int prompt_tokens = 0;
  double prefill_seconds = 0;  // from the call to the first token
  double decode_seconds = 0;   // every later token
  // Figures of the passes that carried the prompt, and of every later pass. A pass
  // shared with other generations counts whole for each of them.
  ForwardStats prefill_stats;
  ForwardStats decode_stats;
};

// Receives each new token as it is chosen; returning false stops the generation.
using TokenCallback = std::function<bool(int token)>;

// Checks a prompt of `prompt_tokens` tokens and `options` against the model: a
// non-empty prompt, max_new_tokens >= 1, prompt and prompt + max_new_tokens within the
// context, valid sampling parameters. INVALID_ARGUMENT naming the problem otherwise.
absl::Status CheckGenerateRequest(const ModelConfig& config, int64_t prompt_tokens,
                                  const GenerateOptions& options);

// CheckGenerateRequest, then generates in options.scheduler's steps (token ids are
// checked before the first step). `on_token` runs on the calling thread.
absl::StatusOr<GenerationResult> Generate(const MixtralModel& model,
                                          absl::Span<const int> prompt,
                                          const GenerateOptions& options,
                                          const TokenCallback& on_token);

}  // namespace moe::coordinator

#endif  // MOE_COORDINATOR_GENERATOR_H_
