#include "tools/cli/offload_bench.h"

#include <chrono>
#include <fstream>
#include <sstream>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/status.h"

namespace moe {

absl::StatusOr<BenchVariant> ParseBenchVariant(absl::string_view name) {
  if (name == "full") return BenchVariant::kFull;
  if (name == "no-prefetch") return BenchVariant::kNoPrefetch;
  if (name == "no-cache") return BenchVariant::kNoCache;
  if (name == "naive") return BenchVariant::kNaive;
  return absl::InvalidArgumentError(absl::StrCat(
      "--variant ", QuoteForMessage(name), " is not one of full, no-prefetch, no-cache, naive"));
}

absl::string_view BenchVariantName(BenchVariant variant) {
  switch (variant) {
    case BenchVariant::kFull: return "full";
    case BenchVariant::kNoPrefetch: return "no-prefetch";
    case BenchVariant::kNoCache: return "no-cache";
    case BenchVariant::kNaive: return "naive";
  }
  return "?";
}

namespace {

struct CacheFigures {
  uint64_t hits = 0, misses = 0, prefetch_loads = 0, prefetch_hits = 0, bytes_copied = 0;
  double stall_s = 0;
  CacheFigures operator-(const CacheFigures& o) const {
    return {hits - o.hits, misses - o.misses, prefetch_loads - o.prefetch_loads,
            prefetch_hits - o.prefetch_hits, bytes_copied - o.bytes_copied, stall_s - o.stall_s};
  }
};

// The worker's cache counters, in-process or over GetStats.
absl::StatusOr<CacheFigures> ReadCache(LocalEngine& engine) {
  if (engine.cache() != nullptr) {
    const expert_worker::CacheCounters c = engine.cache()->Stats().total;
    return CacheFigures{c.hits, c.misses, c.prefetch_loads, c.prefetch_hits, c.bytes_copied, c.stall_s};
  }
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::WorkerStats stats;
  MOE_RETURN_IF_ERROR(FromGrpcStatus(engine.worker()->stub().GetStats(&context, {}, &stats)));
  const v1::CacheCounters& c = stats.total();
  return CacheFigures{c.hits(), c.misses(), c.prefetch_loads(), c.prefetch_hits(),
                      c.bytes_copied(), c.stall_s()};
}

absl::StatusOr<std::string> ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("--text-file ", QuoteForMessage(path), ": cannot open"));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

double Ratio(double a, double b) { return b > 0 ? a / b : 0; }

}  // namespace

absl::StatusOr<nlohmann::json> RunOffloadBench(const BenchOptions& options, BenchVariant variant) {
  if (options.max_tokens < 1) return absl::InvalidArgumentError("--max-tokens must be >= 1");
  if (options.lookahead < 0 || options.lookahead > coordinator::kMaxLookahead) {
    return absl::InvalidArgumentError(absl::StrCat("--lookahead must be in [0, ",
                                                   coordinator::kMaxLookahead, "]"));
  }
  if (options.prefetch_experts < 1) return absl::InvalidArgumentError("--prefetch-experts must be >= 1");
  const bool remote = !options.worker.empty();
  if (remote && (variant == BenchVariant::kNoCache || variant == BenchVariant::kNaive)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--variant ", BenchVariantName(variant),
        " runs the expert worker in this process; drop --worker (a worker process keeps its cache)"));
  }
  EngineOptions engine_options;
  engine_options.worker_address = options.worker;
  engine_options.device = options.device;
  engine_options.vram_budget_gib = options.vram_budget_gib;
  engine_options.experts = options.experts;
  engine_options.experts.retention =
      variant == BenchVariant::kNoCache || variant == BenchVariant::kNaive
          ? expert_worker::Retention::kDrop
          : expert_worker::Retention::kKeep;
  engine_options.load_whole_layer = variant == BenchVariant::kNaive;
  MOE_ASSIGN_OR_RETURN(auto engine, LocalEngine::Open(options.model, engine_options));
  const int experts = static_cast<int>(engine->config().num_local_experts);
  int cache_per_layer = 0;  // with a worker: its own setting, read below
  if (!remote) {
    cache_per_layer = engine->cache()->slots_per_layer();
    if (options.experts.cache_per_layer == 0 && options.experts.cache_bytes == 0) {
      // The size is known once the model is: a quarter of the experts by default.
      cache_per_layer = std::max(1, experts / 4);
      MOE_RETURN_IF_ERROR(engine->cache()->Resize(cache_per_layer));
    }
  }
  const coordinator::SpeculationOptions speculation{
      variant == BenchVariant::kFull ? options.lookahead : 0, options.prefetch_experts};
  engine->model().set_speculation(speculation);

  MOE_ASSIGN_OR_RETURN(std::string text, ReadText(options.text_file));
  MOE_ASSIGN_OR_RETURN(auto tokenizer, engine->dir().LoadTokenizer());
  MOE_ASSIGN_OR_RETURN(std::vector<int> ids, tokenizer->Encode(text, /*add_bos=*/true));
  const int64_t context = engine->config().max_position_embeddings;
  const int64_t steps = std::min<int64_t>({int64_t(options.max_tokens), int64_t(ids.size()) - 1,
                                           context - 1 - options.warmup_tokens});
  if (steps < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--text-file ", QuoteForMessage(options.text_file), " has ", ids.size(),
        " tokens: too few to decode ", options.warmup_tokens, " warm-up tokens and one more"));
  }
  const int64_t warmup = std::min<int64_t>(options.warmup_tokens, int64_t(ids.size()) - 1 - steps);

  // Teacher-forced decoding: one token per forward pass, the text's own next token fed
  // in, so every variant sees the same routing and the same work.
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<coordinator::KvCache> owned_cache,
                       engine->model().NewCache(1 + warmup + steps));
  coordinator::KvCache& cache = *owned_cache;
  std::vector<float> logits;
  auto decode = [&](int64_t from, int64_t count, coordinator::ForwardStats* stats) -> absl::Status {
    for (int64_t t = from; t < from + count; ++t) {
      const int token[1] = {ids[t]};
      MOE_RETURN_IF_ERROR(engine->model().Forward(token, cache, coordinator::MixtralModel::Logits::kLast,
                                                  &logits, nullptr, stats));
    }
    return absl::OkStatus();
  };
  MOE_RETURN_IF_ERROR(decode(0, 1 + warmup, nullptr));
  if (engine->in_process() != nullptr) engine->in_process()->prefetch_queue().Drain();
  MOE_ASSIGN_OR_RETURN(const CacheFigures before, ReadCache(*engine));
  coordinator::ForwardStats forward;
  const auto t0 = std::chrono::steady_clock::now();
  MOE_RETURN_IF_ERROR(decode(1 + warmup, steps, &forward));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (engine->in_process() != nullptr) engine->in_process()->prefetch_queue().Drain();
  MOE_ASSIGN_OR_RETURN(const CacheFigures after, ReadCache(*engine));
  const CacheFigures c = after - before;
  const uint64_t uses = c.hits + c.misses;

  nlohmann::json out;
  out["variant"] = std::string(BenchVariantName(variant));
  out["mode"] = "teacher-forced";
  out["model"] = options.model;
  out["tokens"] = steps;
  out["warmup_tokens"] = warmup;
  out["seconds"] = seconds;
  out["decode_tokens_per_s"] = steps / seconds;
  out["hit_ratio"] = Ratio(double(c.hits), double(uses));
  out["prefetch_recall"] = Ratio(double(c.prefetch_hits), double(uses));
  out["prefetch_precision"] = Ratio(double(c.prefetch_hits), double(c.prefetch_loads));
  out["bytes_copied"] = c.bytes_copied;
  out["bytes_per_token"] = double(c.bytes_copied) / steps;
  out["stall_s"] = c.stall_s;
  out["expert_uses"] = uses;
  out["prefetch_loads"] = c.prefetch_loads;
  out["expert_compute_s"] = forward.experts.compute_s;
  out["expert_rpc_s"] = forward.experts.rpc_s;
  out["guess_recall"] = forward.speculation.recall();
  out["guess_precision"] = forward.speculation.precision();
  nlohmann::json by_distance = nlohmann::json::array();
  for (int d = 0; d < speculation.lookahead; ++d) {
    by_distance.push_back(forward.speculation.by_distance[d].recall());
  }
  out["guess_recall_by_distance"] = by_distance;
  if (remote) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::WorkerStats stats;
    MOE_RETURN_IF_ERROR(FromGrpcStatus(engine->worker()->stub().GetStats(&context, {}, &stats)));
    cache_per_layer = static_cast<int>(stats.cache_per_layer());
    out["policy"] = stats.policy();
  } else {
    out["policy"] = engine->cache()->Stats().policy;
  }
  out["cache_per_layer"] = cache_per_layer;
  out["experts_per_layer"] = experts;
  out["link_gbps"] = options.experts.link.gbps;
  out["link_latency_us"] = options.experts.link.latency_us;
  out["lookahead"] = speculation.lookahead;
  out["prefetch_experts"] = speculation.experts;
  out["worker"] = remote ? options.worker : "in-process";
  out["threads"] = ComputeThreads();
  return out;
}

}  // namespace moe
