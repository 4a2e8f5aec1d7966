#include "coordinator/generation_service.h"

#include <algorithm>
#include <chrono>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "common/chat_template.h"
#include "common/grpc_security.h"
#include "common/grpc_status.h"
#include "common/logging.h"
#include "common/proto_parse.h"
#include "common/prometheus_text.h"
#include "common/status.h"
#include "coordinator/generation_defaults.h"
#include "coordinator/kv_cache.h"
#include "coordinator/stop_string_filter.h"
#include "coordinator/throttled_check.h"

namespace moe::coordinator {

absl::string_view FinishReasonName(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_EOS: return "eos";
    case v1::FINISH_REASON_LENGTH: return "length";
    case v1::FINISH_REASON_STOP_STRING: return "stop";
    default: return "";
  }
}

absl::StatusOr<std::vector<int>> GenerationService::PromptIds(const v1::GenerateRequest& request) const {
  const bool has_prompt = !request.prompt().empty();
  const bool has_chat = request.messages_size() > 0;
  if (has_prompt == has_chat) {
    return absl::InvalidArgumentError(has_prompt ? "give either prompt or messages, not both"
                                                 : "the prompt is empty (set prompt or messages)");
  }
  std::vector<int> ids;
  if (has_prompt) {
    MOE_ASSIGN_OR_RETURN(ids, tokenizer_->Encode(request.prompt(), /*add_bos=*/true));
  } else {
    std::vector<ChatMessage> chat;
    for (const auto& m : request.messages()) chat.push_back({m.role(), m.content()});
    MOE_ASSIGN_OR_RETURN(ids, RenderChat(*tokenizer_, chat));
  }
  return ids;
}

namespace {

// Method indices in moe.v1.Generation's service definition.
constexpr int kGenerateMethod = 0;
constexpr int kTokenizeMethod = 1;

// How late a client that went away (or whose deadline passed) may be noticed: longer
// than a 32-stream step (~10 ms), so that the step thread asks each client about once
// per step or less, not before each of its layers.
constexpr absl::Duration kClientGoneInterval = absl::Milliseconds(20);

// Reads the one request of a call served from bytes.
template <typename Request, typename Response>
grpc::Status ReadRequest(grpc::ServerReaderWriter<Response, grpc::ByteBuffer>* stream,
                         Request* request) {
  grpc::ByteBuffer raw;
  if (!stream->Read(&raw)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "the call carried no request");
  }
  return ToGrpcStatus(ParseProtoChecked(raw, request));
}

}  // namespace

GenerationService::GenerationService(const MixtralModel* model, const Tokenizer* tokenizer,
                                     GenerationServiceOptions options)
    : model_(model), tokenizer_(tokenizer), options_(std::move(options)) {
  absl::StatusOr<std::unique_ptr<BatchScheduler>> scheduler =
      BatchScheduler::Create(model_, {options_.max_batch_tokens, options_.batch_lanes});
  MOE_CHECK(scheduler.ok()) << "GenerationService: " << scheduler.status();
  scheduler_ = *std::move(scheduler);
  // gRPC's "streamed" handlers read the request bytes themselves: one read, then as many
  // writes as the RPC's type allows (clients see no difference on the wire).
  MarkMethodStreamed(
      kGenerateMethod,
      new grpc::internal::BidiStreamingHandler<GenerationService, grpc::ByteBuffer,
                                               v1::GenerateResponse>(
          [](GenerationService* service, grpc::ServerContext* context,
             grpc::ServerReaderWriter<v1::GenerateResponse, grpc::ByteBuffer>* stream) {
            return service->GenerateFromBytes(context, stream);
          },
          this));
  MarkMethodStreamed(
      kTokenizeMethod,
      new grpc::internal::BidiStreamingHandler<GenerationService, grpc::ByteBuffer,
                                               v1::TokenizeResponse>(
          [](GenerationService* service, grpc::ServerContext* context,
             grpc::ServerReaderWriter<v1::TokenizeResponse, grpc::ByteBuffer>* stream) {
            return service->TokenizeFromBytes(context, stream);
          },
          this));
}

grpc::Status GenerationService::GenerateFromBytes(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::GenerateResponse, grpc::ByteBuffer>* stream) {
  v1::GenerateRequest request;
  // Credentials before parsing: an unauthenticated caller learns nothing of its request.
  if (absl::Status auth = CheckBearerToken(*context, options_.api_key); !auth.ok()) {
    return ToGrpcStatus(auth);
  }
  if (grpc::Status read = ReadRequest(stream, &request); !read.ok()) return read;
  return ToGrpcStatus(Serve(
      request, [context] { return context->IsCancelled(); },
      [stream](const v1::GenerateResponse& response) { return stream->Write(response); }));
}

grpc::Status GenerationService::TokenizeFromBytes(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::TokenizeResponse, grpc::ByteBuffer>* stream) {
  v1::TokenizeRequest request;
  if (absl::Status auth = CheckBearerToken(*context, options_.api_key); !auth.ok()) {
    return ToGrpcStatus(auth);
  }
  if (grpc::Status read = ReadRequest(stream, &request); !read.ok()) return read;
  if (absl::Status sized = CheckRequestSize(request, options_.limits); !sized.ok()) {
    return ToGrpcStatus(sized);
  }
  if (absl::Status admitted = Admit(); !admitted.ok()) return ToGrpcStatus(admitted);
  absl::Cleanup release = [this] { admitted_.fetch_sub(1); };
  absl::StatusOr<std::vector<int>> ids = tokenizer_->Encode(request.text(), request.add_bos());
  if (!ids.ok()) return ToGrpcStatus(ids.status());
  v1::TokenizeResponse response;
  for (int id : *ids) response.add_token_ids(static_cast<uint32_t>(id));
  if (!stream->Write(response)) {
    return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
  }
  return grpc::Status::OK;
}

void GenerationService::BeginShutdown(absl::Time drain_deadline) {
  drain_deadline_ns_ = absl::ToUnixNanos(drain_deadline);
  shutting_down_ = true;
}

absl::Status GenerationService::Admit() {
  if (shutting_down_.load()) return absl::UnavailableError("the coordinator is shutting down");
  if (admitted_.fetch_add(1) >= options_.max_requests) {
    admitted_.fetch_sub(1);
    {
      std::lock_guard<std::mutex> lock(totals_mu_);
      ++totals_.rejected;
    }
    return absl::ResourceExhaustedError(absl::StrCat(
        "the coordinator is serving its limit of ", options_.max_requests, " requests; retry later"));
  }
  return absl::OkStatus();
}

absl::Status GenerationService::ReserveKv(int64_t bytes, int64_t tokens) {
  std::lock_guard<std::mutex> lock(kv_mu_);
  if (options_.max_kv_bytes > 0 && kv_reserved_ + bytes > options_.max_kv_bytes) {
    {
      std::lock_guard<std::mutex> totals_lock(totals_mu_);
      ++totals_.rejected;
    }
    return absl::ResourceExhaustedError(absl::StrCat(
        "KV cache budget: this request needs ", bytes, " bytes (", tokens, " positions); ",
        kv_reserved_, " of ", options_.max_kv_bytes, " bytes are reserved by ", kv_reservations_,
        " running requests (--max-kv-gib); retry later or ask for fewer tokens"));
  }
  kv_reserved_ += bytes;
  ++kv_reservations_;
  return absl::OkStatus();
}

absl::Status GenerationService::Serve(const v1::GenerateRequest& request,
                                      const std::function<bool()>& client_gone,
                                      const ResponseWriter& write) {
  // Size and encoding first: an oversized request costs nothing, not even a slot.
  MOE_RETURN_IF_ERROR(CheckRequestSize(request, options_.limits));
  MOE_RETURN_IF_ERROR(Admit());
  absl::Cleanup release = [this] { admitted_.fetch_sub(1); };
  return DoGenerate(request, client_gone, write);
}

absl::Status GenerationService::DoGenerate(const v1::GenerateRequest& request,
                                           const std::function<bool()>& client_gone,
                                           const ResponseWriter& write) {
  using Clock = std::chrono::steady_clock;
  const auto received = Clock::now();
  MOE_ASSIGN_OR_RETURN(std::vector<int> prompt, PromptIds(request));
  if (client_gone()) {
    return absl::CancelledError("the client went away (or its deadline passed) while the prompt was tokenized");
  }
  // uint32 on the wire: bound it before it becomes an int.
  const int64_t context_length = model_->max_context_tokens();
  // Absent fields take the defaults every caller shares.
  const GenerationDefaults& defaults = kGenerationDefaults;
  const uint32_t max_new_tokens =
      request.has_max_new_tokens() ? request.max_new_tokens() : defaults.max_new_tokens;
  if (max_new_tokens >= context_length) {
    return absl::InvalidArgumentError(absl::StrCat("max_new_tokens ", max_new_tokens,
                                                   " is not below the context of ", context_length,
                                                   " tokens"));
  }
  GenerateOptions options;
  options.max_new_tokens = static_cast<int>(max_new_tokens);
  options.sampling.temperature =
      request.has_temperature() ? request.temperature() : static_cast<float>(defaults.temperature);
  const float top_p = request.has_top_p() ? request.top_p() : static_cast<float>(defaults.top_p);
  options.sampling.top_p = top_p == 0.0f ? 1.0f : top_p;
  // k at or past the vocabulary keeps every token; clamping keeps the cast in range.
  options.sampling.top_k = static_cast<int>(std::min<uint64_t>(
      request.has_top_k() ? request.top_k() : defaults.top_k, uint64_t(model_->config().vocab_size)));
  options.sampling.seed = request.seed();
  // Past the drain deadline of a shutdown, in-flight generations stop like cancelled ones.
  auto drained = [this] {
    return shutting_down_.load() && absl::GetCurrentTimeNanos() >= drain_deadline_ns_.load();
  };
  // The scheduler asks before every layer of every step, for each of its streams, on
  // its step thread; a gRPC context answers through its completion queue, so it is put
  // the question at most once per kClientGoneInterval (throttled_check.h).
  ThrottledCheck gone(client_gone, kClientGoneInterval);
  options.cancelled = [&gone, drained] { return gone() || drained(); };
  options.scheduler = scheduler_.get();
  // A bad request is INVALID_ARGUMENT even while no worker answers.
  MOE_RETURN_IF_ERROR(CheckGenerateRequest(model_->config(), int64_t(prompt.size()), options));
  if (options_.experts_available && !options_.experts_available()) {
    return absl::UnavailableError("no expert worker is answering; retry when it is back");
  }
  const int64_t positions = int64_t(prompt.size()) + options.max_new_tokens;
  const int64_t kv_bytes = KvCache::Bytes(model_->config(), positions);
  MOE_RETURN_IF_ERROR(ReserveKv(kv_bytes, positions));
  absl::Cleanup unreserve = [this, kv_bytes] {
    std::lock_guard<std::mutex> lock(kv_mu_);
    kv_reserved_ -= kv_bytes;
    --kv_reservations_;
  };

  StreamingDecoder decoder(*tokenizer_, prompt);
  StopStringFilter stops({request.stop().begin(), request.stop().end()});
  absl::Status stream_status;
  bool stopped = false;
  double first_token_s = 0;
  const int eos = static_cast<int>(model_->config().eos_token_id);
  Clock::time_point last_token;
  auto on_token = [&](int token) {
    const auto now = Clock::now();
    if (first_token_s == 0) {
      first_token_s = std::chrono::duration<double>(now - received).count();
      time_to_first_token_.Observe(first_token_s);
    } else {
      inter_token_.Observe(std::chrono::duration<double>(now - last_token).count());
    }
    last_token = now;
    v1::GenerateResponse response;
    response.add_token_ids(static_cast<uint32_t>(token));
    if (token != eos) {
      auto piece = decoder.Push(token);
      if (!piece.ok()) {
        stream_status = piece.status();
        return false;
      }
      response.set_text(stops.Push(*piece, &stopped));
    }
    if (!write(response)) {
      stream_status = absl::CancelledError("the client went away");
      return false;
    }
    // Here, on the caller's thread, while the step thread computes the next step: the
    // step thread then finds a fresh answer and seldom asks gRPC itself (a completion
    // queue pluck, a futex call each; ~16 per 32-row step before).
    gone.AskEarly();
    return !stopped;
  };
  absl::StatusOr<GenerationResult> generated = coordinator::Generate(*model_, prompt, options, on_token);
  if (absl::IsCancelled(generated.status()) && drained() && !client_gone()) {
    const absl::Status drained_status = absl::UnavailableError(
        "the coordinator shut down before this generation finished (--shutdown-grace-s); retry");
    Record(drained_status, nullptr, first_token_s);
    return drained_status;
  }
  const absl::Status status = generated.ok() ? stream_status : generated.status();
  Record(status, status.ok() ? &*generated : nullptr, first_token_s);
  MOE_RETURN_IF_ERROR(status);
  const GenerationResult& result = *generated;

  v1::GenerateResponse last;
  if (!stopped) {
    MOE_ASSIGN_OR_RETURN(std::string tail, decoder.Flush());
    last.set_text(stops.Push(tail, &stopped));
    if (!stopped) last.mutable_text()->append(stops.Flush());
  }
  last.set_finish_reason(stopped ? v1::FINISH_REASON_STOP_STRING
                         : result.finish_reason == FinishReason::kEos ? v1::FINISH_REASON_EOS
                                                                      : v1::FINISH_REASON_LENGTH);
  auto* stats = last.mutable_stats();
  stats->set_prompt_tokens(result.prompt_tokens);
  stats->set_generated_tokens(static_cast<uint32_t>(result.tokens.size()));
  stats->set_time_to_first_token_s(first_token_s);
  stats->set_prefill_tokens_per_s(result.prompt_tokens / std::max(result.prefill_seconds, 1e-9));
  if (result.tokens.size() > 1) {
    stats->set_decode_tokens_per_s((result.tokens.size() - 1) / std::max(result.decode_seconds, 1e-9));
  }
  ForwardStats forward = result.prefill_stats;
  forward += result.decode_stats;
  stats->set_expert_rpc_s(forward.experts.rpc_s);
  stats->set_expert_cache_hits(forward.experts.hits);
  stats->set_expert_cache_misses(forward.experts.misses);
  stats->set_expert_prefetch_hits(forward.experts.prefetch_hits);
  stats->set_expert_stall_s(forward.experts.stall_s);
  stats->set_expert_compute_s(forward.experts.compute_s);
  stats->set_guess_recall(forward.speculation.recall());
  stats->set_guess_precision(forward.speculation.precision());
  if (!write(last)) return absl::CancelledError("the client went away");
  return absl::OkStatus();
}

void GenerationService::Record(const absl::Status& status, const GenerationResult* result,
                               double ttft_s) {
  std::lock_guard<std::mutex> lock(totals_mu_);
  if (!status.ok() || result == nullptr) {
    ++totals_.failed;
    return;
  }
  ++totals_.ok;
  totals_.prompt_tokens += result->prompt_tokens;
  totals_.generated_tokens += result->tokens.size();
  totals_.prefill_s += result->prefill_seconds;
  totals_.decode_s += result->decode_seconds;
  totals_.time_to_first_token_s += ttft_s;
}

std::string GenerationService::RenderMetrics() const {
  Totals t;
  {
    std::lock_guard<std::mutex> lock(totals_mu_);
    t = totals_;
  }
  PrometheusText out;
  out.Counter("moe_coordinator_requests_total", "Generate streams by outcome", t.ok, {{"outcome", "ok"}});
  out.Counter("moe_coordinator_requests_total", "Generate streams by outcome", t.failed,
              {{"outcome", "error"}});
  out.Counter("moe_coordinator_requests_total", "Generate streams by outcome", t.rejected,
              {{"outcome", "rejected"}});
  out.Gauge("moe_coordinator_active_requests", "Generate streams admitted now", admitted_.load());
  out.Gauge("moe_coordinator_kv_caches", "KV caches allocated now (one per live stream)",
            KvCache::LiveCaches());
  out.Gauge("moe_coordinator_kv_cache_bytes", "Bytes held by live KV caches", KvCache::LiveBytes());
  out.Counter("moe_coordinator_prompt_tokens_total", "Prompt tokens of finished streams", t.prompt_tokens);
  out.Counter("moe_coordinator_generated_tokens_total", "Tokens generated by finished streams",
              t.generated_tokens);
  out.Counter("moe_coordinator_prefill_seconds_total", "Seconds of prompt forward passes", t.prefill_s);
  out.Counter("moe_coordinator_decode_seconds_total", "Seconds of decoding after the first token",
              t.decode_s);
  out.Counter("moe_coordinator_time_to_first_token_seconds_total",
              "Sum of time to first token over finished streams", t.time_to_first_token_s);
  out.Histogram("moe_coordinator_first_token_latency_seconds",
                "Seconds from a request to its first token", time_to_first_token_.Get());
  out.Histogram("moe_coordinator_inter_token_latency_seconds",
                "Seconds between consecutive tokens of a stream", inter_token_.Get());
  const uint64_t decoded = t.generated_tokens > t.ok ? t.generated_tokens - t.ok : 0;
  out.Gauge("moe_coordinator_decode_tokens_per_second", "Decoded tokens / decode seconds since start",
            t.decode_s > 0 ? decoded / t.decode_s : 0);
  const BatchTotals batches = scheduler_->totals();
  out.Counter("moe_coordinator_batch_steps_total", "Forward passes of the batch scheduler",
              batches.steps);
  out.Counter("moe_coordinator_batch_rows_total", "Rows those passes carried, by kind",
              batches.prompt_rows, {{"kind", "prompt"}});
  out.Counter("moe_coordinator_batch_rows_total", "Rows those passes carried, by kind",
              batches.decode_rows, {{"kind", "decode"}});
  out.Counter("moe_coordinator_batch_steps_aborted_total",
              "Passes stopped (and run again) because one of their streams ended",
              batches.aborted);
  const ExpertCallStats& e = batches.forward.experts;
  out.Counter("moe_coordinator_expert_calls_total", "RunExperts calls", e.calls);
  out.Counter("moe_coordinator_expert_ring_calls_total",
              "Of those, calls through the activation ring (no RPC)", e.ring_calls);
  out.Counter("moe_coordinator_expert_rpc_seconds_total", "Round trips of RunExperts calls", e.rpc_s);
  out.Counter("moe_coordinator_expert_stall_seconds_total", "Worker time waiting for expert copies",
              e.stall_s);
  out.Counter("moe_coordinator_expert_compute_seconds_total", "Worker time computing experts",
              e.compute_s);
  out.Counter("moe_coordinator_expert_cache_hits_total", "Expert uses found resident", e.hits);
  out.Counter("moe_coordinator_expert_cache_misses_total", "Expert uses loaded on demand", e.misses);
  out.Gauge("moe_coordinator_expert_hit_ratio", "hits / (hits + misses) since start",
            e.hit_ratio());
  out.Gauge("moe_coordinator_prefetch_recall", "Expert uses a prefetch had loaded / expert uses",
            e.prefetch_recall());
  const SpeculationStats& sp = batches.forward.speculation;
  out.Counter("moe_coordinator_guesses_total", "Speculative (token, layer, expert) guesses sent",
              sp.hinted);
  out.Gauge("moe_coordinator_guess_recall", "Router choices that were guessed / router choices",
            sp.recall());
  out.Gauge("moe_coordinator_guess_precision", "Guesses the router chose / guesses", sp.precision());
  return out.text();
}

grpc::Status GenerationService::GetModelInfo(grpc::ServerContext* context,
                                             const v1::GetModelInfoRequest*,
                                             v1::ModelInfo* response) {
  if (absl::Status auth = CheckBearerToken(*context, options_.api_key); !auth.ok()) {
    return ToGrpcStatus(auth);
  }
  const ModelConfig& c = model_->config();
  response->set_model_type(c.model_type);
  response->set_vocab_size(c.vocab_size);
  response->set_hidden_size(c.hidden_size);
  response->set_intermediate_size(c.intermediate_size);
  response->set_num_layers(c.num_hidden_layers);
  response->set_num_attention_heads(c.num_attention_heads);
  response->set_num_key_value_heads(c.num_key_value_heads);
  response->set_head_dim(c.head_dim);
  response->set_num_experts(c.num_local_experts);
  response->set_experts_per_token(c.num_experts_per_tok);
  response->set_context_length(model_->max_context_tokens());
  response->set_parameters(c.TotalParams());
  return grpc::Status::OK;
}

}  // namespace moe::coordinator
