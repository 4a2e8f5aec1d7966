// Chat messages to prompt tokens: the model's own chat template (tokenizer_config.json's
// "chat_template", rendered by common/jinja) when it has one this renderer supports, and
// a built-in format for the model's family otherwise.
#ifndef MOE_COMMON_CHAT_TEMPLATE_H_
#define MOE_COMMON_CHAT_TEMPLATE_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/jinja/template.h"
#include "common/tokenizer.h"

namespace moe {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant" (and "tool" where a template knows it)
  std::string content;
};

// What tokenizer_config.json says about chat: the template and the special tokens it
// refers to. Every field is optional in the file.
struct TokenizerConfig {
  std::optional<std::string> chat_template;  // the "default" one when the file names several
  std::optional<std::string> bos_token;
  std::optional<std::string> eos_token;

  // Reads `path`; INVALID_ARGUMENT naming the field when one has the wrong type.
  static absl::StatusOr<TokenizerConfig> FromFile(const std::string& path);
  static absl::StatusOr<TokenizerConfig> FromJson(absl::string_view text, absl::string_view source);
};

// A parsed chat template with the special tokens it prints. Immutable; Render is safe to
// call from several threads.
class ChatTemplate {
 public:
  // UNIMPLEMENTED when the template uses something outside common/jinja's subset.
  static absl::StatusOr<std::unique_ptr<ChatTemplate>> Create(absl::string_view source,
                                                              const TokenizerConfig& config);

  // Renders as Hugging Face's apply_chat_template(messages, tokenize=False,
  // add_generation_prompt=...) does: `messages` a list of dicts (role, content and
  // whatever else the template reads, e.g. tool_calls); `tools` and `documents` are None
  // unless `extra` sets them; `extra` adds template variables (enable_thinking=false).
  absl::StatusOr<std::string> Render(const jinja::Value& messages, bool add_generation_prompt,
                                     const jinja::Dict& extra = {}) const;
  absl::StatusOr<std::string> Render(absl::Span<const ChatMessage> messages,
                                     bool add_generation_prompt) const;
  const TokenizerConfig& config() const { return config_; }

 private:
  ChatTemplate(std::unique_ptr<jinja::Template> tmpl, TokenizerConfig config)
      : template_(std::move(tmpl)), config_(std::move(config)) {}
  std::unique_ptr<jinja::Template> template_;
  TokenizerConfig config_;
};

// The format used when a model has no usable template, by config.json's model_type:
// Qwen's ChatML for qwen2_moe / qwen3_moe, the Tulu format for olmoe (both as Jinja
// source, rendered like a model's own), and null for mixtral and anything else, which
// RenderChat formats as Mixtral-Instruct (below).
std::optional<std::string> DefaultChatTemplateSource(absl::string_view model_type);

// Renders messages to prompt token ids with the tokenizer's chat template (which
// Tokenizer::LoadFromDirectory attaches: the model's, else the family default), adding
// the assistant's generation prompt; special tokens the template writes become their ids.
// Without a template, Mixtral-8x7B-Instruct-v0.1's format is built directly: roles
// alternate user/assistant starting with user, each user turn is "[INST] content
// [/INST]", each assistant turn is its content followed by EOS, and a leading system
// message (which that template rejects) is prepended to the first user turn, separated
// by a blank line, as Mistral's own clients do. When a model's template meets something
// unsupported only while rendering, the family default is used and the reason logged.
absl::StatusOr<std::vector<int>> RenderChat(const Tokenizer& tokenizer,
                                            absl::Span<const ChatMessage> messages);

}  // namespace moe

#endif  // MOE_COMMON_CHAT_TEMPLATE_H_
