// Text <-> token ids, plus incremental decoding for streaming. Two implementations behind
// one interface: SentencePiece (tokenizer.model, over libsentencepiece: Mixtral) and
// byte-level BPE (tokenizer.json, common/bpe_tokenizer: Qwen, OLMoE). A tokenizer loaded
// from a model directory also carries the model's chat template (common/chat_template).
#ifndef MOE_COMMON_TOKENIZER_H_
#define MOE_COMMON_TOKENIZER_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/model_config.h"

namespace moe {

class ChatTemplate;  // common/chat_template.h

// Immutable after Load; Encode/Decode are safe to call from several threads.
class Tokenizer {
 public:
  virtual ~Tokenizer();

  // Loads one file: tokenizer.json (byte-level BPE) by its name, anything else as a
  // SentencePiece model. `vocab_size` (the model's) bounds every id it may produce.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& path,
                                                         int64_t vocab_size);
  // The tokenizer of a model directory (FindTokenizerFile), with tokenizer_config.json's
  // chat template, BOS and EOS when that file exists. A template outside the supported
  // Jinja subset is logged and replaced by the default of `config.model_type`'s family.
  // EOS falls back to config.json's eos_token_id when tokenizer_config.json names none.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> LoadFromDirectory(const std::string& dir,
                                                                      const ModelConfig& config);
  // dir/tokenizer.model when present (Mixtral releases ship a tokenizer.json too, but the
  // SentencePiece model is their reference), else dir/tokenizer.json, else "".
  static std::string FindTokenizerFile(const std::string& dir);

  // Encodes `text`, after BOS when `add_bos` and the tokenizer has one to add (Qwen's has
  // none). With `parse_special`, special tokens written in the text (<s>, <|im_end|>)
  // become their ids, as a rendered chat template needs; without, they are plain text, so
  // text a user typed cannot forge them.
  absl::StatusOr<std::vector<int>> Encode(absl::string_view text, bool add_bos,
                                          bool parse_special = false) const {
    return DoEncode(text, add_bos, parse_special);
  }
  // Decodes ids (special tokens such as BOS/EOS print nothing); every id must be inside
  // the vocabulary. Ill-formed UTF-8 (a character cut between tokens) becomes U+FFFD.
  virtual absl::StatusOr<std::string> Decode(absl::Span<const int> ids) const = 0;

  virtual int bos_id() const = 0;  // -1 when the tokenizer has none
  virtual int eos_id() const = 0;  // -1 when the tokenizer has none
  virtual int vocab_size() const = 0;

  // The chat template RenderChat uses, or null (then Mixtral's format is built in).
  const ChatTemplate* chat_template() const { return chat_template_.get(); }
  // config.json's model_type when loaded from a directory ("" otherwise).
  const std::string& model_type() const { return model_type_; }

 protected:
  Tokenizer() = default;
  virtual absl::StatusOr<std::vector<int>> DoEncode(absl::string_view text, bool add_bos,
                                                    bool parse_special) const = 0;
 private:
  std::shared_ptr<const ChatTemplate> chat_template_;
  std::string model_type_;
};

// Turns a stream of generated ids into text pieces as soon as they are complete UTF-8,
// with the spacing they have in context. Not thread-safe; one per generation.
class StreamingDecoder {
 public:
  // `context` is the prompt (its last ids decide the first piece's leading space).
  StreamingDecoder(const Tokenizer& tokenizer, absl::Span<const int> context);

  // Adds one id; returns the text it completes (possibly empty while a multi-byte
  // character is still incomplete).
  absl::StatusOr<std::string> Push(int id);
  // Whatever is still held back (an incomplete character) at the end of a stream.
  absl::StatusOr<std::string> Flush();

 private:
  // Text the pending ids add after the context.
  absl::StatusOr<std::string> PendingText() const;
  // Moves the pending ids into the (short) context.
  void CommitPending();

  const Tokenizer& tokenizer_;
  std::vector<int> context_;  // already emitted, kept short
  std::vector<int> pending_;  // not yet emitted
};

}  // namespace moe

#endif  // MOE_COMMON_TOKENIZER_H_
