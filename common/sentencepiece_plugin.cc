// libmoe_sentencepiece.so: the only code that includes sentencepiece's header (which
// also declares its own `absl::string_view`, colliding with Abseil's).
#include <sentencepiece_processor.h>

#include "common/sentencepiece_adapter.h"

namespace {

class Adapter final : public moe::internal::SentencePieceAdapter {
 public:
  bool Load(const std::string& path, std::string* error) {
    const auto status = processor_.Load(path);
    if (!status.ok()) *error = status.ToString();
    return status.ok();
  }
  bool Encode(const std::string& text, std::vector<int>* ids, std::string* error) const override {
    const auto status = processor_.Encode(text, ids);
    if (!status.ok()) *error = status.ToString();
    return status.ok();
  }
  bool Decode(const std::vector<int>& ids, std::string* text, std::string* error) const override {
    const auto status = processor_.Decode(ids, text);
    if (!status.ok()) *error = status.ToString();
    return status.ok();
  }
  int bos_id() const override { return processor_.bos_id(); }
  int eos_id() const override { return processor_.eos_id(); }
  int piece_size() const override { return processor_.GetPieceSize(); }
  std::string IdToPiece(int id) const override { return processor_.IdToPiece(id); }

 private:
  sentencepiece::SentencePieceProcessor processor_;
};

}  // namespace

extern "C" __attribute__((visibility("default"))) moe::internal::SentencePieceAdapter*
MoeSentencePieceLoad(const char* path, std::string* error) {
  auto adapter = std::make_unique<Adapter>();
  if (!adapter->Load(path, error)) return nullptr;
  return adapter.release();
}
