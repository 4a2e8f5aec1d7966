// A std-only facade over libsentencepiece, loaded as a plugin.
//
// Why a plugin: Debian's libsentencepiece.so.0 carries its own copy of protobuf-lite and
// exports those symbols. Linked into a process that also uses libprotobuf (every gRPC
// binary), the two copies interpose and the process crashes while registering
// descriptors. So sentencepiece lives in libmoe_sentencepiece.so, which is dlopen'ed
// with RTLD_LOCAL | RTLD_DEEPBIND: its protobuf stays private, and the rest of the
// process sees only this interface (virtual calls, no symbol lookups).
#ifndef MOE_COMMON_SENTENCEPIECE_ADAPTER_H_
#define MOE_COMMON_SENTENCEPIECE_ADAPTER_H_

#include <memory>
#include <string>
#include <vector>

namespace moe::internal {

class SentencePieceAdapter {
 public:
  virtual ~SentencePieceAdapter() = default;
  virtual bool Encode(const std::string& text, std::vector<int>* ids, std::string* error) const = 0;
  virtual bool Decode(const std::vector<int>& ids, std::string* text, std::string* error) const = 0;
  virtual int bos_id() const = 0;
  virtual int eos_id() const = 0;
  virtual int piece_size() const = 0;
  virtual std::string IdToPiece(int id) const = 0;
};

// Loads the plugin (once per process) and a model from `path`. Returns null and sets
// *error when either fails.
std::unique_ptr<SentencePieceAdapter> LoadSentencePiece(const std::string& path, std::string* error);

}  // namespace moe::internal

// The plugin's one exported entry point.
extern "C" moe::internal::SentencePieceAdapter* MoeSentencePieceLoad(const char* path,
                                                                     std::string* error);

#endif  // MOE_COMMON_SENTENCEPIECE_ADAPTER_H_
