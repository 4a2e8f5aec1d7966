// `moe`: generate text, dump logits and describe a model, all in one process.
//
//   moe generate --model DIR --prompt TEXT [--chat] [--max-new-tokens N]
//                [--temperature T] [--top-p P] [--top-k K] [--seed S]
//                [--worker ADDR | --cache-per-layer K]   (coordinator in this process)
//   moe generate --server ADDR --prompt TEXT ...          (a running moe-coordinator)
//   moe logits   --model DIR --tokens 1,2,3 --out FILE.npy
//   moe info     --model DIR
//   moe bench    --model DIR --text-file F [--max-tokens N] [--cache-per-layer K]
//                [--link-gbps X] [--variant full|no-prefetch|no-cache|naive|all] [--repeat R]
//   moe worker-stats  --worker ADDR            (a running moe-expert-worker's GetStats)
//   moe set-policy    --worker ADDR [--policy P] [--cache-per-layer K]
//   moe convert  --in HF_DIR --out DIR --attn-bits 4 --expert-bits 3   (tools/cli/quant_commands.h)
//   moe perplexity --model DIR --text-file F
//   moe sizes    --config config.json
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
#include "common/chat_template.h"
#include "common/command_line.h"
#include "common/npy.h"
#include "common/status.h"
#include "common/grpc_security.h"
#include "common/grpc_status.h"
#include "coordinator/generator.h"
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
ABSL_FLAG(int, max_new_tokens, 128, "generate: most tokens to generate");
ABSL_FLAG(double, temperature, 0.7, "generate: sampling temperature; 0 is greedy");
ABSL_FLAG(double, top_p, 0.95, "generate: nucleus sampling mass in (0, 1]");
ABSL_FLAG(int, top_k, 0, "generate: sample among the k most likely tokens (0: all)");
ABSL_FLAG(uint64_t, seed, 0, "generate: random seed (same seed, same text)");
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
ABSL_FLAG(int, cache_per_layer, 0, "in-process experts cached per layer (0: all)");
ABSL_FLAG(double, link_gbps, 0, "in-process link model: copy bandwidth in GB/s (0: memcpy speed)");
ABSL_FLAG(double, link_latency_us, 0, "in-process link model: fixed cost per copy");
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
ABSL_FLAG(std::string, policy, "lru", "bench, set-policy: cache policy (lru, lfu, fifo, random, lfu-decay)");

namespace moe {
namespace {

absl::StatusOr<std::string> RequiredFlag(const absl::Flag<std::string>& flag, const char* name) {
  std::string value = absl::GetFlag(flag);
  if (value.empty()) return absl::InvalidArgumentError(absl::StrCat("--", name, " is required"));
  return value;
}

EngineOptions EngineFlags() {
  EngineOptions options;
  options.device = absl::GetFlag(FLAGS_device);
  options.vram_budget_gib = absl::GetFlag(FLAGS_vram_budget_gib);
  options.cache_per_layer = absl::GetFlag(FLAGS_cache_per_layer);
  options.worker_address = absl::GetFlag(FLAGS_worker);
  // Checked where every wiring sets it (SlotCache::set_link), not clamped here.
  options.link = {absl::GetFlag(FLAGS_link_gbps), absl::GetFlag(FLAGS_link_latency_us)};
  return options;
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

// The C++ client of moe.v1.Generation: streams from a running coordinator.
absl::Status RunGenerateRemote(const std::string& server, const std::string& prompt) {
  auto channel = ClientChannel(server);
  auto stub = v1::Generation::NewStub(channel);
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
  grpc::ClientContext context;
  std::string api_key = absl::GetFlag(FLAGS_api_key);
  if (api_key.empty() && std::getenv("MOE_API_KEY") != nullptr) api_key = std::getenv("MOE_API_KEY");
  AddBearerToken(&context, api_key);
  if (absl::GetFlag(FLAGS_timeout) > 0) {
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::milliseconds(int64_t(absl::GetFlag(FLAGS_timeout) * 1000)));
  }
  auto reader = stub->Generate(&context, request);
  v1::GenerateResponse response;
  v1::GenerateResponse last;
  while (reader->Read(&response)) {
    std::fwrite(response.text().data(), 1, response.text().size(), stdout);
    std::fflush(stdout);
    if (response.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) last = response;
  }
  MOE_RETURN_IF_ERROR(Annotate(FromGrpcStatus(reader->Finish()), server));
  std::fputc('\n', stdout);
  std::fflush(stdout);  // the figures go to stderr after the text
  if (absl::GetFlag(FLAGS_stats)) {
    const auto& st = last.stats();
    std::fprintf(stderr,
                 "[%u prompt tokens, %u new, finish %s; time to first token %.3f s, prefill %.1f "
                 "tok/s, decode %.1f tok/s, via %s]\n",
                 st.prompt_tokens(), st.generated_tokens(),
                 v1::FinishReason_Name(last.finish_reason()).c_str(), st.time_to_first_token_s(),
                 st.prefill_tokens_per_s(), st.decode_tokens_per_s(), server.c_str());
  }
  return absl::OkStatus();
}

absl::Status RunGenerate() {
  MOE_ASSIGN_OR_RETURN(std::string prompt, RequiredFlag(FLAGS_prompt, "prompt"));
  if (!absl::GetFlag(FLAGS_server).empty()) return RunGenerateRemote(absl::GetFlag(FLAGS_server), prompt);
  MOE_ASSIGN_OR_RETURN(std::string dir, RequiredFlag(FLAGS_model, "model"));
  MOE_ASSIGN_OR_RETURN(auto engine, LocalEngine::Open(dir, EngineFlags()));
  engine->model().set_speculation({absl::GetFlag(FLAGS_lookahead), absl::GetFlag(FLAGS_prefetch_experts)});
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
  std::fflush(stdout);  // the figures go to stderr after the text
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
  MOE_ASSIGN_OR_RETURN(auto engine, LocalEngine::Open(dir, EngineFlags()));
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
  if (dir.offload != nullptr) {
    PrintConvertedInfo(dir);
  } else {
    MOE_ASSIGN_OR_RETURN(auto w1, dir.checkpoint->Find(tensor_names::Expert(0, 0, "w1")));
    const size_t stored = DTypeSize(w1.info->dtype);
    std::printf("stored dtype     %s (expert w1 of layer 0)\n",
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
  options.cache_per_layer = absl::GetFlag(FLAGS_cache_per_layer);
  options.policy = absl::GetFlag(FLAGS_policy);
  options.link = {absl::GetFlag(FLAGS_link_gbps), absl::GetFlag(FLAGS_link_latency_us)};
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
// worker's cache policy and/or size; the coordinator is not involved.
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

// `moe health --server ADDR [--service NAME]`: exit 0 when SERVING.
absl::Status RunHealth() {
  MOE_ASSIGN_OR_RETURN(std::string server, RequiredFlag(FLAGS_server, "server"));
  auto stub = grpc::health::v1::Health::NewStub(ClientChannel(server));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(absl::GetFlag(FLAGS_service));
  grpc::health::v1::HealthCheckResponse response;
  MOE_RETURN_IF_ERROR(Annotate(FromGrpcStatus(stub->Check(&context, request, &response)), server));
  std::printf("%s\n", grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status()).c_str());
  if (response.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
    return absl::UnavailableError(absl::StrCat(server, " is not serving"));
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace moe

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "moe <generate|logits|info|health|convert|perplexity|sizes> --model DIR [flags]   (or generate --server ADDR)\n"
      "  generate --prompt TEXT [--chat] [--max-new-tokens N] [--temperature T]\n"
      "           [--top-p P] [--top-k K] [--seed S]\n"
      "  logits   --tokens 1,2,3 --out FILE.npy\n"
      "  info\n"
      "  bench    --text-file F [--max-tokens N] [--cache-per-layer K] [--link-gbps X]\n"
      "           [--variant full|no-prefetch|no-cache|naive|all] [--lookahead D]\n"
      "           [--prefetch-experts M] [--policy P] [--repeat R] [--worker ADDR]\n"
      "  worker-stats --worker ADDR\n"
      "  set-policy   --worker ADDR [--policy P] [--cache-per-layer K]\n"
      "  health   --server ADDR [--service moe.v1.Generation]\n"
      "  convert  --in HF_DIR --out DIR --attn-bits 4|8|16 --expert-bits 2|3|4|16 [--group-size 64] [--method hqq|rtn]\n"
      "  perplexity --model DIR --text-file F [--max-tokens N] [--window 128]\n"
      "  sizes    --config config.json [--group-size 64]\n"
      "generate, logits, bench and perplexity also take --device cpu|cuda|cuda:N and\n"
      "--vram-budget-gib X (the coordinator half's device memory, checked at start)");
  std::vector<char*> positional = moe::ParseFlags(argc, argv);
  if (positional.size() != 2) {
    std::fprintf(stderr, "moe: expected one command (generate, logits, info, bench, worker-stats, set-policy, health, convert, perplexity or sizes); see --help\n");
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
  } else if (command == "health") {
    status = moe::RunHealth();
  } else if (command == "bench") {
    status = moe::RunBenchCommand();
  } else if (command == "worker-stats") {
    status = moe::RunWorkerStats();
  } else if (command == "set-policy") {
    status = moe::RunSetPolicy();
  } else if (command == "convert") {
    status = moe::RunConvertCommand();
  } else if (command == "perplexity") {
    status = moe::RunPerplexityCommand();
  } else if (command == "sizes") {
    status = moe::RunSizesCommand();
  } else {
    std::fprintf(stderr, "moe: unknown command \"%s\" (generate, logits, info, bench, worker-stats, set-policy, health, convert, perplexity or sizes)\n", command.c_str());
    return 2;
  }
  return moe::ExitCode("moe", status);
}
