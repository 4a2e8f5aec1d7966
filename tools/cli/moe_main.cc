// `moe`: generate text, dump logits and describe a model, all in one process; talk to a
// running coordinator or worker. Its subcommands are listed once, in kSubcommands below
// (dispatch, --help and the error for an unknown command all read it).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/backend/backend.h"
#include "common/command_line.h"
#include "common/npy.h"
#include "common/status.h"
#include "common/grpc_security.h"
#include "common/grpc_status.h"
#include "coordinator/generation_defaults.h"
#include "coordinator/generation_service.h"
#include "expert_worker/expert_stack_flags.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "moe/v1/generation.grpc.pb.h"
#include "google/protobuf/util/json_util.h"
#include "moe/v1/expert_worker.grpc.pb.h"
#include "tools/cli/local_engine.h"
#include "tools/cli/offload_bench.h"
#include "tools/cli/quant_commands.h"

ABSL_FLAG(std::string, model, "", "Model directory (Hugging Face Mixtral layout)");
ABSL_FLAG(std::string, prompt, "", "generate: the prompt text");
ABSL_FLAG(bool, chat, false, "generate: render the prompt as one user turn of the chat template");
// The defaults are the server's for an absent field (coordinator/generation_defaults.h).
ABSL_FLAG(int, max_new_tokens, int(moe::coordinator::kGenerationDefaults.max_new_tokens),
          "generate: most tokens to generate");
ABSL_FLAG(double, temperature, moe::coordinator::kGenerationDefaults.temperature,
          "generate: sampling temperature; 0 is greedy");
ABSL_FLAG(double, top_p, moe::coordinator::kGenerationDefaults.top_p,
          "generate: nucleus sampling mass in (0, 1]");
ABSL_FLAG(int, top_k, int(moe::coordinator::kGenerationDefaults.top_k),
          "generate: sample among the k most likely tokens (0: all)");
ABSL_FLAG(uint64_t, seed, 0, "generate: random seed (same seed, same text)");
ABSL_FLAG(std::string, stop, "",
          "generate: end the text before this string; give --stop several times for several");
ABSL_FLAG(bool, stats, true, "generate: print tokens/s to stderr at the end");
ABSL_FLAG(std::string, tokens, "", "logits: comma-separated token ids");
ABSL_FLAG(std::string, out, "", "logits: output .npy file");
ABSL_FLAG(std::string, device, "cpu",
          "generate/logits/bench/perplexity: where attention, routers and the KV cache compute "
          "(cpu, cuda or cuda:N)");
ABSL_FLAG(double, vram_budget_gib, 0,
          "generate/logits/bench/perplexity: device memory for dense weights + KV cache + "
          "scratch, checked at start (0: the free memory on a GPU, no limit on the CPU)");
ABSL_FLAG(int, threads, 0, "compute threads (0: all cores)");
ABSL_FLAG(std::string, server, "", "generate: a moe-coordinator's address; the model runs there");
ABSL_FLAG(std::string, worker, "", "generate/logits: run experts in this moe-expert-worker");
ABSL_FLAG(int, lookahead, 0, "speculative loading: layers ahead to guess experts for (0: off)");
ABSL_FLAG(int, prefetch_experts, 2, "speculative loading: experts prefetched per token and layer");
ABSL_FLAG(std::string, api_key, "",
          "--server: send `authorization: Bearer KEY` (default: $MOE_API_KEY)");
ABSL_FLAG(std::string, tls_ca, "", "--server/--worker over TCP with TLS: PEM CA of the server");
ABSL_FLAG(std::string, tls_cert, "", "mutual TLS: our PEM client certificate");
ABSL_FLAG(std::string, tls_key, "", "mutual TLS: the PEM key of --tls-cert");
ABSL_FLAG(std::string, service, "", "health: the service to ask about (\"\": the server)");
ABSL_FLAG(double, timeout, 0, "generate --server: deadline in seconds (0: none)");
ABSL_FLAG(std::string, text_file, "",
          "bench: text decoded teacher-forced; perplexity: UTF-8 text to score");
ABSL_FLAG(int64_t, max_tokens, 0,
          "bench: decode steps measured (0: 256); perplexity: tokens scored (0: all)");
ABSL_FLAG(int, warmup_tokens, 16, "bench: decode steps run first and not measured");
ABSL_FLAG(std::string, variant, "full",
          "bench: full, no-prefetch, no-cache, naive, or a comma list, or all");
ABSL_FLAG(int, repeat, 1, "bench: runs of each variant, interleaved (A B C A B C ...)");

namespace moe {
namespace {

absl::StatusOr<std::string> RequiredFlag(const absl::Flag<std::string>& flag, const char* name) {
  std::string value = absl::GetFlag(flag);
  if (value.empty()) return absl::InvalidArgumentError(absl::StrCat("--", name, " is required"));
  return value;
}

// The engine the in-process commands open: the coordinator half's device flags, and the
// in-process worker's cache flags (expert_stack_flags.h, the worker binary's own).
absl::StatusOr<EngineOptions> EngineFlags() {
  EngineOptions options;
  options.device = absl::GetFlag(FLAGS_device);
  options.vram_budget_gib = absl::GetFlag(FLAGS_vram_budget_gib);
  options.worker_address = absl::GetFlag(FLAGS_worker);
  MOE_ASSIGN_OR_RETURN(options.experts, expert_worker::ExpertStackFlags());
  return options;
}

// `moe perplexity` scores text on the same engine as generate and logits.
absl::Status RunPerplexity() {
  MOE_ASSIGN_OR_RETURN(const EngineOptions engine_options, EngineFlags());
  return RunPerplexityCommand(engine_options);
}

// A channel to a server of ours: TLS when --tls-ca or --tls-cert is given.
std::shared_ptr<grpc::Channel> ClientChannel(const std::string& address) {
  const TlsFiles tls{absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key),
                     absl::GetFlag(FLAGS_tls_ca)};
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials = MakeChannelCredentials(tls);
  if (!credentials.ok()) {
    std::fprintf(stderr, "error: --tls-*: %s\n", std::string(credentials.status().message()).c_str());
    std::exit(2);
  }
  return grpc::CreateChannel(address, *credentials);
}

// The request `moe generate` makes, whether the model runs here or in --server: every
// field is set from the flags, whose defaults are the server's.
v1::GenerateRequest GenerateRequestFromFlags(const std::string& prompt) {
  v1::GenerateRequest request;
  if (absl::GetFlag(FLAGS_chat)) {
    auto* m = request.add_messages();
    m->set_role("user");
    m->set_content(prompt);
  } else {
    request.set_prompt(prompt);
  }
  request.set_max_new_tokens(static_cast<uint32_t>(std::max(0, absl::GetFlag(FLAGS_max_new_tokens))));
  request.set_temperature(static_cast<float>(absl::GetFlag(FLAGS_temperature)));
  request.set_top_p(static_cast<float>(absl::GetFlag(FLAGS_top_p)));
  request.set_top_k(static_cast<uint32_t>(std::max(0, absl::GetFlag(FLAGS_top_k))));
  request.set_seed(absl::GetFlag(FLAGS_seed));
  for (const std::string& stop : RepeatedFlagValues("stop")) request.add_stop(stop);
  return request;
}

// Writes a generation's text to stdout as it streams, then its figures to stderr: the
// same lines whether the model ran here or in a coordinator.
class GenerationPrinter {
 public:
  bool Write(const v1::GenerateResponse& response) {
    std::fwrite(response.text().data(), 1, response.text().size(), stdout);
    std::fflush(stdout);
    if (response.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) last_ = response;
    return true;
  }
  void Finish(const std::string& where) {
    std::fputc('\n', stdout);
    std::fflush(stdout);  // the figures go to stderr after the text
    if (!absl::GetFlag(FLAGS_stats)) return;
    const v1::GenerationStats& st = last_.stats();
    std::fprintf(stderr,
                 "[%u prompt tokens, %u new, finish %s; time to first token %.3f s, prefill %.1f "
                 "tok/s, decode %.1f tok/s, %s]\n",
                 st.prompt_tokens(), st.generated_tokens(),
                 std::string(coordinator::FinishReasonName(last_.finish_reason())).c_str(),
                 st.time_to_first_token_s(), st.prefill_tokens_per_s(), st.decode_tokens_per_s(),
                 where.c_str());
  }

 private:
  v1::GenerateResponse last_;
};

// The C++ client of moe.v1.Generation: streams from a running coordinator.
absl::Status RunGenerateRemote(const std::string& server, const v1::GenerateRequest& request) {
  auto stub = v1::Generation::NewStub(ClientChannel(server));
  grpc::ClientContext context;
  std::string api_key = absl::GetFlag(FLAGS_api_key);
  if (api_key.empty() && std::getenv("MOE_API_KEY") != nullptr) api_key = std::getenv("MOE_API_KEY");
  AddBearerToken(&context, api_key);
  if (absl::GetFlag(FLAGS_timeout) > 0) {
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::milliseconds(int64_t(absl::GetFlag(FLAGS_timeout) * 1000)));
  }
  auto reader = stub->Generate(&context, request);
  GenerationPrinter printer;
  v1::GenerateResponse response;
  while (reader->Read(&response)) printer.Write(response);
  MOE_RETURN_IF_ERROR(Annotate(FromGrpcStatus(reader->Finish()), server));
  printer.Finish(absl::StrCat("via ", server));
  return absl::OkStatus();
}

// In-process, the request goes through the coordinator's own GenerationService::Serve:
// the checks, defaults, stop strings and figures are the server's.
absl::Status RunGenerate() {
  MOE_ASSIGN_OR_RETURN(std::string prompt, RequiredFlag(FLAGS_prompt, "prompt"));
  const v1::GenerateRequest request = GenerateRequestFromFlags(prompt);
  if (!absl::GetFlag(FLAGS_server).empty()) return RunGenerateRemote(absl::GetFlag(FLAGS_server), request);
  MOE_ASSIGN_OR_RETURN(std::string dir, RequiredFlag(FLAGS_model, "model"));
  MOE_ASSIGN_OR_RETURN(const EngineOptions engine_options, EngineFlags());
  MOE_ASSIGN_OR_RETURN(auto engine, LocalEngine::Open(dir, engine_options));
  engine->model().set_speculation({absl::GetFlag(FLAGS_lookahead), absl::GetFlag(FLAGS_prefetch_experts)});
  MOE_ASSIGN_OR_RETURN(auto tokenizer, engine->dir().LoadTokenizer());
  coordinator::GenerationServiceOptions options;
  options.max_requests = 1;
  coordinator::GenerationService service(&engine->model(), tokenizer.get(), options);
  GenerationPrinter printer;
  MOE_RETURN_IF_ERROR(service.Serve(
      request, [] { return false; },
      [&](const v1::GenerateResponse& response) { return printer.Write(response); }));
  printer.Finish(absl::StrCat("in-process, ", ComputeThreads(), " threads"));
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
  MOE_ASSIGN_OR_RETURN(const EngineOptions engine_options, EngineFlags());
  MOE_ASSIGN_OR_RETURN(auto engine, LocalEngine::Open(dir, engine_options));
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
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<coordinator::KvCache> cache,
                       engine->model().NewCache(static_cast<int64_t>(ids.size())));
  std::vector<float> logits;
  MOE_RETURN_IF_ERROR(engine->model().Forward(ids, *cache, coordinator::MixtralModel::Logits::kAll,
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
  const int64_t experts = c.num_expert_layers() * c.num_local_experts;
  const int64_t expert_params = experts * c.ExpertParams();
  std::printf("model            %s\n", dir.path.c_str());
  std::printf("model_type       %s\n", c.model_type.c_str());
  std::printf("layers           %lld (%lld with routed experts)\n", (long long)c.num_hidden_layers,
              (long long)c.num_expert_layers());
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
  if (dir.offload != nullptr) {
    PrintConvertedInfo(dir);
  } else {
    MOE_ASSIGN_OR_RETURN(auto w1, dir.checkpoint->Find(tensor_names::Expert(c, c.DecoderLayer(0), 0, "w1")));
    const size_t stored = DTypeSize(w1.info->dtype);
    std::printf("stored dtype     %s (expert w1 of the first sparse layer)\n",
                std::string(DTypeName(w1.info->dtype)).c_str());
    std::printf("bytes per expert %s stored, %s as fp32 in the expert store\n",
                Bytes(double(c.ExpertParams()) * stored).c_str(),
                Bytes(double(c.ExpertParams()) * 4).c_str());
    std::printf("expert bytes     %s stored, %s as fp32\n",
                Bytes(double(expert_params) * stored).c_str(), Bytes(double(expert_params) * 4).c_str());
    std::printf("checkpoint bytes %s (all tensors)\n", Bytes(double(dir.checkpoint->TotalBytes())).c_str());
  }
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

// `moe bench`: one JSON object per run on stdout (see offload_bench.h).
absl::Status RunBenchCommand() {
  BenchOptions options;
  MOE_ASSIGN_OR_RETURN(options.model, RequiredFlag(FLAGS_model, "model"));
  MOE_ASSIGN_OR_RETURN(options.text_file, RequiredFlag(FLAGS_text_file, "text-file"));
  const int64_t max_tokens = absl::GetFlag(FLAGS_max_tokens);
  options.max_tokens = max_tokens > 0 ? max_tokens : 256;
  options.warmup_tokens = std::max(0, absl::GetFlag(FLAGS_warmup_tokens));
  MOE_ASSIGN_OR_RETURN(options.experts, expert_worker::ExpertStackFlags());
  // Speculation is on in the full variant unless --lookahead says otherwise.
  options.lookahead = absl::GetFlag(FLAGS_lookahead) > 0 ? absl::GetFlag(FLAGS_lookahead) : 1;
  options.prefetch_experts = absl::GetFlag(FLAGS_prefetch_experts);
  options.worker = absl::GetFlag(FLAGS_worker);
  options.device = absl::GetFlag(FLAGS_device);
  options.vram_budget_gib = absl::GetFlag(FLAGS_vram_budget_gib);
  std::vector<BenchVariant> variants;
  const std::string list = absl::GetFlag(FLAGS_variant) == "all" ? "full,no-prefetch,no-cache,naive"
                                                                 : absl::GetFlag(FLAGS_variant);
  for (absl::string_view name : absl::StrSplit(list, ',', absl::SkipWhitespace())) {
    MOE_ASSIGN_OR_RETURN(BenchVariant v, ParseBenchVariant(name));
    variants.push_back(v);
  }
  if (variants.empty()) return absl::InvalidArgumentError("--variant: none given");
  if (absl::GetFlag(FLAGS_repeat) < 1) return absl::InvalidArgumentError("--repeat must be >= 1");
  for (int r = 0; r < absl::GetFlag(FLAGS_repeat); ++r) {
    for (BenchVariant v : variants) {
      MOE_ASSIGN_OR_RETURN(nlohmann::json result, RunOffloadBench(options, v));
      result["run"] = r;
      std::printf("%s\n", result.dump().c_str());
      std::fflush(stdout);
    }
  }
  return absl::OkStatus();
}

std::unique_ptr<v1::ExpertWorker::Stub> WorkerStub(const std::string& address) {
  return v1::ExpertWorker::NewStub(ClientChannel(address));
}

// `moe worker-stats --worker ADDR`: the worker's GetStats as JSON.
absl::Status RunWorkerStats() {
  MOE_ASSIGN_OR_RETURN(std::string worker, RequiredFlag(FLAGS_worker, "worker"));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::WorkerStats stats;
  MOE_RETURN_IF_ERROR(Annotate(FromGrpcStatus(WorkerStub(worker)->GetStats(&context, {}, &stats)), worker));
  std::string json;
  google::protobuf::util::JsonPrintOptions print;
  print.add_whitespace = true;
  print.always_print_primitive_fields = true;
  print.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(stats, &json, print);
  std::printf("%s", json.c_str());
  return absl::OkStatus();
}

// `moe set-policy --worker ADDR [--policy P] [--cache-per-layer K]`: swaps the running
// worker's cache policy and/or size; the coordinator is not involved. What is not given
// is kept (an empty policy, size 0).
absl::Status RunSetPolicy() {
  MOE_ASSIGN_OR_RETURN(std::string worker, RequiredFlag(FLAGS_worker, "worker"));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::SetCachePolicyRequest request;
  request.set_policy(absl::GetFlag(FLAGS_policy));
  if (absl::GetFlag(FLAGS_cache_per_layer) < 0) {
    return absl::InvalidArgumentError("--cache-per-layer must be >= 0 (0 keeps the size)");
  }
  request.set_cache_per_layer(static_cast<uint32_t>(absl::GetFlag(FLAGS_cache_per_layer)));
  v1::SetCachePolicyResponse response;
  MOE_RETURN_IF_ERROR(
      Annotate(FromGrpcStatus(WorkerStub(worker)->SetCachePolicy(&context, request, &response)), worker));
  std::printf("policy %s, %u experts per layer\n", response.policy().c_str(), response.cache_per_layer());
  return absl::OkStatus();
}

// `moe health`'s exit codes, for scripts and probes (listed in --help).
constexpr int kHealthServing = 0;
constexpr int kHealthUsageOrOther = 1;
constexpr int kHealthNotServing = 3;
constexpr int kHealthUnreachable = 4;

// `moe health --server ADDR [--service NAME]`: prints the serving status.
int RunHealth() {
  const std::string server = absl::GetFlag(FLAGS_server);
  if (server.empty()) {
    std::fprintf(stderr, "moe: error: --server is required\n");
    return kHealthUsageOrOther;
  }
  auto stub = grpc::health::v1::Health::NewStub(ClientChannel(server));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(absl::GetFlag(FLAGS_service));
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) {
    const bool unreachable = status.error_code() == grpc::StatusCode::UNAVAILABLE ||
                             status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
    std::fprintf(stderr, "moe: error: %s\n",
                 std::string(Annotate(FromGrpcStatus(status), server).message()).c_str());
    return unreachable ? kHealthUnreachable : kHealthUsageOrOther;
  }
  std::printf("%s\n", grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status()).c_str());
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? kHealthServing
                                                                              : kHealthNotServing;
}

template <absl::Status (*Command)()>
int ExitCodeOf() {
  return ExitCode("moe", Command());
}

// Every subcommand, once: dispatch, --help and the unknown-command error read this.
struct Subcommand {
  const char* name;
  const char* usage;  // its flags, for --help
  int (*run)();       // the process's exit code
};
constexpr Subcommand kSubcommands[] = {
    {"generate",
     "--model DIR --prompt TEXT [--chat] [--max-new-tokens N] [--temperature T]\n"
     "      [--top-p P] [--top-k K] [--seed S] [--stop STR]... [--worker ADDR | --cache-per-layer K]\n"
     "      (or --server ADDR: the model runs in that moe-coordinator)",
     ExitCodeOf<RunGenerate>},
    {"logits", "--model DIR --tokens 1,2,3 --out FILE.npy   (float32 [tokens, vocab])",
     ExitCodeOf<RunLogits>},
    {"info", "--model DIR   (config, parameters, bytes per expert, devices)", ExitCodeOf<RunInfo>},
    {"health",
     "--server ADDR [--service moe.v1.Generation]   (exit 0 SERVING, 3 NOT_SERVING,\n"
     "      4 unreachable, 1 usage or other errors)",
     RunHealth},
    {"bench",
     "--model DIR --text-file F [--max-tokens N] [--cache-per-layer K] [--link-gbps X]\n"
     "      [--variant full|no-prefetch|no-cache|naive|all] [--lookahead D]\n"
     "      [--prefetch-experts M] [--policy P] [--repeat R] [--worker ADDR]",
     ExitCodeOf<RunBenchCommand>},
    {"worker-stats", "--worker ADDR   (a running moe-expert-worker's GetStats as JSON)",
     ExitCodeOf<RunWorkerStats>},
    {"set-policy",
     "--worker ADDR [--policy P] [--cache-per-layer K]   (live; what is not given is kept)",
     ExitCodeOf<RunSetPolicy>},
    {"convert",
     "--in HF_DIR --out DIR --attn-bits 4|8|16 --expert-bits 2|3|4|8|16 [--group-size 64]\n"
     "      [--method hqq|rtn]",
     ExitCodeOf<RunConvertCommand>},
    {"perplexity",
     "--model DIR --text-file F [--max-tokens N] [--window 128] [--cache-per-layer K]\n"
     "      [--cache-bytes N] [--policy P] [--link-gbps X] [--link-latency-us U] [--worker ADDR]",
     ExitCodeOf<RunPerplexity>},
    {"sizes", "--config config.json [--group-size 64]   (bytes of each quantization scheme)",
     ExitCodeOf<RunSizesCommand>},
};

std::string SubcommandNames() {
  std::string names;
  for (const Subcommand& c : kSubcommands) absl::StrAppend(&names, names.empty() ? "" : ", ", c.name);
  return names;
}

std::string UsageMessage() {
  std::string usage = "moe COMMAND [flags]; COMMAND is one of:\n";
  for (const Subcommand& c : kSubcommands) {
    absl::StrAppend(&usage, absl::StrFormat("  %-12s %s\n", c.name, c.usage));
  }
  absl::StrAppend(&usage,
                  "generate, logits, bench and perplexity also take --device cpu|cuda|cuda:N and\n"
                  "--vram-budget-gib X (the coordinator half's device memory, checked at start).\n"
                  "Flags take dashes or underscores; --flagfile=F reads one flag per line.");
  return usage;
}

}  // namespace
}  // namespace moe

int main(int argc, char** argv) {
  const std::string usage = moe::UsageMessage();
  absl::SetProgramUsageMessage(usage);
  std::vector<char*> positional = moe::ParseFlags(argc, argv);
  if (positional.size() != 2) {
    std::fprintf(stderr, "moe: expected one command (%s); see --help\n", moe::SubcommandNames().c_str());
    return 2;
  }
  moe::SetComputeThreads(absl::GetFlag(FLAGS_threads));
  const std::string command = positional[1];
  for (const moe::Subcommand& c : moe::kSubcommands) {
    if (command == c.name) return c.run();
  }
  std::fprintf(stderr, "moe: unknown command \"%s\" (%s)\n", command.c_str(), moe::SubcommandNames().c_str());
  return 2;
}
