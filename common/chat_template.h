// Mixtral-Instruct's chat template: <s>[INST] user [/INST]assistant</s>[INST] ...
#ifndef MOE_COMMON_CHAT_TEMPLATE_H_
#define MOE_COMMON_CHAT_TEMPLATE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/tokenizer.h"

namespace moe {

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

// Renders messages to token ids the way Mixtral-8x7B-Instruct-v0.1's template does:
// roles alternate user/assistant starting with user, each user turn is
// "[INST] content [/INST]", each assistant turn is its content followed by EOS. A leading
// system message (which that template rejects) is prepended to the first user turn,
// separated by a blank line, as Mistral's own clients do. Other roles are errors.
absl::StatusOr<std::vector<int>> RenderChat(const Tokenizer& tokenizer,
                                            absl::Span<const ChatMessage> messages);

}  // namespace moe

#endif  // MOE_COMMON_CHAT_TEMPLATE_H_
