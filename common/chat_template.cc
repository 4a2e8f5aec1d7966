#include "common/chat_template.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace moe {

absl::StatusOr<std::vector<int>> RenderChat(const Tokenizer& tokenizer,
                                            absl::Span<const ChatMessage> messages) {
  std::string system;
  size_t first = 0;
  if (!messages.empty() && messages[0].role == "system") {
    system = messages[0].content;
    first = 1;
  }
  if (first == messages.size()) {
    return absl::InvalidArgumentError("chat has no user message");
  }
  std::vector<int> ids = {tokenizer.bos_id()};
  for (size_t i = first; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    const bool expect_user = (i - first) % 2 == 0;
    if (m.role != "user" && m.role != "assistant") {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown chat role ", QuoteForMessage(m.role), " in message ", i,
          " (expected user or assistant; system only first)"));
    }
    if ((m.role == "user") != expect_user) {
      return absl::InvalidArgumentError(absl::StrCat(
          "chat roles must alternate user/assistant starting with user; message ", i,
          " is ", m.role));
    }
    if (m.role == "user") {
      const std::string content =
          (i == first && !system.empty()) ? absl::StrCat(system, "\n\n", m.content) : m.content;
      MOE_ASSIGN_OR_RETURN(auto turn,
                           tokenizer.Encode(absl::StrCat("[INST] ", content, " [/INST]"), false));
      ids.insert(ids.end(), turn.begin(), turn.end());
    } else {
      MOE_ASSIGN_OR_RETURN(auto turn, tokenizer.Encode(m.content, false));
      ids.insert(ids.end(), turn.begin(), turn.end());
      ids.push_back(tokenizer.eos_id());
    }
  }
  if (messages.back().role != "user") {
    return absl::InvalidArgumentError("the last chat message must be from the user");
  }
  return ids;
}

}  // namespace moe
