// `moe bench`: decode speed and cache figures of one scheduler variant over a text, the
// measurement behind the paper's ablation (full / no-prefetch / no-cache / naive).
#ifndef MOE_TOOLS_CLI_OFFLOAD_BENCH_H_
#define MOE_TOOLS_CLI_OFFLOAD_BENCH_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"
#include "tools/cli/local_engine.h"

namespace moe {

// The four scheduler variants:
//   full:        the cache policy plus speculative prefetch;
//   no-prefetch: the cache policy only;
//   no-cache:    every used expert loaded on demand, nothing kept;
//   naive:       every expert of the layer loaded for each token (layer offloading).
enum class BenchVariant { kFull, kNoPrefetch, kNoCache, kNaive };
absl::StatusOr<BenchVariant> ParseBenchVariant(absl::string_view name);
absl::string_view BenchVariantName(BenchVariant variant);

struct BenchOptions {
  std::string model;
  std::string text_file;        // decoded teacher-forced: token t+1 is fed whatever came out
  int max_tokens = 256;         // decode steps (at most the text's tokens - 1)
  // The in-process worker's cache (retention is the variant's); no size given: a quarter
  // of the experts (the paper's setting), at least 1.
  expert_worker::ExpertStackOptions experts;
  int lookahead = 1;            // full only
  int prefetch_experts = 2;     // full only
  std::string worker;           // set: a running moe-expert-worker (full / no-prefetch only)
  int warmup_tokens = 16;       // decoded first and not counted
  std::string device = "cpu";   // EngineOptions::device, vram_budget_gib
  double vram_budget_gib = 0;
};

// One run of `variant`: a JSON object with decode_tokens_per_s, hit_ratio,
// prefetch_recall, prefetch_precision, bytes_copied, stall_s and the settings.
absl::StatusOr<nlohmann::json> RunOffloadBench(const BenchOptions& options, BenchVariant variant);

}  // namespace moe

#endif  // MOE_TOOLS_CLI_OFFLOAD_BENCH_H_
