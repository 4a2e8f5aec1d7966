#include "common/sentencepiece_adapter.h"

#include <sentencepiece_processor.h>

namespace moe::internal {

struct SentencePieceAdapter::Impl {
  sentencepiece::SentencePieceProcessor processor;
};

SentencePieceAdapter::SentencePieceAdapter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SentencePieceAdapter::~SentencePieceAdapter() = default;

std::unique_ptr<SentencePieceAdapter> SentencePieceAdapter::Load(const std::string& path,
                                                                 std::string* error) {
  auto impl = std::make_unique<Impl>();
  const auto status = impl->processor.Load(path);
  if (!status.ok()) {
    *error = status.ToString();
    return nullptr;
  }
  return std::unique_ptr<SentencePieceAdapter>(new SentencePieceAdapter(std::move(impl)));
}

bool SentencePieceAdapter::Encode(const std::string& text, std::vector<int>* ids,
                                  std::string* error) const {
  const auto status = impl_->processor.Encode(text, ids);
  if (!status.ok()) *error = status.ToString();
  return status.ok();
}

bool SentencePieceAdapter::Decode(const std::vector<int>& ids, std::string* text,
                                  std::string* error) const {
  const auto status = impl_->processor.Decode(ids, text);
  if (!status.ok()) *error = status.ToString();
  return status.ok();
}

int SentencePieceAdapter::bos_id() const { return impl_->processor.bos_id(); }
int SentencePieceAdapter::eos_id() const { return impl_->processor.eos_id(); }
int SentencePieceAdapter::piece_size() const { return impl_->processor.GetPieceSize(); }

}  // namespace moe::internal
