// `moe`: generate text, dump logits and describe a model, all in one process.
//
//   moe generate --model DIR --prompt TEXT [--chat] [--max-new-tokens N]
//                [--temperature T] [--top-p P] [--top-k K] [--seed S]
//   moe logits   --model DIR --tokens 1,2,3 --out FILE.npy
//   moe info     --model DIR
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/backend/backend.h"
#include "common/chat_template.h"
#include "common/command_line.h"
#include "common/npy.h"
#include "common/status.h"
#include "coordinator/generator.h"
#include "tools/cli/local_engine.h"

ABSL_FLAG(std::string, model, "", "Model directory (Hugging Face Mixtral layout)");
ABSL_FLAG(std::string, prompt, "", "generate: the prompt text");
ABSL_FLAG(bool, chat, false, "generate: render the prompt as one user turn of the chat template");
ABSL_FLAG(int, max_new_tokens, 128, "generate: most tokens to generate");
ABSL_FLAG(double, temperature, 0.7, "generate: sampling temperature; 0 is greedy");
ABSL_FLAG(double, top_p, 0.95, "generate: nucleus sampling mass in (0, 1]");
ABSL_FLAG(int, top_k, 0, "generate: sample among the k most likely tokens (0: all)");
ABSL_FLAG(uint64_t, seed, 0, "generate: random seed (same seed, same text)");
ABSL_FLAG(bool, stats, true, "generate: print tokens/s to stderr at the end");
ABSL_FLAG(std::string, tokens, "", "logits: comma-separated token ids");
ABSL_FLAG(std::string, out, "", "logits: output .npy file");
ABSL_FLAG(int, threads, 0, "compute threads (0: all cores)");

namespace moe {
namespace {

absl::StatusOr<std::string> RequiredFlag(const absl::Flag<std::string>& flag, const char* name) {
  std::string value = absl::GetFlag(flag);
  if (value.empty()) return absl::InvalidArgumentError(absl::StrCat("--", name, " is required"));
  return value;
}

absl::Status RunGenerate() {
  MOE_ASSIGN_OR_RETURN(std::string dir, RequiredFlag(FLAGS_model, "model"));
  MOE_ASSIGN_OR_RETURN(std::string prompt, RequiredFlag(FLAGS_prompt, "prompt"));
  MOE_ASSIGN_OR_RETURN(auto engine, LocalEngine::Open(dir));
  MOE_ASSIGN_OR_RETURN(auto tokenizer, engine->dir().LoadTokenizer());

  std::vector<int> ids;
  if (absl::GetFlag(FLAGS_chat)) {
    const ChatMessage turn{"user", prompt};
    MOE_ASSIGN_OR_RETURN(ids, RenderChat(*tokenizer, {&turn, 1}));
  } else {
    MOE_ASSIGN_OR_RETURN(ids, tokenizer->Encode(prompt, /*add_bos=*/true));
  }
  coordinator::GenerateOptions options;
  options.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
  options.sampling.temperature = static_cast<float>(absl::GetFlag(FLAGS_temperature));
  options.sampling.top_p = static_cast<float>(absl::GetFlag(FLAGS_top_p));
  options.sampling.top_k = absl::GetFlag(FLAGS_top_k);
  options.sampling.seed = absl::GetFlag(FLAGS_seed);

  StreamingDecoder decoder(*tokenizer, ids);
  absl::Status stream_status;
  auto on_token = [&](int token) {
    if (token == engine->config().eos_token_id) return true;
    auto piece = decoder.Push(token);
    if (!piece.ok()) {
      stream_status = piece.status();
      return false;
    }
    std::fwrite(piece->data(), 1, piece->size(), stdout);
    std::fflush(stdout);
    return true;
  };
  MOE_ASSIGN_OR_RETURN(auto result, coordinator::Generate(engine->model(), ids, options, on_token));
  MOE_RETURN_IF_ERROR(stream_status);
  MOE_ASSIGN_OR_RETURN(std::string tail, decoder.Flush());
  std::fwrite(tail.data(), 1, tail.size(), stdout);
  std::fputc('\n', stdout);
  if (absl::GetFlag(FLAGS_stats)) {
    const size_t decoded = result.tokens.size() > 1 ? result.tokens.size() - 1 : 0;
    std::fprintf(stderr,
                 "[%d prompt tokens, %zu new, finish %s; prefill %.1f tok/s, decode %.1f tok/s, "
                 "%d threads]\n",
                 result.prompt_tokens, result.tokens.size(),
                 std::string(coordinator::FinishReasonName(result.finish_reason)).c_str(),
                 result.prompt_tokens / result.prefill_seconds,
                 decoded > 0 ? decoded / result.decode_seconds : 0.0, ComputeThreads());
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int>> ParseTokenList(const std::string& text) {
  std::vector<int> ids;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int id;
    if (!absl::SimpleAtoi(part, &id)) {
      return absl::InvalidArgumentError(absl::StrCat("--tokens: \"", part, "\" is not an integer"));
    }
    ids.push_back(id);
  }
  if (ids.empty()) return absl::InvalidArgumentError("--tokens: no token ids given");
  return ids;
}

absl::Status RunLogits() {
  MOE_ASSIGN_OR_RETURN(std::string dir, RequiredFlag(FLAGS_model, "model"));
  MOE_ASSIGN_OR_RETURN(std::string tokens_flag, RequiredFlag(FLAGS_tokens, "tokens"));
  MOE_ASSIGN_OR_RETURN(std::string out, RequiredFlag(FLAGS_out, "out"));
  MOE_ASSIGN_OR_RETURN(std::vector<int> ids, ParseTokenList(tokens_flag));
  MOE_ASSIGN_OR_RETURN(auto engine, LocalEngine::Open(dir));
  const int64_t v = engine->config().vocab_size;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= v) {
      return absl::InvalidArgumentError(absl::StrCat("--tokens: id ", ids[i], " at index ", i,
                                                     " is outside the vocabulary [0, ", v, ")"));
    }
  }
  if (int64_t(ids.size()) > engine->config().max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("--tokens: ", ids.size(),
                                                   " tokens exceed the context of ",
                                                   engine->config().max_position_embeddings));
  }
  coordinator::KvCache cache(engine->config(), static_cast<int64_t>(ids.size()));
  std::vector<float> logits;
  MOE_RETURN_IF_ERROR(engine->model().Forward(ids, cache, coordinator::MixtralModel::Logits::kAll,
                                              &logits));
  return WriteNpyF32(out, {int64_t(ids.size()), v}, logits);
}

std::string Bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  return absl::StrFormat("%.2f %s", b, units[u]);
}

absl::Status RunInfo() {
  MOE_ASSIGN_OR_RETURN(std::string dir_path, RequiredFlag(FLAGS_model, "model"));
  MOE_ASSIGN_OR_RETURN(ModelDir dir, ModelDir::Open(dir_path));
  const ModelConfig& c = dir.config;
  MOE_ASSIGN_OR_RETURN(auto w1, dir.checkpoint->Find(tensor_names::Expert(0, 0, "w1")));
  const size_t stored = DTypeSize(w1.info->dtype);
  const int64_t experts = c.num_hidden_layers * c.num_local_experts;
  const int64_t expert_params = experts * c.ExpertParams();
  std::printf("model            %s\n", dir.path.c_str());
  std::printf("model_type       %s\n", c.model_type.c_str());
  std::printf("layers           %lld\n", (long long)c.num_hidden_layers);
  std::printf("hidden_size      %lld\n", (long long)c.hidden_size);
  std::printf("intermediate     %lld (per expert)\n", (long long)c.intermediate_size);
  std::printf("heads            %lld query, %lld key-value, head_dim %lld\n",
              (long long)c.num_attention_heads, (long long)c.num_key_value_heads,
              (long long)c.head_dim);
  std::printf("experts          %lld per layer, top-%lld\n", (long long)c.num_local_experts,
              (long long)c.num_experts_per_tok);
  std::printf("vocab_size       %lld\n", (long long)c.vocab_size);
  std::printf("context          %lld positions, rope_theta %g, sliding_window %s\n",
              (long long)c.max_position_embeddings, c.rope_theta,
              c.sliding_window ? std::to_string(*c.sliding_window).c_str() : "none");
  std::printf("tied embeddings  %s\n", c.tie_word_embeddings ? "yes" : "no");
  std::printf("tokenizer        %s\n", dir.tokenizer_path.empty() ? "(none)" : dir.tokenizer_path.c_str());
  std::printf("parameters       %lld total: %lld in %lld experts, %lld dense\n",
              (long long)c.TotalParams(), (long long)expert_params, (long long)experts,
              (long long)(c.TotalParams() - expert_params));
  std::printf("stored dtype     %s (expert w1 of layer 0)\n",
              std::string(DTypeName(w1.info->dtype)).c_str());
  std::printf("bytes per expert %s stored, %s as fp32 in the expert store\n",
              Bytes(double(c.ExpertParams()) * stored).c_str(),
              Bytes(double(c.ExpertParams()) * 4).c_str());
  std::printf("expert bytes     %s stored, %s as fp32\n",
              Bytes(double(expert_params) * stored).c_str(), Bytes(double(expert_params) * 4).c_str());
  std::printf("checkpoint bytes %s (all tensors)\n", Bytes(double(dir.checkpoint->TotalBytes())).c_str());
  for (const backend::BackendInfo& b : backend::ListBackends()) {
    std::string devices;
    if (b.devices.ok()) {
      for (const backend::DeviceInfo& d : *b.devices) {
        absl::StrAppend(&devices, devices.empty() ? "" : ", ", d.name);
        if (d.memory_bytes > 0) absl::StrAppend(&devices, " ", Bytes(double(d.memory_bytes)));
      }
    } else {
      devices = std::string(b.devices.status().message());
    }
    std::printf("backend %-8s %s\n", b.name.c_str(), devices.c_str());
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace moe

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "moe <generate|logits|info> --model DIR [flags]\n"
      "  generate --prompt TEXT [--chat] [--max-new-tokens N] [--temperature T]\n"
      "           [--top-p P] [--top-k K] [--seed S]\n"
      "  logits   --tokens 1,2,3 --out FILE.npy\n"
      "  info");
  moe::NormalizeFlagNames(argc, argv);
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() != 2) {
    std::fprintf(stderr, "moe: expected one command (generate, logits or info); see --help\n");
    return 2;
  }
  moe::SetComputeThreads(absl::GetFlag(FLAGS_threads));
  const std::string command = positional[1];
  absl::Status status;
  if (command == "generate") {
    status = moe::RunGenerate();
  } else if (command == "logits") {
    status = moe::RunLogits();
  } else if (command == "info") {
    status = moe::RunInfo();
  } else {
    std::fprintf(stderr, "moe: unknown command \"%s\" (generate, logits or info)\n", command.c_str());
    return 2;
  }
  if (!status.ok()) {
    std::fprintf(stderr, "moe: error: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
