// What the process split costs: greedy decode with the experts linked in against the
// same decode with the experts in a running moe-expert-worker, interleaved round by
// round, plus the per-layer RunExperts round trip and how much of it is the worker's
// own work. Prints one JSON object. bench/run_split_bench.sh starts the worker.
//
//   split_bench --model models/kjv-moe --worker unix:/tmp/moe-bench-worker.sock
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "common/backend/cpu/cpu_kernels.h"
#include "common/command_line.h"
#include "common/status.h"
#include "tools/cli/local_engine.h"

ABSL_FLAG(std::string, model, "models/kjv-moe", "Model directory");
ABSL_FLAG(std::string, worker, "unix:/tmp/moe-bench-worker.sock", "A running moe-expert-worker");
ABSL_FLAG(bool, inline_tensors, false, "Carry tensors inside the RPCs instead of the arena");
ABSL_FLAG(int, prompt_tokens, 32, "Prompt length");
ABSL_FLAG(int, decode_tokens, 128, "Tokens decoded per round");
ABSL_FLAG(int, rounds, 5, "Rounds (each runs both modes)");

namespace moe {
namespace {

using coordinator::MixtralModel;

// Seconds per decoded token for a greedy decode after a fixed prompt.
absl::StatusOr<double> DecodeSecondsPerToken(MixtralModel& model, int prompt_len, int n) {
  std::vector<int> prompt(prompt_len);
  for (int i = 0; i < prompt_len; ++i) prompt[i] = 3 + (i * 37) % int(model.config().vocab_size - 3);
  prompt[0] = static_cast<int>(model.config().bos_token_id);
  coordinator::KvCache cache(model.config(), prompt_len + n);
  std::vector<float> logits;
  MOE_RETURN_IF_ERROR(model.Forward(prompt, cache, MixtralModel::Logits::kLast, &logits));
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < n; ++i) {
    const int next[1] = {static_cast<int>(cpu::ArgMax(logits.data(), logits.size()))};
    MOE_RETURN_IF_ERROR(model.Forward(next, cache, MixtralModel::Logits::kLast, &logits));
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / n;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

absl::Status Run() {
  const std::string model_dir = absl::GetFlag(FLAGS_model);
  MOE_ASSIGN_OR_RETURN(auto local, LocalEngine::Open(model_dir, EngineOptions{}));
  EngineOptions remote_options;
  remote_options.worker_address = absl::GetFlag(FLAGS_worker);
  remote_options.force_inline = absl::GetFlag(FLAGS_inline_tensors);
  MOE_ASSIGN_OR_RETURN(auto remote, LocalEngine::Open(model_dir, remote_options));
  if (!remote->worker()->WorkerServing(absl::Seconds(2))) {
    return absl::UnavailableError(absl::StrCat("no worker answers at ", remote_options.worker_address));
  }
  const int p = absl::GetFlag(FLAGS_prompt_tokens), n = absl::GetFlag(FLAGS_decode_tokens);
  MOE_RETURN_IF_ERROR(DecodeSecondsPerToken(remote->model(), p, 8).status());  // warm-up: attach
  std::vector<double> in_process, two_process;
  double rpc_s = 0, worker_s = 0;
  uint64_t calls = 0;
  for (int round = 0; round < absl::GetFlag(FLAGS_rounds); ++round) {
    MOE_ASSIGN_OR_RETURN(double a, DecodeSecondsPerToken(local->model(), p, n));
    const auto before = remote->worker()->Stats();
    MOE_ASSIGN_OR_RETURN(double b, DecodeSecondsPerToken(remote->model(), p, n));
    const auto after = remote->worker()->Stats();
    in_process.push_back(a);
    two_process.push_back(b);
    rpc_s += after.rpc_seconds - before.rpc_seconds;
    worker_s += after.worker_seconds - before.worker_seconds;
    calls += after.calls - before.calls;
  }
  const double a = Median(in_process), b = Median(two_process);
  std::printf(
      "{\"bench\": \"split\", \"model\": \"%s\", \"worker\": \"%s\", \"transport\": \"%s\", "
      "\"decode_tokens\": %d, \"rounds\": %zu, \"in_process_ms_per_token\": %.4f, "
      "\"two_process_ms_per_token\": %.4f, \"two_process_over_in_process\": %.2f, "
      "\"rpc_round_trip_us\": %.1f, \"worker_work_us\": %.1f, \"rpc_overhead_us\": %.1f}\n",
      model_dir.c_str(), remote_options.worker_address.c_str(),
      remote->worker()->zero_copy() ? "arena" : "inline", n, in_process.size(), a * 1e3, b * 1e3,
      b / a, rpc_s / calls * 1e6, worker_s / calls * 1e6, (rpc_s - worker_s) / calls * 1e6);
  return absl::OkStatus();
}

}  // namespace
}  // namespace moe

int main(int argc, char** argv) {
  moe::ParseFlags(argc, argv);
  return moe::ExitCode("split_bench", moe::Run());
}
