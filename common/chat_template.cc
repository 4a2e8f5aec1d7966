#include "common/chat_template.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/json_util.h"
#include "common/logging.h"
#include "common/status.h"

namespace moe {
namespace {

// tokenizer_config.json files carry every added token's description too; the largest
// real ones are a few MB.
constexpr uintmax_t kMaxConfigBytes = 64 << 20;

// Qwen's ChatML, as Qwen2-MoE and Qwen3-MoE chats are formatted.
constexpr absl::string_view kChatMlTemplate =
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

// The Tulu format of OLMoE-1B-7B-0924-Instruct.
constexpr absl::string_view kTuluTemplate =
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<|system|>\\n' + message['content'] + '\\n' }}"
    "{% elif message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + '\\n' }}"
    "{% elif message['role'] == 'assistant' %}{% if not loop.last %}"
    "{{ '<|assistant|>\\n' + message['content'] + eos_token + '\\n' }}"
    "{% else %}{{ '<|assistant|>\\n' + message['content'] + eos_token }}{% endif %}{% endif %}"
    "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}{% endfor %}";

// A special token as tokenizer_config.json writes it: a string, an AddedToken object
// ({"content": ...}) or null.
absl::StatusOr<std::optional<std::string>> TokenField(const nlohmann::json& root,
                                                      const char* key, absl::string_view source) {
  const auto it = root.find(key);
  if (it == root.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) {
    const auto content = it->find("content");
    if (content != it->end() && content->is_string()) return content->get<std::string>();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      source, ": \"", key, "\" must be a string, an object with a \"content\" string, or null"));
}

// Mixtral-8x7B-Instruct-v0.1's format, built directly (see RenderChat in the header).
absl::StatusOr<std::vector<int>> RenderMixtral(const Tokenizer& tokenizer,
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

jinja::Value MessagesValue(absl::Span<const ChatMessage> messages) {
  jinja::List list;
  for (const ChatMessage& m : messages) {
    list.emplace_back(jinja::Dict{{"role", jinja::Value(m.role)}, {"content", jinja::Value(m.content)}});
  }
  return jinja::Value(std::move(list));
}

}  // namespace

absl::StatusOr<TokenizerConfig> TokenizerConfig::FromFile(const std::string& path) {
  std::error_code ec;
  const auto bytes = std::filesystem::file_size(path, ec);
  if (ec) return absl::NotFoundError(absl::StrCat(path, ": ", ec.message()));
  if (bytes > kMaxConfigBytes) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", bytes, " bytes is larger than the limit of ",
                                                   kMaxConfigBytes));
  }
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot read"));
  return FromJson(text.str(), path);
}

absl::StatusOr<TokenizerConfig> TokenizerConfig::FromJson(absl::string_view text,
                                                          absl::string_view source) {
  MOE_ASSIGN_OR_RETURN(const nlohmann::json root, ParseJsonObject(text, source));
  TokenizerConfig config;
  MOE_ASSIGN_OR_RETURN(config.bos_token, TokenField(root, "bos_token", source));
  MOE_ASSIGN_OR_RETURN(config.eos_token, TokenField(root, "eos_token", source));
  const auto tmpl = root.find("chat_template");
  if (tmpl == root.end() || tmpl->is_null()) return config;
  if (tmpl->is_string()) {
    config.chat_template = tmpl->get<std::string>();
    return config;
  }
  // Several named templates (e.g. "default" and "tool_use"): chats use "default".
  if (tmpl->is_array()) {
    for (const auto& entry : *tmpl) {
      if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
          entry["template"].is_string()) {
        config.chat_template = entry["template"].get<std::string>();
        return config;
      }
    }
    return config;  // no default one: the family's format applies
  }
  return absl::InvalidArgumentError(absl::StrCat(
      source, ": \"chat_template\" must be a string, a list of {name, template}, or null"));
}

absl::StatusOr<std::unique_ptr<ChatTemplate>> ChatTemplate::Create(absl::string_view source,
                                                                   const TokenizerConfig& config) {
  MOE_ASSIGN_OR_RETURN(auto tmpl, jinja::Template::Parse(source));
  return std::unique_ptr<ChatTemplate>(new ChatTemplate(std::move(tmpl), config));
}

absl::StatusOr<std::string> ChatTemplate::Render(const jinja::Value& messages,
                                                 bool add_generation_prompt,
                                                 const jinja::Dict& extra) const {
  jinja::Dict context = {{"messages", messages},
                         {"add_generation_prompt", jinja::Value(add_generation_prompt)},
                         {"tools", jinja::Value::None()},
                         {"documents", jinja::Value::None()}};
  if (config_.bos_token.has_value()) context.emplace_back("bos_token", jinja::Value(*config_.bos_token));
  if (config_.eos_token.has_value()) context.emplace_back("eos_token", jinja::Value(*config_.eos_token));
  for (const auto& [k, v] : extra) context.emplace_back(k, v);  // later entries win
  return template_->Render(jinja::Value(std::move(context)));
}

absl::StatusOr<std::string> ChatTemplate::Render(absl::Span<const ChatMessage> messages,
                                                 bool add_generation_prompt) const {
  return Render(MessagesValue(messages), add_generation_prompt);
}

std::optional<std::string> DefaultChatTemplateSource(absl::string_view model_type) {
  if (model_type == "qwen2_moe" || model_type == "qwen3_moe" || model_type == "qwen2" ||
      model_type == "qwen3") {
    return std::string(kChatMlTemplate);
  }
  if (model_type == "olmoe") return std::string(kTuluTemplate);
  return std::nullopt;
}

absl::StatusOr<std::vector<int>> RenderChat(const Tokenizer& tokenizer,
                                            absl::Span<const ChatMessage> messages) {
  if (messages.empty()) return absl::InvalidArgumentError("chat has no messages");
  const ChatTemplate* tmpl = tokenizer.chat_template();
  std::unique_ptr<ChatTemplate> fallback;
  if (tmpl != nullptr) {
    auto text = tmpl->Render(messages, /*add_generation_prompt=*/true);
    if (text.ok()) return tokenizer.Encode(*text, /*add_bos=*/false, /*parse_special=*/true);
    if (text.status().code() != absl::StatusCode::kUnimplemented) {
      return Annotate(text.status(), "chat template");
    }
    MOE_LOG(WARNING) << "the model's chat template cannot be rendered ("
                     << text.status().message() << "); using the built-in "
                     << (tokenizer.model_type().empty() ? "mixtral" : tokenizer.model_type())
                     << " chat format for this request";
    if (const auto source = DefaultChatTemplateSource(tokenizer.model_type())) {
      MOE_ASSIGN_OR_RETURN(fallback, ChatTemplate::Create(*source, tmpl->config()));
      MOE_ASSIGN_OR_RETURN(const std::string rendered, fallback->Render(messages, true));
      return tokenizer.Encode(rendered, /*add_bos=*/false, /*parse_special=*/true);
    }
  }
  return RenderMixtral(tokenizer, messages);
}

}  // namespace moe
