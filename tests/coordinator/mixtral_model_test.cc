// MixtralModel on the CPU device: bit for bit the CPU engine it was ported from (the
// cpu:: functions on host vectors, kept below as the reference), for the bundled model
// and its 4/3 conversion (packed attention), prefill and decode, with and without
// speculation; the routing override replaces the router's choice everywhere it is used;
// caches are refused beyond the context limit.
#include <cstring>
#include <functional>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "common/backend/cpu/cpu_kernels.h"
#include "common/model_dir.h"
#include "common/quant/quant_format.h"
#include "coordinator/dense_weights.h"
#include "coordinator/generator.h"
#include "coordinator/kv_cache.h"
#include "coordinator/mixtral_model.h"
#include "expert_worker/expert_runner.h"
#include "expert_worker/expert_stack.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moe::coordinator {
namespace {

namespace fs = std::filesystem;

const fs::path kBundled = fs::path(MOE_SOURCE_DIR) / "models" / "kjv-moe";
const fs::path kConverted43 = fs::path(MOE_BINARY_DIR) / "converted" / "hqq_4_3";

// A matrix as the old engine held it: fp32, widened here when the model keeps it as stored.
std::vector<float> Fp32(const std::vector<float>& f32, const PackedMatrix& packed) {
  if (packed.empty()) return f32;
  std::vector<float> out(size_t(packed.layout.rows * packed.layout.cols));
  quant::DequantizeRowsReference(packed.view(), 0, packed.layout.rows, out.data());
  return out;
}

// The engine before the port, without speculation (which never changed the numbers):
// one pass over `tokens` at positions start.., keys/values in `k_cache`/`v_cache`.
absl::Status OldEngineForward(const ModelConfig& c, const DenseWeights& w, ExpertBackend& experts,
                              absl::Span<const int> tokens, int64_t start,
                              std::vector<std::vector<float>>& k_cache,
                              std::vector<std::vector<float>>& v_cache, bool all_logits,
                              std::vector<float>* logits) {
  const int64_t n = tokens.size(), h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim();
  const int64_t e = c.num_local_experts, k = c.num_experts_per_tok;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const cpu::RopeTable rope(c.head_dim, c.rope_theta, c.max_position_embeddings);
  std::vector<float> x(n * h), xn(n * h), q(n * qd), attn(n * qd), moe_out(n * h);
  std::vector<float> router(n * e), route_w(n * k);
  std::vector<int32_t> route_ids(n * k);
  std::vector<int64_t> positions(n);
  for (int64_t t = 0; t < n; ++t) {
    positions[t] = start + t;
    if (w.embedding_packed.empty()) {
      std::memcpy(&x[t * h], &w.embedding[int64_t(tokens[t]) * h], h * sizeof(float));
    } else {  // kept as stored: widen the row
      quant::DequantizeRowsReference(w.embedding_packed.view(), tokens[t], tokens[t] + 1,
                                     &x[t * h]);
    }
  }
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& lw = w.layers[l];
    float* keys = k_cache[l].data() + start * kvd;
    float* values = v_cache[l].data() + start * kvd;
    cpu::RmsNorm(x.data(), lw.input_norm.data(), xn.data(), n, h, eps);
    Project(lw.q, lw.q_packed, xn.data(), q.data(), n, h, qd);
    Project(lw.k, lw.k_packed, xn.data(), keys, n, h, kvd);
    Project(lw.v, lw.v_packed, xn.data(), values, n, h, kvd);
    rope.Apply(q.data(), positions.data(), n, c.num_attention_heads);
    rope.Apply(keys, positions.data(), n, c.num_key_value_heads);
    cpu::Attention(q.data(), k_cache[l].data(), v_cache[l].data(), attn.data(), start, n,
                   c.num_attention_heads, c.num_key_value_heads, c.head_dim,
                   c.sliding_window.value_or(0));
    Project(lw.o, lw.o_packed, attn.data(), x.data(), n, qd, h, /*accumulate=*/true);
    cpu::RmsNorm(x.data(), lw.post_norm.data(), xn.data(), n, h, eps);
    cpu::MatMulTransB(xn.data(), Fp32(lw.gate, lw.gate_packed).data(), router.data(), n, h, e);
    for (int64_t t = 0; t < n; ++t) {
      cpu::TopKRouting(&router[t * e], e, k, &route_ids[t * k], &route_w[t * k]);
    }
    absl::Status ran =
        RunExpertsFromHost(experts, l, xn, n, route_ids, route_w, absl::MakeSpan(moe_out), nullptr);
    if (!ran.ok()) return ran;
    for (int64_t i = 0; i < n * h; ++i) x[i] += moe_out[i];
  }
  const int64_t first = all_logits ? 0 : n - 1, rows = n - first;
  cpu::RmsNorm(&x[first * h], w.final_norm.data(), xn.data(), rows, h, eps);
  logits->resize(rows * c.vocab_size);
  if (!w.lm_head.empty() || !w.lm_head_packed.empty()) {  // untied, fp32 or as stored
    Project(w.lm_head, w.lm_head_packed, xn.data(), logits->data(), rows, h, c.vocab_size);
  } else {  // tied: the fp32 product of the embedding table
    cpu::MatMulTransB(xn.data(), Fp32(w.embedding, w.embedding_packed).data(), logits->data(),
                      rows, h, c.vocab_size);
  }
  return absl::OkStatus();
}

// The worker linked in with every expert resident, and the dense weights of `dir`.
struct Fixture {
  ModelDir dir;
  std::unique_ptr<expert_worker::ExpertStack> stack;
  std::unique_ptr<expert_worker::InProcessBackend> experts;

  static std::unique_ptr<Fixture> Open(const fs::path& path) {
    auto f = std::make_unique<Fixture>();
    auto dir = ModelDir::Open(path.string());
    EXPECT_TRUE(dir.ok()) << dir.status();
    if (!dir.ok()) return nullptr;
    f->dir = *std::move(dir);
    auto stack = expert_worker::ExpertStack::Load(f->dir, nullptr, {});
    EXPECT_TRUE(stack.ok()) << stack.status();
    if (!stack.ok()) return nullptr;
    f->stack = *std::move(stack);
    f->experts = std::make_unique<expert_worker::InProcessBackend>(&f->stack->cache());
    return f;
  }
  DenseWeights Dense() const {
    auto dense = DenseWeights::Load(dir);
    EXPECT_TRUE(dense.ok()) << dense.status();
    return dense.ok() ? *std::move(dense) : DenseWeights();
  }
  std::unique_ptr<MixtralModel> Model(ExpertBackend* backend = nullptr) const {
    auto model = MixtralModel::Create(dir.config, Dense(), backend ? backend : experts.get());
    EXPECT_TRUE(model.ok()) << model.status();
    return model.ok() ? *std::move(model) : nullptr;
  }
};

std::vector<int> Prompt(int64_t vocab) {
  std::vector<int> ids = {1, 415, 28705, 17, 302, 13, 28, 99, 5, 400, 1200, 77, 3, 250};
  for (int& id : ids) id %= vocab;
  return ids;
}

// Index of the first float whose bits differ, or -1.
int64_t FirstBitDifference(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) return int64_t(i);
  }
  return -1;
}

// The model with its LM head dropped and tied to the embedding table.
DenseWeights Tied(DenseWeights w) {
  w.lm_head.clear();
  w.lm_head_packed = PackedMatrix();
  return w;
}

// Prefill of half the prompt (every row's logits), then one token at a time: the ported
// model on the CPU device against the old engine, bit for bit. `tie`: both with the LM
// head tied to the embedding table (which the model multiplies as stored, the old engine
// as the fp32 table).
void ExpectBitIdenticalToOldEngine(const fs::path& path, int lookahead, bool tie = false) {
  auto f = Fixture::Open(path);
  ASSERT_NE(f, nullptr);
  ModelConfig c = f->dir.config;
  c.tie_word_embeddings = c.tie_word_embeddings || tie;
  auto created = MixtralModel::Create(c, tie ? Tied(f->Dense()) : f->Dense(), f->experts.get());
  ASSERT_TRUE(created.ok()) << created.status();
  std::unique_ptr<MixtralModel> model = *std::move(created);
  model->set_speculation({lookahead, 2});
  const DenseWeights old_weights = tie ? Tied(f->Dense()) : f->Dense();
  const std::vector<int> tokens = Prompt(c.vocab_size);
  const int64_t half = tokens.size() / 2;

  KvCache cache(c, tokens.size());
  std::vector<std::vector<float>> old_k(c.num_hidden_layers,
                                        std::vector<float>(tokens.size() * c.kv_dim()));
  std::vector<std::vector<float>> old_v = old_k;
  std::vector<float> ported, old;
  for (int64_t start = 0; start < int64_t(tokens.size());) {
    const int64_t n = start == 0 ? half : 1;
    const auto span = absl::MakeConstSpan(tokens).subspan(start, n);
    const bool all = start == 0;
    ASSERT_TRUE(model->Forward(span, cache,
                               all ? MixtralModel::Logits::kAll : MixtralModel::Logits::kLast,
                               &ported)
                    .ok());
    ASSERT_TRUE(OldEngineForward(c, old_weights, *f->experts, span, start, old_k, old_v, all, &old)
                    .ok());
    EXPECT_EQ(FirstBitDifference(ported, old), -1)
        << path << " pass at position " << start << " (" << n << " tokens), lookahead "
        << lookahead;
    start += n;
  }
  EXPECT_EQ(cache.length(), int64_t(tokens.size()));
  if (lookahead > 0) EXPECT_GT(model->speculation_stats().hinted, 0u);
}

TEST(MixtralModelCpuTest, BundledModelIsBitIdenticalToTheCpuEngine) {
  ExpectBitIdenticalToOldEngine(kBundled, /*lookahead=*/0);
}

TEST(MixtralModelCpuTest, SpeculationDoesNotChangeABit) {
  ExpectBitIdenticalToOldEngine(kBundled, /*lookahead=*/2);
}

TEST(MixtralModelCpuTest, PackedFourThreeModelIsBitIdenticalToTheCpuEngine) {
  ExpectBitIdenticalToOldEngine(kConverted43, /*lookahead=*/1);
}

// The embedding table stays BF16 (the bundled model's dtype): looked-up rows are widened
// exactly, and as a tied LM head it is multiplied by the 16-bit kernel, bit for bit the
// fp32 product of the widened table.
TEST(MixtralModelCpuTest, TiedSixteenBitHeadIsBitIdenticalToTheFp32Table) {
  auto dir = ModelDir::Open(kBundled.string());
  ASSERT_TRUE(dir.ok()) << dir.status();
  auto dense = DenseWeights::Load(*dir);
  ASSERT_TRUE(dense.ok()) << dense.status();
  EXPECT_TRUE(dense->embedding.empty());
  EXPECT_EQ(dense->embedding_packed.layout.spec.bits, 16);
  ExpectBitIdenticalToOldEngine(kBundled, /*lookahead=*/0, /*tie=*/true);
}

TEST(MixtralModelCpuTest, TiedPackedModelHeadIsBitIdenticalToTheFp32Table) {
  ExpectBitIdenticalToOldEngine(kConverted43, /*lookahead=*/1, /*tie=*/true);
}

// Records what reaches the experts, per layer of the last pass.
class RecordingExperts : public ExpertBackend {
 public:
  explicit RecordingExperts(ExpertBackend* inner) : inner_(inner) {}
  absl::StatusOr<std::unique_ptr<ActivationBatch>> Lend(int64_t rows) override {
    return inner_->Lend(rows);
  }
  absl::Status RunExperts(int layer, ActivationBatch& batch, absl::Span<const int32_t> ids,
                          absl::Span<const float> weights, ExpertCallStats* stats) override {
    if (size_t(layer) >= ids_seen.size()) ids_seen.resize(layer + 1);
    if (size_t(layer) >= weights_seen.size()) weights_seen.resize(layer + 1);
    ids_seen[layer].assign(ids.begin(), ids.end());
    weights_seen[layer].assign(weights.begin(), weights.end());
    return inner_->RunExperts(layer, batch, ids, weights, stats);
  }
  std::vector<std::vector<int32_t>> ids_seen;
  std::vector<std::vector<float>> weights_seen;

 private:
  ExpertBackend* inner_;
};

struct Trace {
  std::vector<std::vector<int32_t>> ids;  // [layer][n * k]
  std::vector<std::vector<float>> weights;
};

Trace RecordTrace(MixtralModel& model, const std::vector<int>& tokens) {
  Trace trace;
  model.set_routing_observer([&](const LayerRouting& r) {
    trace.ids.emplace_back(r.ids.begin(), r.ids.end());
    trace.weights.emplace_back(r.weights.begin(), r.weights.end());
  });
  KvCache cache(model.config(), tokens.size());
  std::vector<float> logits;
  EXPECT_TRUE(model.Forward(tokens, cache, MixtralModel::Logits::kAll, &logits).ok());
  model.set_routing_observer(nullptr);
  return trace;
}

TEST(RoutingOverrideTest, ReplayedTraceReachesTheExpertsAndTheObserver) {
  auto f = Fixture::Open(kBundled);
  ASSERT_NE(f, nullptr);
  RecordingExperts recorder(f->experts.get());
  auto model = f->Model(&recorder);
  ASSERT_NE(model, nullptr);
  const std::vector<int> prompt = Prompt(model->config().vocab_size);
  // The trace of one text, replayed while another of the same length runs: the experts
  // must see the trace, not what the router picks for the second text.
  const std::vector<int> a(prompt.begin(), prompt.begin() + 6);
  const std::vector<int> b(prompt.begin() + 6, prompt.begin() + 12);
  const Trace trace_a = RecordTrace(*model, a);
  const Trace trace_b = RecordTrace(*model, b);
  ASSERT_EQ(trace_a.ids.size(), size_t(model->config().num_hidden_layers));
  ASSERT_NE(trace_a.ids, trace_b.ids) << "the two texts route alike: the test proves nothing";

  int calls = 0;
  model->set_routing_override([&](int layer, int64_t start, int64_t n, absl::Span<int32_t> ids,
                                  absl::Span<float> weights) {
    ++calls;
    EXPECT_EQ(start, 0);
    EXPECT_EQ(n, int64_t(b.size()));
    std::copy(trace_a.ids[layer].begin(), trace_a.ids[layer].end(), ids.begin());
    std::copy(trace_a.weights[layer].begin(), trace_a.weights[layer].end(), weights.begin());
    return absl::OkStatus();
  });
  const Trace observed = RecordTrace(*model, b);
  EXPECT_EQ(calls, model->config().num_hidden_layers);
  EXPECT_EQ(observed.ids, trace_a.ids);
  EXPECT_EQ(recorder.ids_seen, trace_a.ids);
  EXPECT_EQ(recorder.weights_seen, trace_a.weights);
}

TEST(RoutingOverrideTest, ReplayingTheRoutersOwnChoiceChangesNoLogit) {
  auto f = Fixture::Open(kBundled);
  ASSERT_NE(f, nullptr);
  auto model = f->Model();
  ASSERT_NE(model, nullptr);
  const std::vector<int> tokens = Prompt(model->config().vocab_size);
  std::vector<float> plain, replayed;
  {
    KvCache cache(model->config(), tokens.size());
    ASSERT_TRUE(model->Forward(tokens, cache, MixtralModel::Logits::kAll, &plain).ok());
  }
  const Trace trace = RecordTrace(*model, tokens);
  model->set_routing_override([&](int layer, int64_t, int64_t, absl::Span<int32_t> ids,
                                  absl::Span<float> weights) {
    std::copy(trace.ids[layer].begin(), trace.ids[layer].end(), ids.begin());
    std::copy(trace.weights[layer].begin(), trace.weights[layer].end(), weights.begin());
    return absl::OkStatus();
  });
  KvCache cache(model->config(), tokens.size());
  ASSERT_TRUE(model->Forward(tokens, cache, MixtralModel::Logits::kAll, &replayed).ok());
  EXPECT_EQ(FirstBitDifference(replayed, plain), -1);
}

TEST(RoutingOverrideTest, ForcedRoutingChangesTheLogits) {
  auto f = Fixture::Open(kBundled);
  ASSERT_NE(f, nullptr);
  auto model = f->Model();
  ASSERT_NE(model, nullptr);
  const ModelConfig& c = model->config();
  const std::vector<int> tokens = Prompt(c.vocab_size);
  std::vector<float> plain, forced;
  {
    KvCache cache(c, tokens.size());
    ASSERT_TRUE(model->Forward(tokens, cache, MixtralModel::Logits::kLast, &plain).ok());
  }
  // Every token to the last k experts, equally weighted.
  model->set_routing_override([&](int, int64_t, int64_t n, absl::Span<int32_t> ids,
                                  absl::Span<float> weights) {
    const int64_t k = c.num_experts_per_tok;
    for (int64_t i = 0; i < n * k; ++i) {
      ids[i] = int32_t(c.num_local_experts - 1 - i % k);
      weights[i] = 1.0f / k;
    }
    return absl::OkStatus();
  });
  KvCache cache(c, tokens.size());
  ASSERT_TRUE(model->Forward(tokens, cache, MixtralModel::Logits::kLast, &forced).ok());
  EXPECT_NE(FirstBitDifference(forced, plain), -1);
}

TEST(RoutingOverrideTest, BadIdsAndErrorsEndThePassAndLeaveTheCache) {
  auto f = Fixture::Open(kBundled);
  ASSERT_NE(f, nullptr);
  auto model = f->Model();
  ASSERT_NE(model, nullptr);
  const std::vector<int> tokens = Prompt(model->config().vocab_size);
  std::vector<float> logits;
  KvCache cache(model->config(), tokens.size());

  model->set_routing_override([](int layer, int64_t, int64_t, absl::Span<int32_t> ids,
                                 absl::Span<float>) {
    if (layer == 1) ids[0] = 99;
    return absl::OkStatus();
  });
  absl::Status s = model->Forward(tokens, cache, MixtralModel::Logits::kLast, &logits);
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_NE(s.message().find("layer 1"), std::string::npos) << s;
  EXPECT_NE(s.message().find("expert id 99"), std::string::npos) << s;
  EXPECT_EQ(cache.length(), 0);

  model->set_routing_override([](int, int64_t, int64_t, absl::Span<int32_t>, absl::Span<float>) {
    return absl::NotFoundError("trace has no more steps");
  });
  s = model->Forward(tokens, cache, MixtralModel::Logits::kLast, &logits);
  EXPECT_TRUE(absl::IsNotFound(s)) << s;
  EXPECT_EQ(cache.length(), 0);

  model->set_routing_override(nullptr);
  EXPECT_TRUE(model->Forward(tokens, cache, MixtralModel::Logits::kLast, &logits).ok());
  EXPECT_EQ(cache.length(), int64_t(tokens.size()));
}

// A way to corrupt loaded weights, and what Create's refusal must say.
using WeightsBreak = std::pair<std::function<void(DenseWeights&)>, std::string>;

// Each corruption of `f`'s weights is refused at Create with INVALID_ARGUMENT naming it.
void ExpectEachRefusedAtCreate(Fixture& f, const std::vector<WeightsBreak>& cases) {
  for (const auto& [corrupt, message] : cases) {
    DenseWeights w = f.Dense();
    corrupt(w);
    auto model = MixtralModel::Create(f.dir.config, std::move(w), f.experts.get());
    ASSERT_FALSE(model.ok()) << message;
    EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(model.status().message()), ::testing::HasSubstr(message));
  }
}

// Weights made other than by DenseWeights::Load that lack a family tensor the hooks read
// are refused at Create, naming the layer and the tensor (not a crash in Forward).
TEST(MixtralModelCpuTest, FamilyWeightsMissingATensorAreRefusedAtCreate) {
  const fs::path path = fs::path(MOE_BINARY_DIR) / "random_checkpoints" / "qwen2_moe_f32_shared_dense";
  auto f = Fixture::Open(path);
  ASSERT_NE(f, nullptr);
  const std::vector<WeightsBreak> cases = {
      {[](DenseWeights& w) { w.layers[2].q_bias.clear(); },
       "layer 2: q_proj.bias holds 0 floats, the config implies 32"},
      {[](DenseWeights& w) { w.layers[0].shared_expert_gate.clear(); },
       "layer 0: shared_expert_gate holds 0 floats"},
      {[](DenseWeights& w) { w.layers[1].dense_mlp.down.resize(3); },
       "layer 1: dense MLP down_proj holds 3 floats"},
      {[](DenseWeights& w) { w.layers[0].q_norm.assign(8, 1.0f); },
       "layer 0: q_norm holds 8 floats, the config implies 0"},
  };
  ExpectEachRefusedAtCreate(*f, cases);
  EXPECT_NE(f->Model(), nullptr);  // the weights as loaded are accepted
}

// A matrix kept as stored is checked like an fp32 one: its shape, and not both forms.
TEST(MixtralModelCpuTest, StoredMatricesOfTheWrongShapeAreRefusedAtCreate) {
  auto f = Fixture::Open(kBundled);
  ASSERT_NE(f, nullptr);
  const std::vector<WeightsBreak> cases = {
      {[](DenseWeights& w) { w.layers[1].gate_packed.layout.rows = 3; },
       "layer 1: router holds [3, 256] stored and 0 floats, the config implies [8, 256]"},
      {[](DenseWeights& w) { w.layers[0].gate.assign(8 * 256, 0.0f); },
       "layer 0: router holds [8, 256] stored and 2048 floats"},
      {[](DenseWeights& w) { w.embedding_packed.layout.rows = 7; },
       "the embedding table holds 0 floats or [7, 256] stored, the config implies [2000, 256]"},
      {[](DenseWeights& w) { w.layers[2].o_packed.layout.cols = 5; },
       "layer 2: o_proj holds [256, 5] stored and 0 floats, the config implies [256, 256]"},
      {[](DenseWeights& w) { w.layers[3].k_packed = PackedMatrix(); },
       "layer 3: k_proj holds 0 floats, the config implies 32768"},
      {[](DenseWeights& w) { w.lm_head_packed = PackedMatrix(); },
       "the LM head holds 0 floats or [0, 0] stored, the config implies [2000, 256]"},
  };
  ExpectEachRefusedAtCreate(*f, cases);
}

TEST(MixtralModelCpuTest, CachesAndGenerationsBeyondTheContextLimitAreRefused) {
  auto f = Fixture::Open(kBundled);
  ASSERT_NE(f, nullptr);
  auto model = f->Model();
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->max_context_tokens(), model->config().max_position_embeddings);
  model->set_max_context_tokens(16);
  auto cache = model->NewCache(16);
  ASSERT_TRUE(cache.ok()) << cache.status();
  EXPECT_EQ((*cache)->capacity(), 16);
  EXPECT_EQ(&(*cache)->device(), &model->device());
  auto too_big = model->NewCache(17);
  EXPECT_TRUE(absl::IsInvalidArgument(too_big.status())) << too_big.status();
  EXPECT_TRUE(absl::IsInvalidArgument(model->NewCache(0).status()));

  GenerateOptions options;
  options.max_new_tokens = 10;
  options.sampling.temperature = 0;
  const std::vector<int> prompt = Prompt(model->config().vocab_size);  // 14 tokens
  auto generated = Generate(*model, prompt, options, nullptr);
  EXPECT_TRUE(absl::IsInvalidArgument(generated.status())) << generated.status();
  EXPECT_NE(generated.status().message().find("context limit of 16"), std::string::npos)
      << generated.status();
  options.max_new_tokens = 2;
  EXPECT_TRUE(Generate(*model, prompt, options, nullptr).ok());
  model->set_max_context_tokens(0);
  EXPECT_EQ(model->max_context_tokens(), model->config().max_position_embeddings);
}

}  // namespace
}  // namespace moe::coordinator
