// The real chat templates of Qwen3-30B-A3B, OLMoE-1B-7B-0924-Instruct and
// Mixtral-8x7B-Instruct-v0.1 (two revisions), copied into tests/data/chat_templates with
// their sources named in its README, rendered for a set of conversations and compared
// with what Jinja2 renders for them (Debian's python3-jinja2 set up as Hugging Face's
// apply_chat_template; tools/make_chat_template_testdata.py writes expected.json).
#include "common/chat_template.h"

#include <fstream>
#include <sstream>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace moe {
namespace {

using ::testing::HasSubstr;

std::string DataDir() { return std::string(MOE_SOURCE_DIR) + "/tests/data/chat_templates/"; }

nlohmann::ordered_json Expected() {
  std::ifstream in(DataDir() + "expected.json");
  std::stringstream s;
  s << in.rdbuf();
  return nlohmann::ordered_json::parse(s.str());
}

TEST(ChatTemplateTest, RendersRealTemplatesAsHuggingFaceDoes) {
  const nlohmann::ordered_json expected = Expected();
  EXPECT_THAT(expected["renderer"].get<std::string>(), HasSubstr("Jinja2"));
  std::map<std::string, int> per_template;
  for (const auto& c : expected["cases"]) {
    const std::string name = c["template"];
    const std::string what = absl::StrCat(name, ": ", c["title"].get<std::string>());
    auto config = TokenizerConfig::FromFile(DataDir() + name + "/tokenizer_config.json");
    ASSERT_TRUE(config.ok()) << config.status();
    ASSERT_TRUE(config->chat_template.has_value());
    auto tmpl = ChatTemplate::Create(*config->chat_template, *config);
    ASSERT_TRUE(tmpl.ok()) << what << ": " << tmpl.status();
    jinja::Dict extra;
    for (const auto& [k, v] : c["extra"].items()) extra.emplace_back(k, jinja::Value::FromJson(v));
    const auto out = (*tmpl)->Render(jinja::Value::FromJson(c["messages"]),
                                     c["add_generation_prompt"].get<bool>(), extra);
    if (c.contains("error")) {
      ASSERT_FALSE(out.ok()) << what;
      EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument) << what;
      EXPECT_THAT(std::string(out.status().message()), HasSubstr(c["error"].get<std::string>())) << what;
    } else {
      ASSERT_TRUE(out.ok()) << what << ": " << out.status();
      EXPECT_EQ(absl::CHexEscape(*out), absl::CHexEscape(c["expected"].get<std::string>())) << what;
    }
    ++per_template[name];
  }
  EXPECT_EQ(per_template.size(), 4u);
  for (const auto& [name, n] : per_template) EXPECT_GE(n, 6) << name;
}

TEST(ChatTemplateTest, ReadsTokenizerConfigFieldsInTheirShapes) {
  auto config = TokenizerConfig::FromJson(
      R"({"bos_token": {"__type": "AddedToken", "content": "<s>"}, "eos_token": "</s>",
          "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]})",
      "tokenizer_config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->bos_token, "<s>");
  EXPECT_EQ(config->eos_token, "</s>");
  EXPECT_EQ(config->chat_template, "D");
  auto none = TokenizerConfig::FromJson(R"({"bos_token": null})", "x.json");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->bos_token.has_value());
  EXPECT_FALSE(none->chat_template.has_value());
  for (const char* bad : {R"({"bos_token": 5})", R"({"chat_template": 7})", R"([1])", "{"}) {
    const auto status = TokenizerConfig::FromJson(bad, "bad/tokenizer_config.json").status();
    EXPECT_FALSE(status.ok()) << bad;
    EXPECT_THAT(std::string(status.message()), HasSubstr("bad/tokenizer_config.json")) << bad;
  }
}

// The families' built-in formats render as the real templates do for plain chats.
TEST(ChatTemplateTest, FamilyDefaultsAgreeWithTheRealTemplates) {
  const std::vector<ChatMessage> chat = {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello."},
                                         {"user", "Again?"}};
  for (const auto& [family, dir] : std::vector<std::pair<std::string, std::string>>{
           {"qwen3_moe", "qwen3-30b-a3b"}, {"olmoe", "olmoe-1b-7b-0924-instruct"}}) {
    auto config = TokenizerConfig::FromFile(DataDir() + dir + "/tokenizer_config.json");
    ASSERT_TRUE(config.ok());
    auto real = ChatTemplate::Create(*config->chat_template, *config);
    auto fallback = ChatTemplate::Create(*DefaultChatTemplateSource(family), *config);
    ASSERT_TRUE(real.ok() && fallback.ok());
    EXPECT_EQ(*(*fallback)->Render(chat, true), *(*real)->Render(chat, true)) << family;
  }
  EXPECT_FALSE(DefaultChatTemplateSource("mixtral").has_value());
}

}  // namespace
}  // namespace moe
