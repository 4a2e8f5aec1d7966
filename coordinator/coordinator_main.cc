// moe-coordinator: attention, routing, KV cache, sampling and the tokenizer; serves
// moe.v1.Generation and sends every MoE layer to an expert worker.
//
//   moe-coordinator --model DIR --worker unix:/tmp/moe-worker.sock --listen unix:/tmp/moe.sock
#include <atomic>
#include <cstdio>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "common/command_line.h"
#include "common/grpc_server.h"
#include "common/logging.h"
#include "common/model_dir.h"
#include "common/status.h"
#include "coordinator/dense_weights.h"
#include "coordinator/generation_service.h"
#include "coordinator/worker_client.h"

ABSL_FLAG(std::string, model, "", "Model directory");
ABSL_FLAG(std::string, worker, "unix:/tmp/moe-worker.sock", "Expert worker address");
ABSL_FLAG(std::string, listen, "unix:/tmp/moe.sock", "unix:PATH or HOST:PORT to serve on");
ABSL_FLAG(int, max_requests, 16, "Requests admitted at once; more get RESOURCE_EXHAUSTED");
ABSL_FLAG(bool, inline_tensors, false, "Send hidden states inside RPCs even on a unix socket");
ABSL_FLAG(int, max_message_bytes, 64 << 20, "Largest gRPC message accepted");
ABSL_FLAG(int, lookahead, 0, "Speculative loading: layers ahead to guess experts for (0: off)");
ABSL_FLAG(int, prefetch_experts, 2, "Speculative loading: experts prefetched per token and layer");

namespace moe::coordinator {
namespace {

absl::Status Run() {
  const std::string model_path = absl::GetFlag(FLAGS_model);
  if (model_path.empty()) return absl::InvalidArgumentError("--model is required");
  MOE_RETURN_IF_ERROR(ValidateAddress(absl::GetFlag(FLAGS_worker)));
  MOE_ASSIGN_OR_RETURN(ModelDir dir, ModelDir::Open(model_path));
  MOE_ASSIGN_OR_RETURN(auto tokenizer, dir.LoadTokenizer());
  MOE_ASSIGN_OR_RETURN(auto dense, DenseWeights::Load(dir));
  WorkerClientOptions client_options;
  client_options.address = absl::GetFlag(FLAGS_worker);
  client_options.arena_slots = 2;  // generations step one at a time; 2 covers overlap
  client_options.force_inline = absl::GetFlag(FLAGS_inline_tensors);
  MOE_ASSIGN_OR_RETURN(auto worker, WorkerClient::Create(client_options, dir.config));
  MOE_ASSIGN_OR_RETURN(auto model, MixtralModel::Create(dir.config, std::move(dense), worker.get()));
  model->set_speculation({absl::GetFlag(FLAGS_lookahead), absl::GetFlag(FLAGS_prefetch_experts)});

  // Health follows the worker: NOT_SERVING for generation while none answers.
  std::atomic<bool> worker_up{worker->WorkerServing()};
  std::atomic<bool> stop{false};
  std::thread monitor;
  GenerationServiceOptions service_options;
  service_options.max_requests = absl::GetFlag(FLAGS_max_requests);
  service_options.experts_available = [&] { return worker_up.load(); };
  GenerationService service(model.get(), tokenizer.get(), service_options);

  ServerOptions options;
  options.listen = absl::GetFlag(FLAGS_listen);
  options.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
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
    stop = true;
    if (monitor.joinable()) monitor.join();
  };
  return ServeUntilSignal(options, {&service}, on_started, on_stopping);
}

}  // namespace
}  // namespace moe::coordinator

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("moe-coordinator --model DIR --worker ADDR --listen ADDR");
  moe::ParseFlags(argc, argv);
  return moe::ExitCode("moe-coordinator", moe::coordinator::Run());
}
