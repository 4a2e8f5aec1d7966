#include "coordinator/generator.h"

#include "common/status.h"
#include "coordinator/batch_scheduler.h"

namespace moe::coordinator {

absl::StatusOr<GenerationResult> Generate(const MixtralModel& model,
                                          absl::Span<const int> prompt,
                                          const GenerateOptions& options,
                                          const TokenCallback& on_token) {
  if (options.scheduler != nullptr) {
    if (&options.scheduler->model() != &model) {
      return absl::InvalidArgumentError("Generate: the scheduler serves another model");
    }
    return options.scheduler->Generate(prompt, options, on_token);
  }
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<BatchScheduler> alone,
                       BatchScheduler::Create(&model, BatchSchedulerOptions{}));
  return alone->Generate(prompt, options, on_token);
}

}  // namespace moe::coordinator
