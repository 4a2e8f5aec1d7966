// What the process split costs: greedy decode with the experts linked in against the
// same decode with the experts in a running moe-expert-worker, called by RPC and through
// the activation ring, interleaved round by round; plus the per-layer call as the
// coordinator sees it and how much of it is the worker's own work. Prints one JSON
// object. bench/run_split_bench.sh starts the worker. With --rows N, N streams decode
// together (one forward pass of N rows per step, as the batch scheduler runs them), so
// a step's cost splits into the kernels (in-process) and the data plane (the rest).
// Times are per decode step: one token per stream (ms_per_step; with one row, per token).
//
//   split_bench --model models/kjv-moe --worker unix:/tmp/moe-bench-worker.sock [--rows 32]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/backend/cpu/cpu_kernels.h"
#include "common/command_line.h"
#include "common/ring_wait_flags.h"
#include "common/status.h"
#include "tools/cli/local_engine.h"

ABSL_FLAG(std::string, model, "models/kjv-moe", "Model directory");
ABSL_FLAG(std::string, worker, "unix:/tmp/moe-bench-worker.sock", "A running moe-expert-worker");
ABSL_FLAG(bool, inline_tensors, false, "Carry tensors inside the RPCs instead of the arena");
ABSL_FLAG(int, prompt_tokens, 32, "Prompt length");
ABSL_FLAG(int, decode_tokens, 128, "Tokens decoded per round");
ABSL_FLAG(int, rounds, 5, "Rounds (each runs in-process, RPC and ring, the first of them in turn)");
ABSL_FLAG(std::string, device, "cpu",
          "Where the coordinator half (and the in-process engine) computes: cpu, cuda, cuda:N; "
          "with cuda and a worker on that GPU, RPC and ring calls cross by the CUDA IPC arena");
ABSL_FLAG(int, rows, 1, "Streams decoding together (rows of each decode pass)");

namespace moe {
namespace {

using coordinator::MixtralModel;

// Seconds per decode step of `rows` greedy streams stepping together (each one token per
// pass: MixtralModel::Forward over `rows` sequences, as the batch scheduler runs them),
// after a prompt of `prompt_len` tokens each (the streams' prompts differ).
// `expert_s`, if set, gets the experts' own seconds per step as the backend counted them.
absl::StatusOr<double> DecodeSecondsPerStep(MixtralModel& model, int prompt_len, int n, int rows,
                                            double* expert_s = nullptr) {
  const ModelConfig& c = model.config();
  std::vector<std::unique_ptr<coordinator::KvCache>> caches;
  std::vector<std::vector<float>> logits(rows);
  std::vector<int> next(rows);
  for (int r = 0; r < rows; ++r) {
    std::vector<int> prompt(prompt_len);
    for (int i = 0; i < prompt_len; ++i) prompt[i] = 3 + (i * 37 + r * 11) % int(c.vocab_size - 3);
    prompt[0] = static_cast<int>(c.bos_token_id);
    caches.push_back(std::make_unique<coordinator::KvCache>(c, prompt_len + n));
    MOE_RETURN_IF_ERROR(model.Forward(prompt, *caches[r], MixtralModel::Logits::kLast, &logits[r]));
  }
  std::vector<MixtralModel::Sequence> batch(rows);
  for (int r = 0; r < rows; ++r) {
    batch[r] = {absl::MakeConstSpan(&next[r], 1), caches[r].get(), MixtralModel::Logits::kLast,
                &logits[r]};
  }
  coordinator::ForwardStats stats;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < n; ++i) {
    for (int r = 0; r < rows; ++r) {
      next[r] = static_cast<int>(cpu::ArgMax(logits[r].data(), logits[r].size()));
    }
    MOE_RETURN_IF_ERROR(model.Forward(batch, nullptr, &stats));
  }
  if (expert_s != nullptr) *expert_s = stats.experts.worker_s() / n;
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / n;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// One two-process engine's figures over the rounds.
struct Split {
  std::unique_ptr<LocalEngine> engine;
  std::vector<double> seconds_per_token;
  double call_s = 0, worker_s = 0;
  uint64_t calls = 0, ring_calls = 0;
};

absl::Status Round(Split& split, int p, int n, int rows) {
  const auto before = split.engine->worker()->Stats();
  MOE_ASSIGN_OR_RETURN(double s, DecodeSecondsPerStep(split.engine->model(), p, n, rows));
  const auto after = split.engine->worker()->Stats();
  split.seconds_per_token.push_back(s);
  split.call_s += after.rpc_s - before.rpc_s;
  split.worker_s += after.worker_s() - before.worker_s();
  split.calls += after.calls - before.calls;
  split.ring_calls += after.ring_calls - before.ring_calls;
  return absl::OkStatus();
}

// Medians, and bests (the least disturbed round of each mode: on a shared machine the
// other tenants' load lands on some rounds and not others).
std::string Figures(const char* name, const Split& split, double in_process, double best_in_process) {
  const double b = Median(split.seconds_per_token);
  const double best = *std::min_element(split.seconds_per_token.begin(), split.seconds_per_token.end());
  const double calls = static_cast<double>(std::max<uint64_t>(split.calls, 1));
  return absl::StrFormat(
      "\"%s\": {\"ms_per_step\": %.4f, \"over_in_process\": %.3f, \"best_ms_per_step\": %.4f, "
      "\"best_over_best_in_process\": %.3f, \"call_us\": %.1f, "
      "\"worker_work_us\": %.1f, \"overhead_us\": %.1f, \"calls\": %d, \"ring_calls\": %d}",
      name, b * 1e3, b / in_process, best * 1e3, best / best_in_process,
      split.call_s / calls * 1e6, split.worker_s / calls * 1e6,
      (split.call_s - split.worker_s) / calls * 1e6, split.calls, split.ring_calls);
}

absl::Status Run() {
  MOE_ASSIGN_OR_RETURN(const ring::WaitOptions ring_wait, ring::WaitOptionsFromFlags());
  const std::string model_dir = absl::GetFlag(FLAGS_model);
  // The coordinator half of all three on --device (the worker's own is its flag).
  EngineOptions local_options;
  local_options.device = absl::GetFlag(FLAGS_device);
  MOE_ASSIGN_OR_RETURN(auto local, LocalEngine::Open(model_dir, local_options));
  EngineOptions rpc_options = local_options;
  rpc_options.worker_address = absl::GetFlag(FLAGS_worker);
  rpc_options.force_inline = absl::GetFlag(FLAGS_inline_tensors);
  rpc_options.use_ring = false;
  EngineOptions ring_options = rpc_options;
  ring_options.force_inline = false;
  ring_options.use_ring = true;
  ring_options.ring_wait = ring_wait;
  Split rpc, ring;
  MOE_ASSIGN_OR_RETURN(rpc.engine, LocalEngine::Open(model_dir, rpc_options));
  MOE_ASSIGN_OR_RETURN(ring.engine, LocalEngine::Open(model_dir, ring_options));
  if (!rpc.engine->worker()->WorkerServing(absl::Seconds(2))) {
    return absl::UnavailableError(absl::StrCat("no worker answers at ", rpc_options.worker_address));
  }
  const int p = absl::GetFlag(FLAGS_prompt_tokens), n = absl::GetFlag(FLAGS_decode_tokens);
  // Warm-up: attach (and, for the ring engine, start the worker's ring thread).
  MOE_RETURN_IF_ERROR(DecodeSecondsPerStep(rpc.engine->model(), p, 8, 1).status());
  MOE_RETURN_IF_ERROR(DecodeSecondsPerStep(ring.engine->model(), p, 8, 1).status());
  if (!ring.engine->worker()->ring_active()) {
    return absl::FailedPreconditionError("the worker does not serve the ring (is --ring off?)");
  }
  const int rows = absl::GetFlag(FLAGS_rows);
  if (rows < 1) return absl::InvalidArgumentError(absl::StrCat("--rows must be >= 1, got ", rows));
  std::vector<double> in_process, in_process_experts;
  // The three modes take turns at going first: on a shared machine the position in a
  // round matters (a burst of other work, a thread that has used its time slice).
  for (int round = 0; round < absl::GetFlag(FLAGS_rounds); ++round) {
    for (int turn = 0; turn < 3; ++turn) {
      switch ((round + turn) % 3) {
        case 0: {
          double experts = 0;
          MOE_ASSIGN_OR_RETURN(double a, DecodeSecondsPerStep(local->model(), p, n, rows, &experts));
          in_process.push_back(a);
          in_process_experts.push_back(experts);
          break;
        }
        case 1: MOE_RETURN_IF_ERROR(Round(rpc, p, n, rows)); break;
        default: MOE_RETURN_IF_ERROR(Round(ring, p, n, rows)); break;
      }
    }
  }
  const double a = Median(in_process);
  const double best_a = *std::min_element(in_process.begin(), in_process.end());
  std::printf(
      "{\"bench\": \"split\", \"model\": \"%s\", \"worker\": \"%s\", \"rpc_transport\": \"%s\", "
      "\"ring_wait\": \"%s\", \"ring_spin_us\": %.1f, \"rows\": %d, \"decode_tokens\": %d, \"rounds\": %zu, "
      "\"in_process_ms_per_step\": %.4f, \"best_in_process_ms_per_step\": %.4f, "
      "\"in_process_expert_ms_per_step\": %.4f, %s, %s}\n",
      model_dir.c_str(), rpc_options.worker_address.c_str(),
      rpc.engine->worker()->zero_copy() ? "arena" : "inline", ring_options.ring_wait.adaptive ? "adaptive" : "fixed",
      absl::ToDoubleMicroseconds(ring_options.ring_wait.spin), rows, n,
      in_process.size(), a * 1e3, best_a * 1e3, Median(in_process_experts) * 1e3, Figures("rpc", rpc, a, best_a).c_str(),
      Figures("ring", ring, a, best_a).c_str());
  return absl::OkStatus();
}

}  // namespace
}  // namespace moe

int main(int argc, char** argv) {
  moe::ParseFlags(argc, argv);
  return moe::ExitCode("split_bench", moe::Run());
}
