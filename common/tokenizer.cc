#include "common/tokenizer.h"

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/bpe_tokenizer.h"
#include "common/chat_template.h"
#include "common/logging.h"
#include "common/sentencepiece_adapter.h"
#include "common/status.h"

namespace moe {
namespace {

constexpr size_t kContextIds = 4;
constexpr absl::string_view kReplacementChar = "\xEF\xBF\xBD";

class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(std::unique_ptr<internal::SentencePieceAdapter> sp)
      : sp_(std::move(sp)) {
    for (int id : {sp_->bos_id(), sp_->eos_id()}) {
      if (id >= 0) specials_.emplace_back(sp_->IdToPiece(id), id);
    }
  }

  absl::StatusOr<std::string> Decode(absl::Span<const int> ids) const override {
    for (int id : ids) {
      if (id < 0 || id >= sp_->piece_size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("token id ", id, " is outside the tokenizer's vocabulary [0, ",
                         sp_->piece_size(), ")"));
      }
    }
    std::string text, error;
    if (!sp_->Decode(std::vector<int>(ids.begin(), ids.end()), &text, &error)) {
      return absl::InternalError(absl::StrCat("cannot detokenize: ", error));
    }
    return text;
  }
  int bos_id() const override { return sp_->bos_id(); }
  int eos_id() const override { return sp_->eos_id(); }
  int vocab_size() const override { return sp_->piece_size(); }

 private:
  absl::StatusOr<std::vector<int>> DoEncode(absl::string_view text, bool add_bos,
                                            bool parse_special) const override {
    std::vector<int> ids;
    if (add_bos) ids.push_back(bos_id());
    if (!parse_special) {
      MOE_RETURN_IF_ERROR(EncodeChunk(text, &ids));
      return ids;
    }
    // Special pieces (<s>, </s>) written in the text become their ids. The text after one
    // is encoded on its own, and sentencepiece's dummy-prefix space stands for one space
    // the text may start with: "<s> [INST] hi" gives BOS, "▁[", "INST", ... as
    // mistral-common and Hugging Face's fast tokenizer do, not "▁▁[".
    size_t pos = 0;
    bool after_special = false;
    while (pos <= text.size()) {
      size_t next = absl::string_view::npos;
      const std::pair<std::string, int>* found = nullptr;
      for (const auto& special : specials_) {
        const size_t at = text.find(special.first, pos);
        if (at != absl::string_view::npos && (at < next || (at == next && special.first.size() > found->first.size()))) {
          next = at;
          found = &special;
        }
      }
      absl::string_view chunk = text.substr(pos, next == absl::string_view::npos ? absl::string_view::npos : next - pos);
      if (after_special && absl::StartsWith(chunk, " ")) chunk.remove_prefix(1);
      if (!chunk.empty()) MOE_RETURN_IF_ERROR(EncodeChunk(chunk, &ids));
      if (found == nullptr) break;
      ids.push_back(found->second);
      pos = next + found->first.size();
      after_special = true;
    }
    return ids;
  }

  absl::Status EncodeChunk(absl::string_view text, std::vector<int>* ids) const {
    std::vector<int> chunk;
    std::string error;
    if (!sp_->Encode(std::string(text), &chunk, &error)) {
      return absl::InvalidArgumentError(absl::StrCat("cannot tokenize: ", error));
    }
    ids->insert(ids->end(), chunk.begin(), chunk.end());
    return absl::OkStatus();
  }

  std::unique_ptr<internal::SentencePieceAdapter> sp_;
  std::vector<std::pair<std::string, int>> specials_;  // piece text -> id
};

class ByteLevelBpeTokenizer final : public Tokenizer {
 public:
  ByteLevelBpeTokenizer(std::unique_ptr<BpeTokenizer> bpe, int bos_id, int eos_id)
      : bpe_(std::move(bpe)), bos_id_(bos_id), eos_id_(eos_id) {}

  absl::StatusOr<std::string> Decode(absl::Span<const int> ids) const override {
    return bpe_->Decode(ids, /*skip_special=*/true);
  }
  int bos_id() const override { return bos_id_; }
  int eos_id() const override { return eos_id_; }
  int vocab_size() const override { return bpe_->size(); }

 private:
  // add_bos adds what the file's post-processor puts first (Hugging Face's
  // add_special_tokens); Qwen's has nothing there.
  absl::StatusOr<std::vector<int>> DoEncode(absl::string_view text, bool add_bos,
                                            bool parse_special) const override {
    return bpe_->Encode(text, parse_special, add_bos);
  }

  std::unique_ptr<BpeTokenizer> bpe_;
  int bos_id_, eos_id_;
};

bool IsJsonFile(const std::string& path) { return absl::EndsWith(path, ".json"); }

}  // namespace

Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& path,
                                                           int64_t vocab_size) {
  if (IsJsonFile(path)) {
    MOE_ASSIGN_OR_RETURN(auto bpe, BpeTokenizer::Load(path, vocab_size));
    return std::unique_ptr<Tokenizer>(new ByteLevelBpeTokenizer(std::move(bpe), -1, -1));
  }
  std::string error;
  auto sp = internal::LoadSentencePiece(path, &error);
  if (sp == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": cannot load sentencepiece model: ", error));
  }
  if (sp->piece_size() > vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": tokenizer has ", sp->piece_size(),
                     " pieces but the model's vocab_size is ", vocab_size));
  }
  return std::unique_ptr<Tokenizer>(new SentencePieceTokenizer(std::move(sp)));
}

std::string Tokenizer::FindTokenizerFile(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  for (const char* name : {"tokenizer.model", "tokenizer.json"}) {
    const fs::path path = fs::path(dir) / name;
    if (fs::is_regular_file(path, ec)) return path.string();
  }
  return "";
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::LoadFromDirectory(const std::string& dir,
                                                                        const ModelConfig& config) {
  namespace fs = std::filesystem;
  const std::string path = FindTokenizerFile(dir);
  if (path.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(dir, ": no tokenizer.model or tokenizer.json in the model directory"));
  }
  TokenizerConfig tc;
  std::error_code ec;
  const fs::path config_path = fs::path(dir) / "tokenizer_config.json";
  if (fs::exists(config_path, ec)) {
    MOE_ASSIGN_OR_RETURN(tc, TokenizerConfig::FromFile(config_path.string()));
  }

  std::unique_ptr<Tokenizer> tokenizer;
  if (IsJsonFile(path)) {
    MOE_ASSIGN_OR_RETURN(auto bpe, BpeTokenizer::Load(path, config.vocab_size));
    const auto id_of = [&](const std::optional<std::string>& token,
                           absl::string_view what) -> absl::StatusOr<int> {
      if (!token.has_value()) return -1;
      const std::optional<int> id = bpe->TokenId(*token);
      if (!id.has_value()) {
        return absl::InvalidArgumentError(absl::StrCat(config_path.string(), ": ", what, " ",
                                                       QuoteForMessage(*token),
                                                       " is not a token of ", path));
      }
      return *id;
    };
    MOE_ASSIGN_OR_RETURN(const int bos, id_of(tc.bos_token, "bos_token"));
    MOE_ASSIGN_OR_RETURN(int eos, id_of(tc.eos_token, "eos_token"));
    if (eos < 0 && config.eos_token_id >= 0 && config.eos_token_id < bpe->size()) {
      eos = static_cast<int>(config.eos_token_id);
    }
    tokenizer.reset(new ByteLevelBpeTokenizer(std::move(bpe), bos, eos));
  } else {
    MOE_ASSIGN_OR_RETURN(tokenizer, Load(path, config.vocab_size));
  }
  tokenizer->model_type_ = config.model_type;

  // The model's template, else its family's; one the renderer cannot parse falls back.
  const std::optional<std::string> fallback = DefaultChatTemplateSource(config.model_type);
  const auto family = config.model_type.empty() ? std::string("mixtral") : config.model_type;
  if (tc.chat_template.has_value()) {
    auto parsed = ChatTemplate::Create(*tc.chat_template, tc);
    if (parsed.ok()) {
      tokenizer->chat_template_ = *std::move(parsed);
      return tokenizer;
    }
    MOE_LOG(WARNING) << config_path.string() << ": the model's chat template cannot be used ("
                     << parsed.status().message() << "); using the built-in " << family
                     << " chat format instead";
  }
  if (fallback.has_value()) {
    MOE_ASSIGN_OR_RETURN(auto parsed, ChatTemplate::Create(*fallback, tc));
    tokenizer->chat_template_ = std::move(parsed);
  }
  return tokenizer;
}

StreamingDecoder::StreamingDecoder(const Tokenizer& tokenizer, absl::Span<const int> context)
    : tokenizer_(tokenizer) {
  const size_t keep = std::min(context.size(), kContextIds);
  context_.assign(context.end() - keep, context.end());
}

absl::StatusOr<std::string> StreamingDecoder::PendingText() const {
  std::vector<int> all = context_;
  all.insert(all.end(), pending_.begin(), pending_.end());
  MOE_ASSIGN_OR_RETURN(std::string before, tokenizer_.Decode(context_));
  MOE_ASSIGN_OR_RETURN(std::string after, tokenizer_.Decode(all));
  return absl::StartsWith(after, before) ? after.substr(before.size()) : after;
}

void StreamingDecoder::CommitPending() {
  context_.insert(context_.end(), pending_.begin(), pending_.end());
  if (context_.size() > kContextIds) {
    context_.erase(context_.begin(), context_.end() - kContextIds);
  }
  pending_.clear();
}

absl::StatusOr<std::string> StreamingDecoder::Push(int id) {
  pending_.push_back(id);
  MOE_ASSIGN_OR_RETURN(std::string piece, PendingText());
  // Hold back an incomplete multi-byte character (byte-fallback and byte-level pieces
  // decode to U+FFFD until the sequence is complete); give up holding after 4 ids, as
  // UTF-8 would.
  if (absl::EndsWith(piece, kReplacementChar) && pending_.size() < 4) return std::string();
  CommitPending();
  return piece;
}

absl::StatusOr<std::string> StreamingDecoder::Flush() {
  if (pending_.empty()) return std::string();
  MOE_ASSIGN_OR_RETURN(std::string piece, PendingText());
  CommitPending();
  return piece;
}

}  // namespace moe
