// The Jinja subset against Jinja2 itself: tests/data/chat_templates/expected.json holds
// what Debian's python3-jinja2 (set up as Hugging Face's apply_chat_template sets it up)
// renders for small templates covering whitespace control, scoping, loops, filters,
// tests, methods, slicing, operators and str(); tools/make_chat_template_testdata.py
// writes it. The rest checks what only this renderer does: refusing what it lacks, and
// its bounds.
#include "common/jinja/template.h"

#include <fstream>
#include <random>
#include <sstream>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace moe::jinja {
namespace {

using ::testing::HasSubstr;

nlohmann::ordered_json Expected() {
  std::ifstream in(std::string(MOE_SOURCE_DIR) + "/tests/data/chat_templates/expected.json");
  std::stringstream s;
  s << in.rdbuf();
  return nlohmann::ordered_json::parse(s.str());
}

absl::StatusOr<std::string> RenderSource(absl::string_view source, const Value& context = Value(Dict{})) {
  auto tmpl = Template::Parse(source);
  if (!tmpl.ok()) return tmpl.status();
  return (*tmpl)->Render(context);
}

TEST(JinjaTemplateTest, RendersSnippetsAsJinja2Does) {
  const nlohmann::ordered_json expected = Expected();
  ASSERT_GE(expected["snippets"].size(), 40u);
  for (const auto& s : expected["snippets"]) {
    const std::string source = s["source"];
    const auto out = RenderSource(source, Value::FromJson(s["context"]));
    if (s.contains("error")) {
      ASSERT_FALSE(out.ok()) << source;
      EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument) << source;
      EXPECT_THAT(std::string(out.status().message()), HasSubstr(s["error"].get<std::string>())) << source;
    } else {
      ASSERT_TRUE(out.ok()) << source << ": " << out.status();
      EXPECT_EQ(absl::CHexEscape(*out), absl::CHexEscape(s["expected"].get<std::string>())) << source;
    }
  }
}

TEST(JinjaTemplateTest, RefusesWhatTheSubsetLacksAsUnimplemented) {
  for (const char* source : {"{% include 'other.jinja' %}", "{% extends 'base' %}",
                             "{{ x|wordwrap(5) }}", "{% if x is prime %}{% endif %}",
                             "{% for x in y recursive %}{% endfor %}"}) {
    const auto out = RenderSource(source);
    ASSERT_FALSE(out.ok()) << source;
    EXPECT_EQ(out.status().code(), absl::StatusCode::kUnimplemented) << source << ": " << out.status();
  }
  // Met only while rendering: an unknown function or method.
  for (const char* source : {"{{ zip([1], [2]) }}", "{{ 'x'.zfill(3) }}"}) {
    const auto out = RenderSource(source);
    ASSERT_FALSE(out.ok()) << source;
    EXPECT_EQ(out.status().code(), absl::StatusCode::kUnimplemented) << source << ": " << out.status();
  }
}

TEST(JinjaTemplateTest, SyntaxErrorsNameTheLine) {
  for (const auto& [source, what] : std::vector<std::pair<std::string, std::string>>{
           {"a\nb\n{% if x %}", "missing {% endif %}"},
           {"{{ 'unterminated }}", "unterminated string"},
           {"x\n{{ 1 + }}", "line 2"},
           {"{# never closed", "unclosed comment"},
           {"{% for %}{% endfor %}", "expected a name"},
           {"{{ a[] }}", "empty subscript"}}) {
    const auto out = RenderSource(source);
    ASSERT_FALSE(out.ok()) << source;
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument) << source;
    EXPECT_THAT(std::string(out.status().message()), HasSubstr(what)) << source;
  }
}

TEST(JinjaTemplateTest, UndefinedNamesPrintNothingButCannotBeDereferenced) {
  EXPECT_EQ(*RenderSource("[{{ nothing }}]{% for x in nothing %}x{% endfor %}{{ nothing|length }}"), "[]0");
  const auto out = RenderSource("{{ nothing.attribute }}");
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(std::string(out.status().message()), HasSubstr("'nothing' is undefined"));
}

TEST(JinjaTemplateTest, StaysWithinItsBounds) {
  const auto loops = RenderSource("{% for i in range(2000000) %}{% endfor %}");
  EXPECT_EQ(loops.status().code(), absl::StatusCode::kResourceExhausted) << loops.status();
  const auto nested = RenderSource("{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(3) %}"
                                   "{% endfor %}{% endfor %}{% endfor %}");
  EXPECT_EQ(nested.status().code(), absl::StatusCode::kResourceExhausted) << nested.status();
  const auto big = RenderSource("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}");
  EXPECT_EQ(big.status().code(), absl::StatusCode::kResourceExhausted) << big.status();
  const auto doubling = RenderSource("{% set ns = namespace(s='x') %}{% for i in range(40) %}"
                                     "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}");
  EXPECT_EQ(doubling.status().code(), absl::StatusCode::kResourceExhausted) << doubling.status();
  const auto recursion = RenderSource("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
  EXPECT_EQ(recursion.status().code(), absl::StatusCode::kResourceExhausted) << recursion.status();
  const auto deep = Template::Parse(absl::StrCat("{{ ", std::string(500, '('), "1", std::string(500, ')'), " }}"));
  EXPECT_FALSE(deep.ok());
  const auto huge = Template::Parse(std::string(Template::kMaxSourceBytes + 1, 'x'));
  EXPECT_FALSE(huge.ok());
}

// Hostile templates: mutations of Qwen3's real template parse or fail with a status, and
// what parses renders or fails with a status, within the bounds (no crash, no hang).
TEST(JinjaTemplateTest, SurvivesMutatedTemplates) {
  std::ifstream in(std::string(MOE_SOURCE_DIR) + "/tests/data/chat_templates/qwen3-30b-a3b/tokenizer_config.json");
  std::stringstream s;
  s << in.rdbuf();
  const std::string good = nlohmann::json::parse(s.str())["chat_template"];
  const Value context = Value::FromJson(nlohmann::ordered_json::parse(
      R"({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                       {"role": "assistant", "content": "<think>r</think>a"}],
          "add_generation_prompt": true})"));
  std::mt19937 rng(5);
  const char kPieces[] = "{}%#-+()[]'\"|.:,=~ \n";
  int parsed = 0;
  for (int i = 0; i < 400; ++i) {
    std::string bad = good;
    for (int k = 0; k < 1 + static_cast<int>(rng() % 4); ++k) {
      const size_t at = rng() % bad.size();
      if (rng() % 2) {
        bad[at] = kPieces[rng() % (sizeof(kPieces) - 1)];
      } else {
        bad.erase(at, rng() % 12);
      }
    }
    const auto tmpl = Template::Parse(bad);
    if (!tmpl.ok()) continue;
    ++parsed;
    (void)(*tmpl)->Render(context);
  }
  EXPECT_GT(parsed, 0);
}

TEST(JinjaTemplateTest, FloatsPrintAsPythonRepr) {
  EXPECT_EQ(FloatRepr(0.1), "0.1");
  EXPECT_EQ(FloatRepr(1e16), "1e+16");
  EXPECT_EQ(FloatRepr(123456.0), "123456.0");
  EXPECT_EQ(FloatRepr(-2.5e-5), "-2.5e-05");
  EXPECT_EQ(FloatRepr(1.0 / 3), "0.3333333333333333");
}

}  // namespace
}  // namespace moe::jinja
