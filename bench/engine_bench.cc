// Prefill and decode throughput of the in-process CPU engine, for every combination of
// thread count and matmul implementation asked for, interleaved round by round so that
// a noisy shared machine affects all of them alike. Prints one JSON object per
// configuration (median over rounds) and the ratios between them.
//
//   engine_bench --model models/kjv-moe --text-file models/kjv-moe/heldout.txt \
//       --prompt-tokens 128 --decode-tokens 128 --threads 1,2 --matmul blas,loops --rounds 5
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/backend/cpu/cpu_kernels.h"
#include "common/command_line.h"
#include "common/status.h"
#include "coordinator/kv_cache.h"
#include "tools/cli/local_engine.h"

ABSL_FLAG(std::string, model, "models/kjv-moe", "Model directory");
ABSL_FLAG(std::string, text_file, "", "Text whose tokens make the prompt (default: heldout.txt in the model dir)");
ABSL_FLAG(int, prompt_tokens, 128, "Prompt length for prefill");
ABSL_FLAG(int, decode_tokens, 128, "Tokens decoded one at a time after the prompt");
ABSL_FLAG(std::string, threads, "1,2", "Comma-separated thread counts");
ABSL_FLAG(std::string, matmul, "blas,loops", "Comma-separated matmul implementations");
ABSL_FLAG(int, rounds, 5, "Rounds; each runs every configuration once");

namespace moe {
namespace {

using Clock = std::chrono::steady_clock;
using coordinator::MixtralModel;

struct Config {
  int threads;
  cpu::MatmulImpl matmul;
  std::vector<double> prefill, decode;  // tokens/s per round
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

absl::StatusOr<std::vector<int>> PromptTokens(const LocalEngine& engine, int count) {
  std::string path = absl::GetFlag(FLAGS_text_file);
  if (path.empty()) path = engine.dir().path + "/heldout.txt";
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream text;
  text << in.rdbuf();
  MOE_ASSIGN_OR_RETURN(auto tokenizer, engine.dir().LoadTokenizer());
  MOE_ASSIGN_OR_RETURN(auto ids, tokenizer->Encode(text.str().substr(0, 64 * count), true));
  if (int(ids.size()) < count) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": too short for ", count, " tokens"));
  }
  ids.resize(count);
  return ids;
}

// The process's peak resident set (VmHWM), in MiB (as every _mb figure here): weights, KV
// cache and scratch together.
double StatusMb(const char* key) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(key, 0) == 0) return std::strtod(line.c_str() + std::strlen(key), nullptr) / 1024.0;
  }
  return 0;
}
double PeakRssMb() { return StatusMb("VmHWM:"); }

// Bytes of the weights as the model directory stores them (a converted model's dense.bin
// and experts.bin, or a checkpoint's safetensors files): what resident memory is
// compared with (issue 14: at most 1.15x these plus the KV cache).
int64_t StoredWeightBytes(const std::string& dir) {
  int64_t bytes = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_regular_file(ec) &&
        (name == "dense.bin" || name == "experts.bin" || absl::EndsWith(name, ".safetensors"))) {
      bytes += int64_t(entry.file_size(ec));
    }
  }
  return bytes;
}

absl::Status Run() {
  // Resident before any weight: the program and its libraries (CUDA's are not among
  // them: the CUDA backend is a module loaded only for a CUDA device, cuda_module.h).
  const double baseline_mb = StatusMb("VmRSS:");
  MOE_ASSIGN_OR_RETURN(auto engine, LocalEngine::Open(absl::GetFlag(FLAGS_model)));
  const int n_prompt = absl::GetFlag(FLAGS_prompt_tokens);
  const int n_decode = absl::GetFlag(FLAGS_decode_tokens);
  MOE_ASSIGN_OR_RETURN(std::vector<int> prompt, PromptTokens(*engine, n_prompt));

  std::vector<Config> configs;
  for (absl::string_view m : absl::StrSplit(absl::GetFlag(FLAGS_matmul), ',')) {
    MOE_ASSIGN_OR_RETURN(cpu::MatmulImpl impl, cpu::ParseMatmulImpl(m));
    for (absl::string_view t : absl::StrSplit(absl::GetFlag(FLAGS_threads), ',')) {
      int threads;
      if (!absl::SimpleAtoi(t, &threads) || threads < 1) {
        return absl::InvalidArgumentError(absl::StrCat("--threads: bad count \"", t, "\""));
      }
      configs.push_back({threads, impl, {}, {}});
    }
  }

  MixtralModel& model = engine->model();
  std::vector<float> logits;
  for (int round = 0; round < absl::GetFlag(FLAGS_rounds); ++round) {
    for (Config& c : configs) {
      SetComputeThreads(c.threads);
      cpu::SetMatmulImpl(c.matmul);
      coordinator::KvCache cache(model.config(), n_prompt + n_decode);
      const auto t0 = Clock::now();
      MOE_RETURN_IF_ERROR(model.Forward(prompt, cache, MixtralModel::Logits::kLast, &logits));
      const auto t1 = Clock::now();
      // Greedy decode: the same tokens every round and configuration.
      for (int i = 0; i < n_decode; ++i) {
        const int next[1] = {static_cast<int>(cpu::ArgMax(logits.data(), logits.size()))};
        MOE_RETURN_IF_ERROR(model.Forward(next, cache, MixtralModel::Logits::kLast, &logits));
      }
      const auto t2 = Clock::now();
      c.prefill.push_back(n_prompt / std::chrono::duration<double>(t1 - t0).count());
      c.decode.push_back(n_decode / std::chrono::duration<double>(t2 - t1).count());
    }
  }

  const double weight_mb = double(StoredWeightBytes(engine->dir().path)) / (1 << 20);
  const double kv_mb =
      double(coordinator::KvCache::Bytes(model.config(), n_prompt + n_decode)) / (1 << 20);
  for (const Config& c : configs) {
    std::printf(
        "{\"bench\": \"engine\", \"model\": \"%s\", \"threads\": %d, \"matmul\": \"%s\", "
        "\"prompt_tokens\": %d, \"decode_tokens\": %d, \"rounds\": %zu, "
        "\"prefill_tokens_per_s\": %.1f, \"decode_tokens_per_s\": %.1f, "
        "\"peak_rss_mb\": %.1f, \"weight_mb\": %.1f, \"kv_mb\": %.1f, "
        "\"rss_over_weights_and_kv\": %.3f, \"baseline_rss_mb\": %.1f, "
        "\"rss_above_baseline_over_weights_and_kv\": %.3f}\n",
        engine->dir().path.c_str(), c.threads, std::string(cpu::MatmulImplName(c.matmul)).c_str(),
        n_prompt, n_decode, c.prefill.size(), Median(c.prefill), Median(c.decode),
        PeakRssMb(), weight_mb, kv_mb, PeakRssMb() / (weight_mb + kv_mb), baseline_mb,
        (PeakRssMb() - baseline_mb) / (weight_mb + kv_mb));
  }
  const Config& base = configs.front();
  for (size_t i = 1; i < configs.size(); ++i) {
    const Config& c = configs[i];
    std::printf("{\"ratio\": \"%s/%dt over %s/%dt\", \"prefill\": %.2f, \"decode\": %.2f}\n",
                std::string(cpu::MatmulImplName(c.matmul)).c_str(), c.threads,
                std::string(cpu::MatmulImplName(base.matmul)).c_str(), base.threads,
                Median(c.prefill) / Median(base.prefill), Median(c.decode) / Median(base.decode));
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace moe

int main(int argc, char** argv) {
  moe::ParseFlags(argc, argv);
  return moe::ExitCode("engine_bench", moe::Run());
}
