// A std-only facade over libsentencepiece. Its header declares its own
// `absl::string_view`, which collides with Abseil's, so only sentencepiece_adapter.cc
// includes it and nothing here mentions Abseil.
#ifndef MOE_COMMON_SENTENCEPIECE_ADAPTER_H_
#define MOE_COMMON_SENTENCEPIECE_ADAPTER_H_

#include <memory>
#include <string>
#include <vector>

namespace moe::internal {

class SentencePieceAdapter {
 public:
  // Returns null and sets *error when the model cannot be loaded.
  static std::unique_ptr<SentencePieceAdapter> Load(const std::string& path, std::string* error);
  ~SentencePieceAdapter();

  bool Encode(const std::string& text, std::vector<int>* ids, std::string* error) const;
  bool Decode(const std::vector<int>& ids, std::string* text, std::string* error) const;
  int bos_id() const;
  int eos_id() const;
  int piece_size() const;

 private:
  struct Impl;
  explicit SentencePieceAdapter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace moe::internal

#endif  // MOE_COMMON_SENTENCEPIECE_ADAPTER_H_
