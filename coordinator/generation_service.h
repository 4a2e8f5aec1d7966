// moe.v1.Generation: a thin adapter from the public API onto the generator. Runs on
// gRPC's synchronous server (a generation is a long blocking loop). Admitted requests
// step together on the one model (continuous batching, batch_scheduler.h); past
// `max_requests` new ones get RESOURCE_EXHAUSTED at once.
#ifndef MOE_COORDINATOR_GENERATION_SERVICE_H_
#define MOE_COORDINATOR_GENERATION_SERVICE_H_

#include <atomic>
#include <functional>
#include <mutex>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/prometheus_text.h"
#include "common/tokenizer.h"
#include "coordinator/generator.h"
#include "coordinator/mixtral_model.h"
#include "coordinator/request_limits.h"
#include "coordinator/batch_scheduler.h"
#include "moe/v1/generation.grpc.pb.h"

namespace moe::coordinator {

struct GenerationServiceOptions {
  int max_requests = 16;  // admitted at once (running or waiting for their next step)
  // Rows of one forward pass: every running stream's next token plus prompt chunks
  // (BatchSchedulerOptions::max_batch_tokens); must be >= 1.
  int64_t max_batch_tokens = 256;
  // Step threads of the scheduler (BatchSchedulerOptions::lanes), in [1, kMaxBatchLanes].
  int batch_lanes = 1;
  // Whether the expert backend can serve now; when false Generate answers UNAVAILABLE
  // without computing. Null: always.
  std::function<bool()> experts_available;
  // What one request may make us spend, checked before any work.
  RequestLimits limits;
  // KV cache bytes all admitted generations may reserve together (each reserves its
  // prompt plus max_new_tokens positions); beyond it RESOURCE_EXHAUSTED says how much is
  // in use. 0: no budget beyond max_requests.
  int64_t max_kv_bytes = 0;
  // When set, every call must carry `authorization: Bearer api_key` (UNAUTHENTICATED
  // otherwise, before any other check).
  std::string api_key;
};

// How every command line prints a finish reason: "eos", "length" or "stop" ("" for
// FINISH_REASON_UNSPECIFIED). The HTTP API says OpenAI's words (openai_json.h).
absl::string_view FinishReasonName(v1::FinishReason reason);

// Thread-safe. `model` and `tokenizer` must outlive the service.
class GenerationService final : public v1::Generation::Service {
 public:
  // Generate and Tokenize are served from the raw request bytes (ParseProtoChecked), so
  // that a string field that is not UTF-8 is INVALID_ARGUMENT naming the field, not the
  // INTERNAL gRPC's own parse answers.
  // Aborts when options.max_batch_tokens < 1 or batch_lanes is out of range (callers
  // check their flags first).
  GenerationService(const MixtralModel* model, const Tokenizer* tokenizer,
                    GenerationServiceOptions options);

  // Generate and Tokenize have no typed overrides: the constructor replaces their
  // handlers with GenerateFromBytes and TokenizeFromBytes.
  grpc::Status GetModelInfo(grpc::ServerContext* context, const v1::GetModelInfoRequest* request,
                            v1::ModelInfo* response) override;

  // Sends one response of a generation; false when the client went away.
  using ResponseWriter = std::function<bool(const v1::GenerateResponse&)>;
  // Generate without gRPC (coordinator/http_api serves it too): the shutdown and
  // admission checks, the request checks, then the generation. `client_gone` is asked
  // before every layer step.
  absl::Status Serve(const v1::GenerateRequest& request, const std::function<bool()>& client_gone,
                     const ResponseWriter& write);

  // The service's figures since start as Prometheus text (names moe_coordinator_...).
  std::string RenderMetrics() const;
  // Graceful shutdown: from now on Generate answers UNAVAILABLE; generations in flight
  // run on until `drain_deadline`, and those still running then stop within one layer
  // step with UNAVAILABLE ("shutting down"), freeing their KV caches.
  void BeginShutdown(absl::Time drain_deadline);

 private:
  // Renders the request's prompt (plain or chat) to token ids; INVALID_ARGUMENT when
  // neither or both are given, or for a bad chat.
  absl::StatusOr<std::vector<int>> PromptIds(const v1::GenerateRequest& request) const;
  // What the server runs for Generate and Tokenize: credentials, the checked parse, then
  // the call.
  grpc::Status GenerateFromBytes(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::GenerateResponse, grpc::ByteBuffer>* stream);
  grpc::Status TokenizeFromBytes(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::TokenizeResponse, grpc::ByteBuffer>* stream);
  absl::Status DoGenerate(const v1::GenerateRequest& request,
                          const std::function<bool()>& client_gone, const ResponseWriter& write);
  // Admission for Generate and Tokenize alike: UNAVAILABLE while shutting down,
  // RESOURCE_EXHAUSTED past max_requests. OK means admitted_ was incremented.
  absl::Status Admit();
  // Reserves `bytes` of the KV budget; RESOURCE_EXHAUSTED naming the figures if full.
  absl::Status ReserveKv(int64_t bytes, int64_t tokens);

  // Totals over finished streams, for /metrics (the passes' own figures are the
  // scheduler's: a pass shared by several streams counts once there).
  struct Totals {
    uint64_t ok = 0, failed = 0, rejected = 0;
    uint64_t prompt_tokens = 0, generated_tokens = 0;
    double prefill_s = 0, decode_s = 0, time_to_first_token_s = 0;
  };
  void Record(const absl::Status& status, const GenerationResult* result, double ttft_s);

  const MixtralModel* model_;
  const Tokenizer* tokenizer_;
  const GenerationServiceOptions options_;
  std::atomic<int> admitted_{0};
  std::mutex kv_mu_;
  int64_t kv_reserved_ = 0;   // guarded by kv_mu_
  int kv_reservations_ = 0;   // guarded by kv_mu_
  mutable std::mutex totals_mu_;
  Totals totals_;  // guarded by totals_mu_
  LatencyHistogram time_to_first_token_, inter_token_;  // for /metrics
  std::atomic<bool> shutting_down_{false};
  std::atomic<int64_t> drain_deadline_ns_{0};  // absl::ToUnixNanos, once shutting_down_
  // Declared last: destroyed first, once no generation runs.
  std::unique_ptr<BatchScheduler> scheduler_;
};

}  // namespace moe::coordinator

#endif  // MOE_COORDINATOR_GENERATION_SERVICE_H_
