// A byte-level BPE tokenizer read from Hugging Face's tokenizer.json, as the Qwen, OLMoE,
// GPT-2 and Llama-3 releases ship it. What it implements, in Hugging Face's order:
//
//   1. added tokens (special or not) found in the text before anything else, with their
//      lstrip / rstrip / single_word rules; those marked "normalized" are looked for in
//      the normalized text;
//   2. the normalizer: NFC, NFD, NFKC, NFKD, or a Sequence of them;
//   3. the pre-tokenizer: Split (regex or string, every delimiter behaviour, invert),
//      Digits, and ByteLevel (prefix space, GPT-2's regex) last, in a Sequence or alone;
//   4. the BPE model: merges by rank (the "a b" string form and the [a, b] list form),
//      ignore_merges;
//   5. the post-processor's leading special tokens (TemplateProcessing) when asked to add
//      them;
// and decoding back through GPT-2's byte map, ill-formed UTF-8 replaced by U+FFFD.
// Anything else in the file (a Metaspace pre-tokenizer, a WordPiece model, BPE dropout)
// is refused at load with a message naming it, never silently ignored.
#ifndef MOE_COMMON_BPE_TOKENIZER_H_
#define MOE_COMMON_BPE_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/unicode_regex.h"
#include "common/unicode_text.h"

namespace moe {

// Immutable after Load; Encode/Decode are safe to call from several threads.
class BpeTokenizer {
 public:
  // Bounds on what a tokenizer.json may make us hold (the largest real ones, Qwen's and
  // Llama-3's, are about 11 MB with 150k tokens and merges).
  static constexpr int64_t kMaxFileBytes = 256 << 20;
  static constexpr int64_t kMaxMerges = 4 << 20;
  static constexpr int64_t kMaxAddedTokens = 1 << 16;
  static constexpr int64_t kMaxTokenBytes = 4096;
  static constexpr int kMaxPreTokenizerSteps = 16;
  // Longest text one Encode call takes.
  static constexpr int64_t kMaxTextBytes = 64 << 20;

  // Reads tokenizer.json at `path`; every id must be below `vocab_size` (the model's
  // embedding rows).
  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> Load(const std::string& path,
                                                           int64_t vocab_size);
  // The same from the file's text; `source` names it in errors.
  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> FromJson(absl::string_view json,
                                                               absl::string_view source,
                                                               int64_t vocab_size);
  ~BpeTokenizer();

  // Encodes UTF-8 `text`. With `parse_special`, special added tokens written in the text
  // become their ids (what Hugging Face's encode does, and what a rendered chat template
  // needs); without, they are ordinary text (safe for text a user typed). Non-special
  // added tokens are always matched, as in Hugging Face. With `add_special`, the
  // post-processor's leading special tokens (a BOS) come first.
  absl::StatusOr<std::vector<int>> Encode(absl::string_view text, bool parse_special,
                                          bool add_special) const;
  // Decodes ids; special added tokens are left out when `skip_special`. Every id must be
  // a token of this tokenizer.
  absl::StatusOr<std::string> Decode(absl::Span<const int> ids, bool skip_special) const;

  // The id of a token given by its text (an added token or a vocabulary entry).
  std::optional<int> TokenId(absl::string_view token) const;
  // Whether `id` is a special added token.
  bool IsSpecial(int id) const;
  // One past the largest id.
  int size() const { return static_cast<int>(id_to_token_.size()); }
  // The special tokens the post-processor puts before a sequence (empty when none).
  const std::vector<int>& leading_special_ids() const { return leading_special_ids_; }

  // Implementation types, public only so that bpe_tokenizer.cc's parsing helpers (free
  // functions) can fill them in.
  struct AddedToken {
    int id = 0;
    std::string content;
    std::string match;  // what is looked for: content, normalized when `normalized`
    bool single_word = false, lstrip = false, rstrip = false, normalized = false;
    bool special = false;
  };
  enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext,
                             kContiguous };
  struct PreTokenizerStep {
    enum class Kind { kSplit, kByteLevel } kind = Kind::kSplit;
    std::unique_ptr<UnicodeRegex> regex;  // kSplit with a regex, and ByteLevel's own
    std::string literal;                  // kSplit with a string pattern
    SplitBehavior behavior = SplitBehavior::kIsolated;
    bool invert = false;
    bool add_prefix_space = false;        // kByteLevel
  };

 private:
  BpeTokenizer();
  struct Merge {
    int rank;
    int new_id;
  };
  // Splits `text` at the added tokens of one pass; appends (piece, token id or -1).
  void SplitAddedTokens(const std::string& text, bool normalized_pass, bool parse_special,
                        std::vector<std::pair<std::string, int>>* out) const;
  absl::StatusOr<std::string> Normalize(absl::string_view text) const;
  absl::Status PreTokenize(const std::string& text, std::vector<std::string>* pieces) const;
  void EncodeWord(absl::string_view bytes, std::vector<int>* ids) const;

  absl::flat_hash_map<std::string, int> vocab_;  // byte-mapped token text -> id
  std::vector<std::string> id_to_token_;         // "" for ids that are not tokens
  std::vector<bool> is_token_;
  absl::flat_hash_map<uint64_t, Merge> merges_;  // (left id << 32 | right id) -> merge
  bool ignore_merges_ = false;
  std::vector<AddedToken> added_;
  std::vector<int> added_by_id_;  // id -> index into added_, or -1
  bool added_first_byte_[2][256] = {};  // [normalized pass][byte]: some token starts so
  std::vector<NormalizationForm> normalizer_;
  std::vector<PreTokenizerStep> pre_tokenizer_;
  std::vector<int> leading_special_ids_;
  int byte_to_id_[256];
};

}  // namespace moe

#endif  // MOE_COMMON_BPE_TOKENIZER_H_
