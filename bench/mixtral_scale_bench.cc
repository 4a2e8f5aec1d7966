// Decode speed at Mixtral-8x7B scale (hidden 4096, intermediate 14336, 32 layers, 8
// experts top-2, 32/8 heads, vocab 32000) on random weights generated in memory, for
// each device-memory budget and each scheduler variant (full / no-prefetch / no-cache /
// naive). The budget buys the dense weights, the KV cache and scratch first; what is
// left becomes expert slots per layer. Also reports the measured pinned host-to-device
// bandwidth and link efficiency: bytes moved into the expert cache per second of
// decoding over that peak.
//
// Random weights do not route like a trained model, so --routing replay:FILE replaces
// the routers' choices with a recorded trace (bench/kjv_moe_routing.trace, from the
// bundled model; its 4 layers repeat over the 32 with shifted tokens). Under replay the
// full variant's guesses still come from the random gates: its prefetches are wasted
// copies, and its figure is a lower bound.
//
//   mixtral_scale_bench --device cuda --expert-bits 3 --attn-bits 4 --budgets-gib 12,16 \
//       --routing replay:bench/kjv_moe_routing.trace --tokens 64
//   mixtral_scale_bench --dry-run ...   # the budget arithmetic only, no allocation
//
// Prints one JSON object per (budget, variant) run.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "bench/routing_trace.h"
#include "bench/synthetic_weights.h"
#include "common/backend/device.h"
#include "common/command_line.h"
#include "common/expert_stats.h"
#include "common/status.h"
#include "coordinator/device_weights.h"
#include "coordinator/kv_cache.h"
#include "coordinator/mixtral_model.h"
#include "expert_worker/cache_policy.h"
#include "expert_worker/expert_runner.h"
#include "expert_worker/expert_stack_flags.h"
#include "expert_worker/expert_store.h"
#include "expert_worker/slot_cache.h"
#include "nlohmann/json.hpp"
#include "tools/cli/offload_bench.h"

ABSL_FLAG(std::string, config, "tools/configs/mixtral-8x7b.json", "Model config (shapes only)");
ABSL_FLAG(int, layers, 0, "Override the config's layer count (0: keep)");
ABSL_FLAG(std::string, device, "cpu", "cpu, cuda or cuda:N");
ABSL_FLAG(int, expert_bits, 3, "Experts: 32 (fp32), 16 (fp16), 8, 4, 3 or 2 (HQQ layout)");
ABSL_FLAG(int, attn_bits, 4, "Attention projections: 32, 16, 8, 4, 3 or 2");
ABSL_FLAG(int, group_size, 64, "Quantization group size");
ABSL_FLAG(std::string, budgets_gib, "12,16", "Comma-separated device memory budgets, GiB");
ABSL_FLAG(std::string, variants, "all", "all, or a comma-separated list of full, no-prefetch, no-cache, naive");
ABSL_FLAG(std::string, routing, "random", "random (the random routers) or replay:FILE");
ABSL_FLAG(int, tokens, 64, "Decode steps measured per run");
ABSL_FLAG(int, warmup, 8, "Decode steps before measuring");
ABSL_FLAG(int, lookahead, 1, "Layers ahead the full variant guesses");
ABSL_FLAG(int, prefetch_experts, 2, "Experts prefetched per token and guessed layer");
ABSL_FLAG(int, workspace_tokens, 16, "Expert workspace rows (decode needs 1)");
ABSL_FLAG(uint64_t, seed, 1, "Weights and token seed");
ABSL_FLAG(bool, dry_run, false, "Print the budget arithmetic only");

namespace moe {
namespace {

using Clock = std::chrono::steady_clock;
using expert_worker::ExpertLayout;

constexpr double kGiB = double(1 << 30);

absl::StatusOr<std::vector<double>> ParseBudgets(const std::string& text) {
  std::vector<double> out;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    double v;
    if (!absl::SimpleAtod(part, &v) || !(v > 0)) {
      return absl::InvalidArgumentError(absl::StrCat("--budgets-gib: bad budget \"", part, "\""));
    }
    out.push_back(v);
  }
  return out;
}

absl::StatusOr<std::vector<BenchVariant>> ParseVariants(const std::string& text) {
  if (text == "all") {
    return std::vector<BenchVariant>{BenchVariant::kFull, BenchVariant::kNoPrefetch,
                                     BenchVariant::kNoCache, BenchVariant::kNaive};
  }
  std::vector<BenchVariant> out;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    MOE_ASSIGN_OR_RETURN(BenchVariant v, ParseBenchVariant(part));
    out.push_back(v);
  }
  return out;
}

absl::StatusOr<ExpertLayout> MakeExpertLayout(const ModelConfig& config, int bits,
                                              int64_t group_size) {
  ExpertLayout layout{config.hidden_size, config.intermediate_size, std::nullopt};
  if (bits == 32) return layout;
  quant::MatrixSpec spec;
  spec.bits = bits;
  spec.group_size = group_size;
  spec.dtype16 = DType::kF16;
  quant::ExpertBlobLayout packed;
  MOE_RETURN_IF_ERROR(Annotate(quant::ExpertBlobLayout::Compute(config, spec, &packed),
                               "--expert-bits"));
  layout.packed = packed;
  return layout;
}

void FillExpert(const ExpertLayout& layout, uint64_t seed, uint8_t* blob) {
  if (layout.packed) {
    const quant::ExpertBlobLayout& p = *layout.packed;
    bench::FillRandomMatrix(p.w1, seed * 3 + 0, blob + p.w1_offset);
    bench::FillRandomMatrix(p.w3, seed * 3 + 1, blob + p.w3_offset);
    bench::FillRandomMatrix(p.w2, seed * 3 + 2, blob + p.w2_offset);
    return;
  }
  float* f = reinterpret_cast<float*>(blob);
  const int64_t h = layout.hidden, i = layout.intermediate;
  bench::FillRandomFloats(f + layout.w1_offset(), i * h, 1 / std::sqrt(float(h)), seed * 3 + 0);
  bench::FillRandomFloats(f + layout.w3_offset(), i * h, 1 / std::sqrt(float(h)), seed * 3 + 1);
  bench::FillRandomFloats(f + layout.w2_offset(), h * i, 1 / std::sqrt(float(i)), seed * 3 + 2);
}

// Pinned host-to-device copy bandwidth, GB/s (1e9 bytes): the best of several 256 MiB
// copies (on the CPU device: a memcpy between two host buffers).
absl::StatusOr<double> MeasurePeakH2D(backend::Device& device) {
  constexpr size_t kBytes = size_t(256) << 20;
  MOE_ASSIGN_OR_RETURN(auto host, device.AllocatePinnedHost(kBytes));
  MOE_ASSIGN_OR_RETURN(auto dst, device.Allocate(kBytes));
  MOE_ASSIGN_OR_RETURN(auto stream, device.CreateStream());
  std::fill_n(host->as<uint8_t>(), kBytes, uint8_t{1});
  double best = 0;
  for (int i = 0; i < 6; ++i) {
    const auto t0 = Clock::now();
    MOE_RETURN_IF_ERROR(device.CopyToDevice(dst->data(), host->data(), kBytes, *stream));
    MOE_RETURN_IF_ERROR(stream->Synchronize());
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (i > 0) best = std::max(best, kBytes / s / 1e9);  // the first copy warms up
  }
  return best;
}

struct Budget {
  double gib = 0;
  int64_t dense_bytes = 0, kv_bytes = 0, scratch_bytes = 0, workspace_bytes = 0;
  int64_t slot_bytes = 0;
  int slots_per_layer = 0;  // 0: the dense part alone does not fit
  nlohmann::json ToJson() const {
    return {{"budget_gib", gib},         {"dense_bytes", dense_bytes},
            {"kv_bytes", kv_bytes},      {"scratch_bytes", scratch_bytes},
            {"workspace_bytes", workspace_bytes}, {"slot_bytes", slot_bytes},
            {"slots_per_layer", slots_per_layer}};
  }
};

Budget PlanBudget(double gib, const ModelConfig& config, int64_t dense_bytes,
                  const ExpertLayout& layout, int64_t context) {
  Budget b;
  b.gib = gib;
  b.dense_bytes = dense_bytes;
  b.kv_bytes = coordinator::KvCache::Bytes(config, context);
  b.scratch_bytes = coordinator::MixtralModel::ScratchBytes(config, 1, 1, absl::GetFlag(FLAGS_lookahead));
  b.workspace_bytes = int64_t(
      expert_worker::ExpertRunner::WorkspaceBytes(layout, absl::GetFlag(FLAGS_workspace_tokens)));
  const int64_t stride = int64_t(expert_worker::ExpertStore::BlobStride(layout));
  b.slot_bytes = stride;
  const int64_t left =
      int64_t(gib * kGiB) - b.dense_bytes - b.kv_bytes - b.scratch_bytes - b.workspace_bytes;
  b.slots_per_layer = left <= 0 ? 0
                                : int(std::min<int64_t>(config.num_local_experts,
                                                        left / (config.num_hidden_layers * stride)));
  return b;
}

struct Run {
  Budget budget;
  BenchVariant variant;
};

absl::Status Main() {
  MOE_ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::FromFile(absl::GetFlag(FLAGS_config)));
  if (absl::GetFlag(FLAGS_layers) > 0) config.num_hidden_layers = absl::GetFlag(FLAGS_layers);
  const int expert_bits = absl::GetFlag(FLAGS_expert_bits);
  const int attn_bits = absl::GetFlag(FLAGS_attn_bits);
  const int64_t group = absl::GetFlag(FLAGS_group_size);
  const int tokens = absl::GetFlag(FLAGS_tokens), warmup = absl::GetFlag(FLAGS_warmup);
  if (tokens < 1 || warmup < 0) return absl::InvalidArgumentError("--tokens >= 1 and --warmup >= 0");
  MOE_ASSIGN_OR_RETURN(std::vector<double> budgets, ParseBudgets(absl::GetFlag(FLAGS_budgets_gib)));
  MOE_ASSIGN_OR_RETURN(std::vector<BenchVariant> variants, ParseVariants(absl::GetFlag(FLAGS_variants)));
  MOE_ASSIGN_OR_RETURN(ExpertLayout layout, MakeExpertLayout(config, expert_bits, group));
  // The cache's flags are the worker's (expert_stack_flags.h); its size is each budget's.
  MOE_ASSIGN_OR_RETURN(expert_worker::ExpertStackOptions stack_options,
                       expert_worker::ExpertStackFlags());
  if (stack_options.cache_per_layer != 0 || stack_options.cache_bytes != 0) {
    return absl::InvalidArgumentError(
        "--cache-per-layer/--cache-bytes: this bench sizes the cache from each of --budgets-gib");
  }

  std::optional<bench::RoutingTrace> trace;
  const std::string routing = absl::GetFlag(FLAGS_routing);
  if (absl::StartsWith(routing, "replay:")) {
    MOE_ASSIGN_OR_RETURN(trace, bench::RoutingTrace::Load(std::string(absl::StripPrefix(routing, "replay:"))));
    if (trace->experts != config.num_local_experts || trace->top_k != config.num_experts_per_tok) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--routing: the trace has ", trace->experts, " experts top-", trace->top_k,
          ", the config ", config.num_local_experts, " top-", config.num_experts_per_tok));
    }
  } else if (routing != "random") {
    return absl::InvalidArgumentError(absl::StrCat("--routing \"", routing, "\": random or replay:FILE"));
  }

  const uint64_t seed = absl::GetFlag(FLAGS_seed);
  const int64_t context = 1 + warmup + tokens;
  // The budget from the shapes alone: the dry run allocates no weights. Each model consumes
  // its dense weights (Create uploads them), so each run makes its own.
  MOE_ASSIGN_OR_RETURN(const int64_t dense_bytes,
                       bench::RandomDenseWeightsBytes(config, attn_bits, group));

  nlohmann::json common = {
      {"bench", "mixtral_scale"}, {"config", absl::GetFlag(FLAGS_config)},
      {"layers", config.num_hidden_layers}, {"expert_bits", expert_bits},
      {"attn_bits", attn_bits}, {"group_size", group}, {"routing", routing},
      {"expert_blob_bytes", layout.bytes()},
      {"host_store_bytes", int64_t(layout.bytes()) * config.num_hidden_layers * config.num_local_experts}};
  std::vector<Run> runs;
  for (double gib : budgets) {
    const Budget b = PlanBudget(gib, config, dense_bytes, layout, context);
    if (absl::GetFlag(FLAGS_dry_run) || b.slots_per_layer == 0) {
      nlohmann::json row = common;
      row.update(b.ToJson());
      row["fits"] = b.slots_per_layer > 0;
      std::printf("%s\n", row.dump().c_str());
      continue;
    }
    for (BenchVariant v : variants) runs.push_back({b, v});
  }
  if (runs.empty()) return absl::OkStatus();

  MOE_ASSIGN_OR_RETURN(std::unique_ptr<backend::Device> device,
                       backend::OpenDevice(absl::GetFlag(FLAGS_device)));
  MOE_RETURN_IF_ERROR(device->BindThread());
  const expert_worker::LinkModel& link = stack_options.link;
  MOE_ASSIGN_OR_RETURN(const double measured_peak, MeasurePeakH2D(*device));
  // A modelled link's peak is the model's bandwidth; otherwise the measured one.
  const double peak_gbps = link.modelled() ? link.gbps : measured_peak;
  common["device"] = device->name();
  common["h2d_measured_gbps"] = measured_peak;
  common["link_peak_gbps"] = peak_gbps;

  const auto g0 = Clock::now();
  MOE_ASSIGN_OR_RETURN(
      auto store,
      expert_worker::ExpertStore::Generate(
          layout, int(config.num_hidden_layers), int(config.num_local_experts), device.get(),
          [&](int l, int e, uint8_t* blob) {
            FillExpert(layout, seed * 1000003 + uint64_t(l) * config.num_local_experts + e, blob);
          }));
  common["generate_s"] = std::chrono::duration<double>(Clock::now() - g0).count();

  std::mt19937 rng{uint32_t(seed)};
  std::vector<int> feed(context);
  for (int& t : feed) t = int(rng() % uint32_t(config.vocab_size));

  for (const Run& run : runs) {
    const bool keep = run.variant == BenchVariant::kFull || run.variant == BenchVariant::kNoPrefetch;
    expert_worker::ExpertStackOptions run_options = stack_options;
    run_options.cache_per_layer = run.budget.slots_per_layer;
    run_options.retention = keep ? expert_worker::Retention::kKeep : expert_worker::Retention::kDrop;
    MOE_ASSIGN_OR_RETURN(auto stack, expert_worker::ExpertStack::Over(store.get(), run_options));
    expert_worker::InProcessBackend experts(&stack->cache(), run.variant == BenchVariant::kNaive,
                                            absl::GetFlag(FLAGS_workspace_tokens));
    MOE_ASSIGN_OR_RETURN(coordinator::DenseWeights weights,
                         bench::RandomDenseWeights(config, attn_bits, group, seed));
    if (coordinator::DeviceWeights::Bytes(weights) != dense_bytes) {
      return absl::InternalError(absl::StrCat("the dense weights made hold ",
                                              coordinator::DeviceWeights::Bytes(weights),
                                              " bytes, the budget planned ", dense_bytes));
    }
    MOE_ASSIGN_OR_RETURN(auto model,
                         coordinator::MixtralModel::Create(config, std::move(weights), &experts, *device));
    model->set_speculation({run.variant == BenchVariant::kFull ? absl::GetFlag(FLAGS_lookahead) : 0,
                            absl::GetFlag(FLAGS_prefetch_experts)});
    if (trace) {
      model->set_routing_override([&](int layer, int64_t start, int64_t n, absl::Span<int32_t> ids,
                                      absl::Span<float>) {
        const int64_t k = config.num_experts_per_tok;
        for (int64_t t = 0; t < n; ++t) {
          absl::Span<const int32_t> chosen = trace->Scaled(int((start + t) % trace->tokens), layer);
          std::copy(chosen.begin(), chosen.end(), ids.begin() + t * k);
        }
        return absl::OkStatus();
      });
    }
    MOE_ASSIGN_OR_RETURN(auto kv, model->NewCache(context));
    std::vector<float> logits;
    auto decode = [&](int from, int count, coordinator::ForwardStats* stats) -> absl::Status {
      for (int t = from; t < from + count; ++t) {
        const int token[1] = {feed[t]};
        MOE_RETURN_IF_ERROR(model->Forward(token, *kv, coordinator::MixtralModel::Logits::kLast,
                                           &logits, nullptr, stats));
      }
      return absl::OkStatus();
    };
    MOE_RETURN_IF_ERROR(decode(0, 1 + warmup, nullptr));
    experts.prefetch_queue().Drain();
    const expert_worker::CacheCounters before = stack->cache().Stats().total;
    coordinator::ForwardStats forward;
    const auto t0 = Clock::now();
    MOE_RETURN_IF_ERROR(decode(1 + warmup, tokens, &forward));
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    experts.prefetch_queue().Drain();
    const expert_worker::CacheCounters after = stack->cache().Stats().total;
    const uint64_t hits = after.hits - before.hits, misses = after.misses - before.misses;
    const uint64_t bytes = after.bytes_copied - before.bytes_copied;
    const uint64_t prefetch_hits = after.prefetch_hits - before.prefetch_hits;
    const uint64_t prefetch_loads = after.prefetch_loads - before.prefetch_loads;

    nlohmann::json row = common;
    row.update(run.budget.ToJson());
    row["fits"] = true;
    row["variant"] = std::string(BenchVariantName(run.variant));
    row["tokens"] = tokens;
    row["seconds"] = seconds;
    row["decode_tokens_per_s"] = tokens / seconds;
    row["hit_ratio"] = HitRatio(hits, misses);
    row["prefetch_recall"] = PrefetchRecall(prefetch_hits, hits + misses);
    row["prefetch_precision"] = PrefetchPrecision(prefetch_hits, prefetch_loads);
    row["bytes_copied"] = bytes;
    row["bytes_per_token"] = double(bytes) / tokens;
    row["link_gbps_used"] = bytes / seconds / 1e9;
    row["link_efficiency"] = peak_gbps > 0 ? bytes / seconds / 1e9 / peak_gbps : 0.0;
    row["stall_s"] = after.stall_s - before.stall_s;
    row["expert_compute_s"] = forward.experts.compute_s;
    row["guess_recall"] = forward.speculation.recall();
    std::printf("%s\n", row.dump().c_str());
    std::fflush(stdout);
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace moe

int main(int argc, char** argv) {
  moe::ParseFlags(argc, argv);
  return moe::ExitCode("mixtral_scale_bench", moe::Main());
}
