// moe-expert-worker: owns every expert (host store, slot cache, compute) and serves
// moe.v1.ExpertWorker to a coordinator.
//
//   moe-expert-worker --model DIR --listen unix:/tmp/moe-worker.sock
//                     [--cache-per-layer K | --cache-bytes N | --vram-budget-gib G]
//                     [--device cpu|cuda|cuda:N] [--workspace-tokens N] [--policy lru]
#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/backend/device.h"
#include "common/command_line.h"
#include "common/grpc_server.h"
#include "common/grpc_security.h"
#include "common/server_flags.h"
#include "common/logging.h"
#include "common/http_server.h"
#include "common/model_dir.h"
#include "common/ring_wait_flags.h"
#include "common/status.h"
#include "expert_worker/expert_runner.h"
#include "expert_worker/expert_stack.h"
#include "expert_worker/expert_stack_flags.h"
#include "expert_worker/worker_service.h"

ABSL_FLAG(std::string, model, "", "Model directory");
ABSL_FLAG(std::string, listen, "",
          "unix:PATH or HOST:PORT (default: worker.sock in $XDG_RUNTIME_DIR/moe-offload or "
          "/tmp/moe-offload-UID, a 0700 directory)");
ABSL_FLAG(std::string, device, "cpu", "Where the expert cache lives and experts compute: cpu, cuda or cuda:N");
ABSL_FLAG(double, vram_budget_gib, 0,
          "Device memory for the expert cache and workspace, in GiB (0: use --cache-per-layer "
          "or --cache-bytes); slots per layer are what fits after the workspace");
ABSL_FLAG(int64_t, workspace_tokens, moe::expert_worker::ExpertRunner::kDefaultWorkspaceTokens,
          "Tokens per expert pass of the compute scratch (larger calls run in chunks)");
ABSL_FLAG(int, max_message_bytes, 64 << 20, "Largest gRPC message accepted");
ABSL_FLAG(std::string, metrics_listen, "",
          "HOST:PORT for Prometheus text on GET /metrics (empty: no endpoint)");
ABSL_FLAG(double, shutdown_grace_s, 10, "On SIGTERM/SIGINT: seconds in-flight calls may run on");
ABSL_FLAG(bool, ring, true,
          "Serve the activation ring a coordinator on this machine offers (RunExperts without "
          "an RPC per call); false: every call by RPC");
ABSL_FLAG(int64_t, max_call_tokens, 4096,
          "Most tokens one RunExperts may carry (a coordinator asking for more per call is "
          "capped at attach time; larger calls are refused)");


namespace moe::expert_worker {
namespace {

absl::Status Run() {
  const std::string model = absl::GetFlag(FLAGS_model);
  if (model.empty()) return absl::InvalidArgumentError("--model is required");
  // The cache's flags (expert_stack_flags.h) and the worker's device budget, checked
  // before anything loads.
  MOE_ASSIGN_OR_RETURN(ExpertStackOptions stack_options, ExpertStackFlags());
  MOE_ASSIGN_OR_RETURN(const ring::WaitOptions ring_wait, ring::WaitOptionsFromFlags());
  stack_options.vram_budget_gib = absl::GetFlag(FLAGS_vram_budget_gib);
  const int64_t workspace_tokens = absl::GetFlag(FLAGS_workspace_tokens);
  if (workspace_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--workspace-tokens must be >= 1 (got ", workspace_tokens, ")"));
  }
  stack_options.workspace_tokens = workspace_tokens;
  MOE_RETURN_IF_ERROR(CheckExpertStackOptions(stack_options));
  absl::StatusOr<std::unique_ptr<backend::Device>> opened =
      backend::OpenDevice(absl::GetFlag(FLAGS_device));
  if (!opened.ok()) {
    return absl::Status(opened.status().code(),
                        absl::StrCat("--device: ", opened.status().message()));
  }
  std::unique_ptr<backend::Device> device = *std::move(opened);
  MOE_RETURN_IF_ERROR(device->BindThread());
  // Addresses are checked, and the metrics port claimed, before the experts load
  // (minutes at Mixtral size): a typo or a taken port fails now.
  ServerOptions options;
  options.listen = absl::GetFlag(FLAGS_listen);
  if (options.listen.empty()) {
    MOE_ASSIGN_OR_RETURN(options.listen, DefaultSocketAddress("worker.sock"));
  }
  MOE_RETURN_IF_ERROR(Annotate(CheckListenAddress(options.listen), "--listen"));
  options.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  MOE_RETURN_IF_ERROR(ApplyServerSecurityFlags(&options));
  std::unique_ptr<HttpServer> metrics;
  if (!absl::GetFlag(FLAGS_metrics_listen).empty()) {
    MOE_ASSIGN_OR_RETURN(metrics, HttpServer::Bind(absl::GetFlag(FLAGS_metrics_listen)));
  }
  MOE_ASSIGN_OR_RETURN(ModelDir dir, ModelDir::Open(model));
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<ExpertStack> stack,
                       ExpertStack::Load(dir, device.get(), stack_options));
  const ExpertStore* store = &stack->store();
  SlotCache* cache = &stack->cache();
  const int slots = cache->slots_per_layer();
  const uint64_t workspace_bytes = ExpertRunner::WorkspaceBytes(store->layout(), workspace_tokens);
  MOE_LOG(INFO) << "expert cache on " << device->name() << ": " << slots << " slots per layer x "
                << store->num_layers() << " layers of " << cache->slot_bytes() << " bytes ("
                << uint64_t(slots) * store->num_layers() * cache->slot_bytes()
                << " bytes), workspace " << workspace_bytes << " bytes per call ("
                << workspace_tokens << " tokens); host store " << store->total_bytes()
                << " bytes " << (store->registered() ? "registered in place" : "pinned");
  // On the CPU the runner's scratch grows with the call (one BLAS product per expert,
  // as the in-process engine computes: the same bits); a GPU gets the budgeted rows.
  WorkerServiceOptions service_options;
  service_options.device = device.get();
  service_options.workspace_tokens =
      device->kind() == backend::DeviceKind::kCpu ? 0 : workspace_tokens;
  service_options.max_call_tokens = absl::GetFlag(FLAGS_max_call_tokens);
  if (service_options.max_call_tokens < 1 || service_options.max_call_tokens > (1 << 20)) {
    return absl::InvalidArgumentError(absl::StrCat("--max-call-tokens ",
                                                   service_options.max_call_tokens,
                                                   " is not in [1, 1048576]"));
  }
  MOE_ASSIGN_OR_RETURN(service_options.arena_policy.allowed_uids, AllowedUidsFlag());
  service_options.serve_ring = absl::GetFlag(FLAGS_ring);
  service_options.ring_wait = ring_wait;
  WorkerService service(cache, service_options);
  if (metrics != nullptr) {
    metrics->Serve([&](httplib::Server& s) { AddMetricsRoute(s, [&] { return service.RenderMetrics(); }); });
    MOE_LOG(INFO) << "metrics on http://" << metrics->address() << "/metrics";
  }
  if (!(absl::GetFlag(FLAGS_shutdown_grace_s) >= 0)) {
    return absl::InvalidArgumentError("--shutdown-grace-s must be >= 0");
  }
  options.shutdown_grace = absl::Seconds(absl::GetFlag(FLAGS_shutdown_grace_s));
  const absl::Status served = ServeUntilSignal(options, {&service}, [&](grpc::Server*) {
    MOE_LOG(INFO) << "moe-expert-worker serving " << dir.path << " on " << options.listen << ": "
                  << store->num_layers() << " layers x " << store->num_experts() << " experts, "
                  << slots << " cached per layer (" << cache->Stats().policy << ")";
  });
  metrics.reset();  // its handler reads `service`, which goes first otherwise
  return served;
}

}  // namespace
}  // namespace moe::expert_worker

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("moe-expert-worker --model DIR --listen ADDR [--cache-per-layer K]");
  moe::ParseFlags(argc, argv);
  return moe::ExitCode("moe-expert-worker", moe::expert_worker::Run());
}
