// Records a routing trace (routing_trace.h) of a model over a text, decoding one token
// at a time (teacher-forced), the way the Mixtral-scale benchmark decodes. The trace in
// bench/kjv_moe_routing.trace came from:
//
//   build/bench/record_routing --model models/kjv-moe \
//       --text-file models/kjv-moe/heldout.txt --tokens 1024 --out bench/kjv_moe_routing.trace
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "bench/routing_trace.h"
#include "common/command_line.h"
#include "common/status.h"
#include "coordinator/kv_cache.h"
#include "tools/cli/local_engine.h"

ABSL_FLAG(std::string, model, "models/kjv-moe", "Model directory");
ABSL_FLAG(std::string, text_file, "models/kjv-moe/heldout.txt", "Text to decode");
ABSL_FLAG(int, tokens, 1024, "Tokens to record");
ABSL_FLAG(std::string, out, "", "Trace file to write");

namespace moe {
namespace {

absl::Status Run() {
  const std::string out_path = absl::GetFlag(FLAGS_out);
  if (out_path.empty()) return absl::InvalidArgumentError("--out is required");
  const int count = absl::GetFlag(FLAGS_tokens);
  if (count < 1) return absl::InvalidArgumentError("--tokens must be >= 1");
  MOE_ASSIGN_OR_RETURN(auto engine, LocalEngine::Open(absl::GetFlag(FLAGS_model)));
  std::ifstream in(absl::GetFlag(FLAGS_text_file));
  if (!in) return absl::NotFoundError(absl::StrCat(absl::GetFlag(FLAGS_text_file), ": cannot open"));
  std::stringstream text;
  text << in.rdbuf();
  MOE_ASSIGN_OR_RETURN(auto tokenizer, engine->dir().LoadTokenizer());
  MOE_ASSIGN_OR_RETURN(std::vector<int> ids, tokenizer->Encode(text.str(), true));
  if (int(ids.size()) < count) {
    return absl::InvalidArgumentError(
        absl::StrCat("the text has ", ids.size(), " tokens, fewer than --tokens ", count));
  }
  const ModelConfig& config = engine->config();
  bench::RoutingTrace trace;
  trace.tokens = count;
  trace.layers = config.num_expert_layers();
  trace.experts = config.num_local_experts;
  trace.top_k = config.num_experts_per_tok;
  trace.ids.resize(size_t(count) * trace.layers * trace.top_k);
  int token = 0;
  engine->model().set_routing_observer([&](const coordinator::LayerRouting& r) {
    std::copy(r.ids.begin(), r.ids.end(),
              trace.ids.begin() + (size_t(token) * trace.layers + r.layer) * trace.top_k);
  });
  // The context is reset every 512 tokens, as a serving system sees many short requests.
  constexpr int kContext = 512;
  coordinator::KvCache cache(config, kContext);
  std::vector<float> logits;
  for (token = 0; token < count; ++token) {
    if (cache.length() == kContext) cache.Clear();
    const int next[1] = {ids[token]};
    MOE_RETURN_IF_ERROR(engine->model().Forward(next, cache, coordinator::MixtralModel::Logits::kLast,
                                                &logits));
  }
  std::ofstream out(out_path);
  out << trace.Serialize(absl::StrCat("routing of ", engine->dir().path, " over ",
                                      absl::GetFlag(FLAGS_text_file), ", ", count,
                                      " tokens decoded one at a time (record_routing)"));
  if (!out) return absl::InternalError(absl::StrCat(out_path, ": write failed"));
  return absl::OkStatus();
}

}  // namespace
}  // namespace moe

int main(int argc, char** argv) {
  moe::ParseFlags(argc, argv);
  return moe::ExitCode("record_routing", moe::Run());
}
