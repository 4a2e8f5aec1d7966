// CheckGenerateRequest (declared in generator.h) in a file of its own: it needs nothing
// but the config and the sampler's checks, so tests/fuzz builds it without the model.
#include "absl/strings/str_cat.h"
#include "coordinator/generator.h"

namespace moe::coordinator {

absl::Status CheckGenerateRequest(const ModelConfig& config, int64_t prompt_tokens,
                                  const GenerateOptions& options) {
  const int64_t context = config.max_position_embeddings;
  if (prompt_tokens < 1) return absl::InvalidArgumentError("the prompt is empty");
  if (options.max_new_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_new_tokens must be at least 1, got ", options.max_new_tokens));
  }
  if (prompt_tokens >= context) {
    return absl::InvalidArgumentError(absl::StrCat("the prompt has ", prompt_tokens,
                                                   " tokens; the context holds ", context));
  }
  if (prompt_tokens + options.max_new_tokens > context) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt (", prompt_tokens, " tokens) plus max_new_tokens (", options.max_new_tokens,
        ") exceeds the context of ", context, " tokens"));
  }
  return options.sampling.Validate();
}

}  // namespace moe::coordinator
