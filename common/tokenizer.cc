#include "common/tokenizer.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace moe {
namespace {

constexpr size_t kContextIds = 4;
constexpr absl::string_view kReplacementChar = "\xEF\xBF\xBD";

}  // namespace

Tokenizer::Tokenizer(std::unique_ptr<internal::SentencePieceAdapter> sp)
    : sp_(std::move(sp)) {}
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& path,
                                                           int64_t vocab_size) {
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
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(sp)));
}

absl::StatusOr<std::vector<int>> Tokenizer::Encode(absl::string_view text, bool add_bos) const {
  std::vector<int> ids;
  std::string error;
  if (!sp_->Encode(std::string(text), &ids, &error)) {
    return absl::InvalidArgumentError(absl::StrCat("cannot tokenize: ", error));
  }
  if (add_bos) ids.insert(ids.begin(), bos_id());
  return ids;
}

absl::StatusOr<std::string> Tokenizer::Decode(absl::Span<const int> ids) const {
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

int Tokenizer::bos_id() const { return sp_->bos_id(); }
int Tokenizer::eos_id() const { return sp_->eos_id(); }
int Tokenizer::vocab_size() const { return sp_->piece_size(); }

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
  // Hold back an incomplete multi-byte character (byte-fallback pieces decode to U+FFFD
  // until the sequence is complete); give up holding after 4 ids, as UTF-8 would.
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
