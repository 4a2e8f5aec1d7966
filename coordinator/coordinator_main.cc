// moe-coordinator: attention, routing, KV cache, sampling and the tokenizer; serves
// moe.v1.Generation and sends every MoE layer to an expert worker.
//
//   moe-coordinator --model DIR --worker unix:/tmp/moe-worker.sock --listen unix:/tmp/moe.sock
//                   [--http-listen 127.0.0.1:8080]   (OpenAI-compatible API and a chat page)
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "common/command_line.h"
#include "common/grpc_security.h"
#include "common/grpc_server.h"
#include "common/ring_wait_flags.h"
#include "common/server_flags.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/logging.h"
#include "common/http_server.h"
#include "common/prometheus_text.h"
#include "common/model_dir.h"
#include "common/status.h"
#include "common/backend/device.h"
#include "coordinator/dense_weights.h"
#include "coordinator/device_budget.h"
#include "coordinator/device_weights.h"
#include "coordinator/generation_service.h"
#include "coordinator/http_api.h"
#include "coordinator/worker_client.h"

ABSL_FLAG(std::string, model, "", "Model directory");
ABSL_FLAG(std::string, worker, "",
          "Expert worker address (default: worker.sock in the private socket directory, "
          "$XDG_RUNTIME_DIR/moe-offload or /tmp/moe-offload-UID)");
ABSL_FLAG(std::string, listen, "",
          "unix:PATH or HOST:PORT to serve on (default: moe.sock in the private socket "
          "directory)");
ABSL_FLAG(std::string, api_key, "",
          "Require `authorization: Bearer KEY` on every moe.v1.Generation call and HTTP /v1/* "
          "request (UNAUTHENTICATED / 401 otherwise; health, reflection and metrics stay "
          "open); also read from $MOE_API_KEY");
ABSL_FLAG(std::string, worker_tls_ca, "", "TCP worker: PEM CA that signed the worker's certificate");
ABSL_FLAG(std::string, worker_tls_cert, "", "TCP worker: our PEM client certificate (mutual TLS)");
ABSL_FLAG(std::string, worker_tls_key, "", "TCP worker: the PEM key of --worker-tls-cert");
ABSL_FLAG(int, max_requests, 16, "Requests admitted at once; more get RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, max_batch_tokens, 256,
          "Rows of one batched forward pass: every running request's next token plus chunks "
          "of waiting prompts (one RunExperts per layer carries them all)");
ABSL_FLAG(int, batch_lanes, 1,
          "Step threads, each batching its own share of the streams: with 2, one share's "
          "dense layers compute while the expert worker serves the other's experts (CPU "
          "only; at most 2)");
ABSL_FLAG(int64_t, max_request_bytes, 1 << 20,
          "Largest prompt (or all chat messages together, or a Tokenize text) in bytes; "
          "checked before tokenizing");
ABSL_FLAG(double, max_kv_gib, 0,
          "KV cache all running requests may reserve together, in GiB (0: max-requests "
          "full contexts); beyond it RESOURCE_EXHAUSTED");
ABSL_FLAG(bool, inline_tensors, false, "Send hidden states inside RPCs even on a unix socket");
ABSL_FLAG(int, max_message_bytes, 4 << 20,
          "Largest gRPC message accepted (the public API carries prompts: --max-request-bytes "
          "and a little more)");
ABSL_FLAG(int, lookahead, 0, "Speculative loading: layers ahead to guess experts for (0: off)");
ABSL_FLAG(int, prefetch_experts, 2, "Speculative loading: experts prefetched per token and layer");
ABSL_FLAG(std::string, metrics_listen, "",
          "HOST:PORT for Prometheus text on GET /metrics (empty: no endpoint)");
ABSL_FLAG(std::string, http_listen, "",
          "HOST:PORT (IPv4, localhost or [IPv6]) for the OpenAI-compatible HTTP API, the chat "
          "page at /, /health and /metrics (empty: no HTTP)");
ABSL_FLAG(std::string, model_name, "",
          "The model's id in the HTTP API (default: the model directory's name)");
ABSL_FLAG(double, worker_grace_s, 30,
          "Seconds a generation that lost its expert worker waits for one to answer again "
          "(then redoes the layer step) before it fails with UNAVAILABLE");
ABSL_FLAG(std::string, device, "cpu",
          "Where attention, routers and the KV caches compute: cpu, cuda or cuda:N");
ABSL_FLAG(double, vram_budget_gib, 0,
          "Device memory the coordinator may use (dense weights + KV caches of "
          "--max-requests streams x --max-context-tokens + scratch), checked at start; "
          "0: the device's free memory on a GPU, no limit on the CPU");
ABSL_FLAG(int64_t, max_context_tokens, 0,
          "KV positions reserved per stream: prompt + max_new_tokens of a request "
          "(0: the model's max_position_embeddings)");
ABSL_FLAG(double, shutdown_grace_s, 10,
          "On SIGTERM/SIGINT: seconds in-flight generations may run on before they end with "
          "UNAVAILABLE; new ones are refused at once");

namespace moe::coordinator {
namespace {

absl::Status Run() {
  const std::string model_path = absl::GetFlag(FLAGS_model);
  if (model_path.empty()) return absl::InvalidArgumentError("--model is required");
  if (absl::GetFlag(FLAGS_lookahead) < 0 || absl::GetFlag(FLAGS_lookahead) > kMaxLookahead ||
      absl::GetFlag(FLAGS_prefetch_experts) < 1) {
    return absl::InvalidArgumentError(absl::StrCat("--lookahead must be in [0, ", kMaxLookahead,
                                                   "] and --prefetch-experts >= 1"));
  }
  // Addresses and credentials first: a typo should not cost a model load.
  std::string worker_address = absl::GetFlag(FLAGS_worker);
  if (worker_address.empty()) {
    MOE_ASSIGN_OR_RETURN(worker_address, DefaultSocketAddress("worker.sock"));
  }
  MOE_RETURN_IF_ERROR(ValidateAddress(worker_address));
  ServerOptions options;
  options.listen = absl::GetFlag(FLAGS_listen);
  if (options.listen.empty()) {
    MOE_ASSIGN_OR_RETURN(options.listen, DefaultSocketAddress("moe.sock"));
  }
  MOE_RETURN_IF_ERROR(Annotate(CheckListenAddress(options.listen), "--listen"));
  MOE_RETURN_IF_ERROR(ApplyServerSecurityFlags(&options));
  const TlsFiles worker_tls{absl::GetFlag(FLAGS_worker_tls_cert), absl::GetFlag(FLAGS_worker_tls_key),
                            absl::GetFlag(FLAGS_worker_tls_ca)};
  if (absl::Status tls = MakeChannelCredentials(worker_tls).status(); !tls.ok()) {
    return Annotate(tls, "--worker-tls-*");
  }
  std::string api_key = absl::GetFlag(FLAGS_api_key);
  if (api_key.empty() && std::getenv("MOE_API_KEY") != nullptr) api_key = std::getenv("MOE_API_KEY");
  // The HTTP ports are claimed before the model loads (minutes at Mixtral size), so a
  // taken or malformed address fails at once. Each serves a scrape or health check
  // beside every admitted generation.
  std::unique_ptr<HttpServer> http, metrics;
  if (!absl::GetFlag(FLAGS_http_listen).empty()) {
    HttpServerOptions http_options;
    http_options.threads = std::max(1, absl::GetFlag(FLAGS_max_requests)) + 4;
    MOE_ASSIGN_OR_RETURN(http, HttpServer::Bind(absl::GetFlag(FLAGS_http_listen), http_options));
  }
  if (!absl::GetFlag(FLAGS_metrics_listen).empty()) {
    MOE_ASSIGN_OR_RETURN(metrics, HttpServer::Bind(absl::GetFlag(FLAGS_metrics_listen)));
  }
  const int64_t max_batch_tokens = absl::GetFlag(FLAGS_max_batch_tokens);
  const int batch_lanes = absl::GetFlag(FLAGS_batch_lanes);
  MOE_RETURN_IF_ERROR(CheckBatchSchedulerOptions({max_batch_tokens, batch_lanes}));
  MOE_ASSIGN_OR_RETURN(const ring::WaitOptions ring_wait, ring::WaitOptionsFromFlags());
  MOE_ASSIGN_OR_RETURN(ModelDir dir, ModelDir::Open(model_path));
  MOE_ASSIGN_OR_RETURN(auto tokenizer, dir.LoadTokenizer());
  const int64_t max_context =
      absl::GetFlag(FLAGS_max_context_tokens) == 0 ? dir.config.max_position_embeddings
                                                   : absl::GetFlag(FLAGS_max_context_tokens);
  if (max_context < 1 || max_context > dir.config.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max-context-tokens ", max_context, " must be in [1, ",
        dir.config.max_position_embeddings, "] (the model's context)"));
  }
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<backend::Device> device,
                       backend::OpenDevice(absl::GetFlag(FLAGS_device)));
  // The device budget below counts one pass's scratch.
  if (batch_lanes > 1 && device->kind() != backend::DeviceKind::kCpu) {
    return absl::InvalidArgumentError("--batch-lanes above 1 is for the CPU device only");
  }
  MOE_ASSIGN_OR_RETURN(auto dense, DenseWeights::Load(dir));
  MOE_ASSIGN_OR_RETURN(const int64_t budget_bytes,
                       ResolveBudgetBytes(*device, absl::GetFlag(FLAGS_vram_budget_gib)));
  absl::StatusOr<DeviceBudget> budget = CheckDeviceBudget(
      dir.config, DeviceWeights::Bytes(dense), absl::GetFlag(FLAGS_max_requests), max_context,
      absl::GetFlag(FLAGS_lookahead), budget_bytes, max_batch_tokens);
  if (!budget.ok()) {
    return absl::Status(budget.status().code(),
                        absl::StrCat(device->name(), ": ", budget.status().message(),
                                     " (lower --max-requests, --max-context-tokens or "
                                     "--max-batch-tokens, or raise --vram-budget-gib)"));
  }
  MOE_LOG(INFO) << "device " << device->name() << ": " << budget->ToString();
  WorkerClientOptions client_options;
  client_options.address = worker_address;
  client_options.tls = worker_tls;
  client_options.arena_slots = 2 * batch_lanes;  // one pass per lane at a time; 2 cover overlap
  // A step's rows in one RunExperts per layer (unless the worker accepts fewer).
  client_options.max_tokens_per_call = max_batch_tokens;
  client_options.force_inline = absl::GetFlag(FLAGS_inline_tensors);
  client_options.device = device.get();  // x/out of RunExperts live there
  client_options.ring_wait = ring_wait;
  const double worker_grace_s = absl::GetFlag(FLAGS_worker_grace_s);
  const double shutdown_grace_s = absl::GetFlag(FLAGS_shutdown_grace_s);
  if (!(worker_grace_s >= 0) || !(shutdown_grace_s >= 0)) {
    return absl::InvalidArgumentError("--worker-grace-s and --shutdown-grace-s must be >= 0");
  }
  client_options.worker_grace = absl::Seconds(worker_grace_s);
  MOE_ASSIGN_OR_RETURN(auto worker, WorkerClient::Create(client_options, dir.config));
  MOE_ASSIGN_OR_RETURN(auto model,
                       MixtralModel::Create(dir.config, std::move(dense), worker.get(), *device));
  model->set_max_context_tokens(max_context);
  model->set_speculation({absl::GetFlag(FLAGS_lookahead), absl::GetFlag(FLAGS_prefetch_experts)});

  // Health follows the worker: NOT_SERVING for generation while none answers.
  std::atomic<bool> worker_up{worker->WorkerServing()};
  std::atomic<bool> stop{false};
  std::thread monitor;
  GenerationServiceOptions service_options;
  service_options.max_requests = absl::GetFlag(FLAGS_max_requests);
  service_options.max_batch_tokens = max_batch_tokens;
  service_options.batch_lanes = batch_lanes;
  service_options.experts_available = [&] { return worker_up.load(); };
  service_options.api_key = api_key;
  // A request larger than a message cannot arrive anyway.
  service_options.limits.max_request_bytes = std::min<int64_t>(
      absl::GetFlag(FLAGS_max_request_bytes), absl::GetFlag(FLAGS_max_message_bytes));
  if (service_options.limits.max_request_bytes < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max-request-bytes ", absl::GetFlag(FLAGS_max_request_bytes), " must be >= 1"));
  }
  if (!(absl::GetFlag(FLAGS_max_kv_gib) >= 0) || absl::GetFlag(FLAGS_max_kv_gib) > 1e6) {
    return absl::InvalidArgumentError("--max-kv-gib must be in [0, 1e6]");
  }
  service_options.max_kv_bytes = static_cast<int64_t>(absl::GetFlag(FLAGS_max_kv_gib) * double(1ull << 30));
  GenerationService service(model.get(), tokenizer.get(), service_options);
  auto render_metrics = [&] {
    std::string text = service.RenderMetrics();
    PrometheusText up;
    up.Gauge("moe_coordinator_worker_up", "1 while the expert worker answers", worker_up.load());
    return text + up.text();
  };
  if (metrics != nullptr) {
    metrics->Serve([&](httplib::Server& s) { AddMetricsRoute(s, render_metrics); });
    MOE_LOG(INFO) << "metrics on http://" << metrics->address() << "/metrics";
  }
  if (http != nullptr) {
    HttpApiOptions api;
    api.model_id = absl::GetFlag(FLAGS_model_name);
    if (api.model_id.empty()) {
      const std::string trimmed(absl::StripSuffix(dir.path, "/"));
      api.model_id = trimmed.substr(trimmed.rfind('/') + 1);
    }
    api.api_key = api_key;
    api.health = [&]() -> absl::Status {
      if (stop.load()) return absl::UnavailableError("shutting down");
      if (!worker_up.load()) return absl::UnavailableError("no expert worker is answering");
      return absl::OkStatus();
    };
    api.metrics = render_metrics;
    http->Serve([&](httplib::Server& s) { AddHttpApi(s, &service, api); });
    MOE_LOG(INFO) << "HTTP API and chat page on http://" << http->address() << "/ (model '"
                  << api.model_id << "')";
  }

  options.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  options.shutdown_grace = absl::Seconds(shutdown_grace_s);
  auto on_started = [&](grpc::Server* server) {
    MOE_LOG(INFO) << "moe-coordinator serving " << dir.path << " on " << options.listen
                  << ", experts at " << client_options.address
                  << (worker->zero_copy() ? " (shared-memory arena)" : " (tensors inline)");
    // ServeUntilSignal started every service SERVING; say the truth before the first poll.
    server->GetHealthCheckService()->SetServingStatus("moe.v1.Generation", worker_up.load());
    server->GetHealthCheckService()->SetServingStatus("", worker_up.load());
    monitor = std::thread([&, server] {
      bool reported = !worker_up.load();
      while (!stop.load()) {
        const bool up = worker->WorkerServing(absl::Milliseconds(300));
        worker_up = up;
        server->GetHealthCheckService()->SetServingStatus("moe.v1.Generation", up);
        server->GetHealthCheckService()->SetServingStatus("", up);
        if (up != reported) {
          if (up) {
            MOE_LOG(INFO) << "expert worker is serving";
          } else {
            MOE_LOG(WARNING) << "expert worker is not answering";
          }
          reported = up;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(up ? 500 : 100));
      }
    });
  };
  auto on_stopping = [&] {
    // Generations still running near the end of the grace end with an explicit
    // UNAVAILABLE, before gRPC's own shutdown deadline would cut them off.
    const absl::Duration grace = options.shutdown_grace;
    service.BeginShutdown(absl::Now() + grace - std::min(absl::Seconds(1), grace / 4));
    MOE_LOG(INFO) << "refusing new generations; those in flight get " << shutdown_grace_s << " s";
    stop = true;
    if (monitor.joinable()) monitor.join();
  };
  const absl::Status served = ServeUntilSignal(options, {&service}, on_started, on_stopping);
  // Their handlers use `service`: stop them first (in-flight HTTP generations end with
  // the drain above).
  http.reset();
  metrics.reset();
  return served;
}

}  // namespace
}  // namespace moe::coordinator

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("moe-coordinator --model DIR --worker ADDR --listen ADDR");
  moe::ParseFlags(argc, argv);
  return moe::ExitCode("moe-coordinator", moe::coordinator::Run());
}
