#include "tools/cli/quant_commands.h"

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"
#include "tools/cli/convert.h"
#include "tools/cli/local_engine.h"
#include "tools/cli/perplexity.h"

ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(std::string, out);
ABSL_FLAG(std::string, in, "", "convert: the Hugging Face Mixtral directory to convert");
ABSL_FLAG(int, attn_bits, 4, "convert: bits of the attention projections (4, 8 or 16)");
ABSL_FLAG(int, expert_bits, 3, "convert: bits of the experts (2, 3, 4, 8 or 16)");
ABSL_FLAG(int64_t, group_size, 64, "convert/sizes: quantization group along the input dimension");
ABSL_FLAG(std::string, method, "hqq", "convert: hqq (half-quadratic zero fitting) or rtn");
ABSL_FLAG(bool, progress, true, "convert: progress bar with ETA on stderr");
// Shared with `moe bench` (defined in moe_main.cc).
ABSL_DECLARE_FLAG(std::string, text_file);
ABSL_DECLARE_FLAG(int64_t, max_tokens);
ABSL_FLAG(int64_t, window, 128, "perplexity: tokens per teacher-forced window");
ABSL_FLAG(std::string, config, "", "sizes: a config.json (Hugging Face Mixtral)");

namespace moe {
namespace {

std::string Mb(double bytes) { return absl::StrFormat("%.2f MB", bytes / 1e6); }
std::string Gb(double bytes) { return absl::StrFormat("%.2f GB", bytes / 1e9); }

}  // namespace

absl::Status RunConvertCommand() {
  ConvertOptions o;
  o.in_dir = absl::GetFlag(FLAGS_in);
  o.out_dir = absl::GetFlag(FLAGS_out);
  if (o.in_dir.empty()) return absl::InvalidArgumentError("--in is required");
  o.attn_bits = absl::GetFlag(FLAGS_attn_bits);
  o.expert_bits = absl::GetFlag(FLAGS_expert_bits);
  o.group_size = absl::GetFlag(FLAGS_group_size);
  MOE_ASSIGN_OR_RETURN(o.method, quant::ParseMethod(absl::GetFlag(FLAGS_method)));
  o.progress = absl::GetFlag(FLAGS_progress);
  MOE_ASSIGN_OR_RETURN(quant::OffloadManifest m, Convert(o));
  std::printf("%s: %s\n", o.out_dir.c_str(), m.Scheme().c_str());
  std::printf("dense %s, experts %s (%s per expert), relative weight error: attention %.4f, "
              "experts %.4f\n",
              Mb(m.dense_bytes).c_str(), Mb(m.experts_bytes).c_str(), Mb(m.expert.blob_bytes).c_str(),
              m.attn_rel_error, m.expert_rel_error);
  return absl::OkStatus();
}

absl::Status RunPerplexityCommand(const EngineOptions& engine_options) {
  const std::string dir = absl::GetFlag(FLAGS_model);
  const std::string text_file = absl::GetFlag(FLAGS_text_file);
  if (dir.empty()) return absl::InvalidArgumentError("--model is required");
  if (text_file.empty()) return absl::InvalidArgumentError("--text-file is required");
  std::ifstream in(text_file, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(text_file, ": cannot open"));
  std::stringstream text;
  text << in.rdbuf();
  MOE_ASSIGN_OR_RETURN(auto engine, LocalEngine::Open(dir, engine_options));
  MOE_ASSIGN_OR_RETURN(auto tokenizer, engine->dir().LoadTokenizer());
  MOE_ASSIGN_OR_RETURN(std::vector<int> stream, tokenizer->Encode(text.str(), /*add_bos=*/false));
  const int64_t max_tokens = absl::GetFlag(FLAGS_max_tokens);
  if (max_tokens > 0 && int64_t(stream.size()) > max_tokens) stream.resize(max_tokens);
  MOE_ASSIGN_OR_RETURN(PerplexityResult r,
                       ComputePerplexity(engine->model(), stream, absl::GetFlag(FLAGS_window)));
  std::printf("tokens %lld  mean_nll %.4f  perplexity %.3f  (%s, window %lld, %.1f s)\n",
              (long long)r.tokens, r.mean_nll, r.perplexity,
              engine->dir().offload ? engine->dir().offload->manifest().Scheme().c_str() : "as stored, fp32 compute",
              (long long)absl::GetFlag(FLAGS_window), r.seconds);
  return absl::OkStatus();
}

absl::Status RunSizesCommand() {
  const std::string path = absl::GetFlag(FLAGS_config);
  if (path.empty()) return absl::InvalidArgumentError("--config is required");
  MOE_ASSIGN_OR_RETURN(ModelConfig c, ModelConfig::FromFile(path));
  const int64_t g = absl::GetFlag(FLAGS_group_size);
  const double fp16 = 2.0 * c.TotalParams();
  std::printf("%s: %lld parameters, %s in 16 bits; group size %lld, scales/zeros 8-bit in groups of %lld\n",
              path.c_str(), (long long)c.TotalParams(), Gb(fp16).c_str(), (long long)g,
              (long long)quant::kMetaGroup);
  std::printf("%-10s %12s %14s %12s %10s %8s\n", "attn/exp", "dense", "per expert", "experts",
              "total", "of fp16");
  for (auto [a, e] : std::vector<std::pair<int, int>>{{16, 16}, {8, 4}, {8, 3}, {4, 4}, {4, 3}, {4, 2}}) {
    MOE_ASSIGN_OR_RETURN(SchemeSizes s, ComputeSchemeSizes(c, a, e, g));
    const double total = double(s.dense_bytes + s.experts_bytes);
    std::printf("%-10s %12s %14s %12s %10s %7.1f%%\n", absl::StrCat(a, "/", e).c_str(),
                Gb(s.dense_bytes).c_str(), Mb(s.expert_blob_bytes).c_str(), Gb(s.experts_bytes).c_str(),
                Gb(total).c_str(), 100 * total / fp16);
  }
  return absl::OkStatus();
}

void PrintConvertedInfo(const ModelDir& dir) {
  const quant::OffloadManifest& m = dir.offload->manifest();
  const int64_t experts = m.config.num_expert_layers() * m.config.num_local_experts;
  std::printf("format           converted (moe-offload v%d): %s\n", m.version, m.Scheme().c_str());
  std::printf("bytes per expert %s (one blob, %lld-byte stride); fp32 would be %s\n",
              Mb(m.expert.blob_bytes).c_str(), (long long)m.expert.blob_stride,
              Mb(4.0 * m.config.ExpertParams()).c_str());
  std::printf("dense bytes      %s\n", Mb(m.dense_bytes).c_str());
  std::printf("expert bytes     %s (%lld experts)\n", Mb(m.experts_bytes).c_str(), (long long)experts);
  std::printf("total bytes      %s\n", Mb(m.dense_bytes + m.experts_bytes).c_str());
  if (m.expert_rel_error >= 0) {
    std::printf("weight error     relative ||W-W'||/||W||: attention %.4f, experts %.4f\n",
                m.attn_rel_error, m.expert_rel_error);
  }
}

}  // namespace moe
