// Text <-> token ids over libsentencepiece, plus incremental decoding for streaming.
#ifndef MOE_COMMON_TOKENIZER_H_
#define MOE_COMMON_TOKENIZER_H_

#include <memory>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/sentencepiece_adapter.h"

namespace moe {

// Immutable after Load; Encode/Decode are safe to call from several threads.
class Tokenizer {
 public:
  // Loads tokenizer.model; `vocab_size` (the model's) bounds every id it may produce.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& path,
                                                         int64_t vocab_size);
  ~Tokenizer();

  // Encodes `text` (sentencepiece adds its dummy-prefix space), optionally after BOS.
  absl::StatusOr<std::vector<int>> Encode(absl::string_view text, bool add_bos) const;
  // Decodes ids; every id must be inside the vocabulary.
  absl::StatusOr<std::string> Decode(absl::Span<const int> ids) const;

  int bos_id() const;
  int eos_id() const;
  int vocab_size() const;

 private:
  explicit Tokenizer(std::unique_ptr<internal::SentencePieceAdapter> sp);
  std::unique_ptr<internal::SentencePieceAdapter> sp_;
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
