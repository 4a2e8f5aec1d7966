#include "common/model_dir.h"

#include <filesystem>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"

namespace moe {
namespace tensor_names {
std::string Embedding() { return "model.embed_tokens.weight"; }
std::string FinalNorm() { return "model.norm.weight"; }
std::string LmHead() { return "lm_head.weight"; }
std::string Layer(int layer, absl::string_view suffix) {
  return absl::StrCat("model.layers.", layer, ".", suffix);
}
std::string Expert(int layer, int expert, absl::string_view w) {
  return absl::StrCat("model.layers.", layer, ".block_sparse_moe.experts.", expert, ".", w,
                      ".weight");
}
}  // namespace tensor_names

namespace {

// Every tensor the config implies, with its shape.
std::vector<std::pair<std::string, std::vector<int64_t>>> ExpectedTensors(
    const ModelConfig& c) {
  namespace tn = tensor_names;
  const int64_t h = c.hidden_size;
  std::vector<std::pair<std::string, std::vector<int64_t>>> out = {
      {tn::Embedding(), {c.vocab_size, h}}, {tn::FinalNorm(), {h}}};
  if (!c.tie_word_embeddings) out.push_back({tn::LmHead(), {c.vocab_size, h}});
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    out.push_back({tn::Layer(l, "input_layernorm.weight"), {h}});
    out.push_back({tn::Layer(l, "post_attention_layernorm.weight"), {h}});
    out.push_back({tn::Layer(l, "self_attn.q_proj.weight"), {c.q_dim(), h}});
    out.push_back({tn::Layer(l, "self_attn.k_proj.weight"), {c.kv_dim(), h}});
    out.push_back({tn::Layer(l, "self_attn.v_proj.weight"), {c.kv_dim(), h}});
    out.push_back({tn::Layer(l, "self_attn.o_proj.weight"), {h, c.q_dim()}});
    out.push_back({tn::Layer(l, "block_sparse_moe.gate.weight"), {c.num_local_experts, h}});
    for (int e = 0; e < c.num_local_experts; ++e) {
      out.push_back({tn::Expert(l, e, "w1"), {c.intermediate_size, h}});
      out.push_back({tn::Expert(l, e, "w3"), {c.intermediate_size, h}});
      out.push_back({tn::Expert(l, e, "w2"), {h, c.intermediate_size}});
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<ModelDir> ModelDir::Open(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(path, ec)) {
    return absl::NotFoundError(absl::StrCat(path, ": not a directory"));
  }
  ModelDir dir;
  dir.path = path;
  MOE_ASSIGN_OR_RETURN(dir.config, ModelConfig::FromFile((fs::path(path) / "config.json").string()));
  MOE_ASSIGN_OR_RETURN(dir.checkpoint, Checkpoint::Open(path));
  for (const auto& [name, shape] : ExpectedTensors(dir.config)) {
    MOE_ASSIGN_OR_RETURN(Checkpoint::TensorRef ref, dir.checkpoint->Find(name));
    if (ref.info->shape != shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          ref.file->path(), ": tensor \"", name, "\" has shape ", ref.info->ShapeString(),
          " but config.json implies [", absl::StrJoin(shape, ", "), "]"));
    }
  }
  const fs::path tokenizer = fs::path(path) / "tokenizer.model";
  if (fs::exists(tokenizer, ec)) dir.tokenizer_path = tokenizer.string();
  return dir;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> ModelDir::LoadTokenizer() const {
  if (tokenizer_path.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": no tokenizer.model in the model directory"));
  }
  return Tokenizer::Load(tokenizer_path, config.vocab_size);
}

}  // namespace moe
