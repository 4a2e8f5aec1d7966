// moe-expert-worker: owns every expert (host store, slot cache, compute) and serves
// moe.v1.ExpertWorker to a coordinator.
//
//   moe-expert-worker --model DIR --listen unix:/tmp/moe-worker.sock
//                     [--cache-per-layer K | --cache-bytes N] [--policy lru]
#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "common/command_line.h"
#include "common/grpc_server.h"
#include "common/logging.h"
#include "common/metrics_http_server.h"
#include "common/model_dir.h"
#include "common/status.h"
#include "expert_worker/slot_cache.h"
#include "expert_worker/worker_service.h"

ABSL_FLAG(std::string, model, "", "Model directory");
ABSL_FLAG(std::string, listen, "unix:/tmp/moe-worker.sock", "unix:PATH or HOST:PORT");
ABSL_FLAG(int, cache_per_layer, 0, "Experts kept resident per layer (0: all, or --cache-bytes)");
ABSL_FLAG(int64_t, cache_bytes, 0, "Expert cache budget in bytes (alternative to --cache-per-layer)");
ABSL_FLAG(std::string, policy, "lru", "Cache eviction policy");
ABSL_FLAG(int, max_message_bytes, 64 << 20, "Largest gRPC message accepted");
ABSL_FLAG(double, link_gbps, 0, "Link model: host-to-cache copy bandwidth in GB/s (0: memcpy speed)");
ABSL_FLAG(double, link_latency_us, 0, "Link model: fixed cost per copy in microseconds");
ABSL_FLAG(std::string, metrics_listen, "",
          "HOST:PORT for Prometheus text on GET /metrics (empty: no endpoint)");
ABSL_FLAG(double, shutdown_grace_s, 10, "On SIGTERM/SIGINT: seconds in-flight calls may run on");

namespace moe::expert_worker {
namespace {

absl::Status Run() {
  const std::string model = absl::GetFlag(FLAGS_model);
  if (model.empty()) return absl::InvalidArgumentError("--model is required");
  if (absl::GetFlag(FLAGS_cache_per_layer) != 0 && absl::GetFlag(FLAGS_cache_bytes) != 0) {
    return absl::InvalidArgumentError("give --cache-per-layer or --cache-bytes, not both");
  }
  MOE_ASSIGN_OR_RETURN(ModelDir dir, ModelDir::Open(model));
  MOE_ASSIGN_OR_RETURN(auto store, ExpertStore::Load(dir));
  int slots = absl::GetFlag(FLAGS_cache_per_layer);
  if (absl::GetFlag(FLAGS_cache_bytes) > 0) {
    MOE_ASSIGN_OR_RETURN(slots, SlotCache::SlotsForBytes(*store, absl::GetFlag(FLAGS_cache_bytes)));
  }
  if (slots == 0) slots = store->num_experts();
  MOE_ASSIGN_OR_RETURN(auto policy, MakeCachePolicy(absl::GetFlag(FLAGS_policy)));
  MOE_ASSIGN_OR_RETURN(auto cache, SlotCache::Create(store.get(), slots, std::move(policy)));
  if (absl::GetFlag(FLAGS_link_gbps) < 0 || absl::GetFlag(FLAGS_link_latency_us) < 0) {
    return absl::InvalidArgumentError("--link-gbps and --link-latency-us must be >= 0");
  }
  cache->set_link({absl::GetFlag(FLAGS_link_gbps), absl::GetFlag(FLAGS_link_latency_us)});
  WorkerService service(cache.get(), /*device=*/nullptr);  // the CPU until --device lands
  std::unique_ptr<MetricsHttpServer> metrics;
  if (!absl::GetFlag(FLAGS_metrics_listen).empty()) {
    MOE_ASSIGN_OR_RETURN(metrics, MetricsHttpServer::Start(absl::GetFlag(FLAGS_metrics_listen),
                                                           [&] { return service.RenderMetrics(); }));
    MOE_LOG(INFO) << "metrics on http://" << absl::GetFlag(FLAGS_metrics_listen) << "/metrics";
  }
  ServerOptions options;
  options.listen = absl::GetFlag(FLAGS_listen);
  options.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  if (!(absl::GetFlag(FLAGS_shutdown_grace_s) >= 0)) {
    return absl::InvalidArgumentError("--shutdown-grace-s must be >= 0");
  }
  options.shutdown_grace = absl::Seconds(absl::GetFlag(FLAGS_shutdown_grace_s));
  return ServeUntilSignal(options, {&service}, [&](grpc::Server*) {
    MOE_LOG(INFO) << "moe-expert-worker serving " << dir.path << " on " << options.listen << ": "
                  << store->num_layers() << " layers x " << store->num_experts() << " experts, "
                  << slots << " cached per layer (" << absl::GetFlag(FLAGS_policy) << ")";
  });
}

}  // namespace
}  // namespace moe::expert_worker

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("moe-expert-worker --model DIR --listen ADDR [--cache-per-layer K]");
  moe::ParseFlags(argc, argv);
  return moe::ExitCode("moe-expert-worker", moe::expert_worker::Run());
}
