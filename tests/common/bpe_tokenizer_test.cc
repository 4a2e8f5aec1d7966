// Byte-level BPE from tokenizer.json against an independent implementation.
//
// tests/data/tokenizers/reference.json holds the token ids and decoded text of hard strings
// (Unicode, emoji, whitespace runs and exotic spaces, digits, CJK, special tokens inside
// text) as produced by Hugging Face tokenizers 0.23.2 -- the Rust library, through its npm
// binding -- from the four tokenizer.json layouts beside it (Qwen2/Qwen3, GPT-2/OLMoE,
// Llama-3/GPT-4, prefix space with single digits). tools/tokenizer_reference/
// make_tokenizer_testdata.mjs regenerates both.
#include "common/bpe_tokenizer.h"

#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <sstream>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace moe {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;

constexpr int64_t kVocab = 1024;  // the model side: above the 964 tokens of the test files

std::string DataPath(absl::string_view name) {
  return absl::StrCat(MOE_SOURCE_DIR, "/tests/data/tokenizers/", name);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

json Reference() { return json::parse(ReadFile(DataPath("reference.json"))); }

std::unique_ptr<BpeTokenizer> LoadVariant(const std::string& variant) {
  auto tok = BpeTokenizer::Load(DataPath(variant + "/tokenizer.json"), kVocab);
  EXPECT_TRUE(tok.ok()) << variant << ": " << tok.status();
  return tok.ok() ? *std::move(tok) : nullptr;
}

TEST(BpeTokenizerTest, ReferenceSaysWhichImplementationProducedIt) {
  EXPECT_THAT(Reference()["implementation"].get<std::string>(),
              HasSubstr("Hugging Face tokenizers"));
}

TEST(BpeTokenizerTest, EncodesHardStringsAsHuggingFaceDoes) {
  const json ref = Reference();
  ASSERT_GE(ref["encode"].size(), 80u);
  std::map<std::string, std::unique_ptr<BpeTokenizer>> tokenizers;
  for (const json& c : ref["encode"]) {
    const std::string variant = c["variant"];
    auto& tok = tokenizers[variant];
    if (tok == nullptr) tok = LoadVariant(variant);
    ASSERT_NE(tok, nullptr);
    const std::string text = c["text"];
    const auto ids = tok->Encode(text, /*parse_special=*/true, c["add_special_tokens"].get<bool>());
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, c["ids"].get<std::vector<int>>())
        << variant << " \"" << absl::CHexEscape(text) << "\"";
    const auto decoded = tok->Decode(*ids, /*skip_special=*/true);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(*decoded, c["decoded"].get<std::string>())
        << variant << " \"" << absl::CHexEscape(text) << "\"";
  }
  EXPECT_EQ(tokenizers.size(), 4u);
}

// Lone bytes of multi-byte characters, surrogates, bytes above U+10FFFF: each maximal
// ill-formed subsequence becomes one U+FFFD, as Hugging Face's decoder does.
TEST(BpeTokenizerTest, DecodesIllFormedUtf8AsHuggingFaceDoes) {
  const json ref = Reference();
  ASSERT_GE(ref["decode"].size(), 8u);
  std::map<std::string, std::unique_ptr<BpeTokenizer>> tokenizers;
  for (const json& c : ref["decode"]) {
    const std::string variant = c["variant"];
    auto& tok = tokenizers[variant];
    if (tok == nullptr) tok = LoadVariant(variant);
    ASSERT_NE(tok, nullptr);
    const auto ids = c["ids"].get<std::vector<int>>();
    const auto text = tok->Decode(ids, c["skip_special_tokens"].get<bool>());
    ASSERT_TRUE(text.ok()) << text.status();
    EXPECT_EQ(absl::CHexEscape(*text), absl::CHexEscape(c["text"].get<std::string>()))
        << variant << " " << c["ids"].dump();
  }
}

TEST(BpeTokenizerTest, SpecialTokensAreTextUnlessParsed) {
  auto tok = LoadVariant("qwen2");
  ASSERT_NE(tok, nullptr);
  const int im_end = *tok->TokenId("<|im_end|>");
  const int think = *tok->TokenId("<think>");
  const std::string text = "a<|im_end|>b<think>";
  const auto parsed = tok->Encode(text, /*parse_special=*/true, false);
  ASSERT_TRUE(parsed.ok());
  EXPECT_THAT(*parsed, ::testing::Contains(im_end));
  const auto plain = tok->Encode(text, /*parse_special=*/false, false);
  ASSERT_TRUE(plain.ok());
  EXPECT_THAT(*plain, ::testing::Not(::testing::Contains(im_end)));
  // Non-special added tokens are matched either way, as in Hugging Face.
  EXPECT_THAT(*plain, ::testing::Contains(think));
  EXPECT_EQ(*tok->Decode(*plain, /*skip_special=*/true), text);
  EXPECT_TRUE(tok->IsSpecial(im_end));
  EXPECT_FALSE(tok->IsSpecial(think));
}

TEST(BpeTokenizerTest, AddsThePostProcessorsLeadingTokensOnlyWhenAsked) {
  auto gpt4 = LoadVariant("gpt4");
  auto qwen = LoadVariant("qwen2");
  ASSERT_NE(gpt4, nullptr);
  ASSERT_NE(qwen, nullptr);
  EXPECT_EQ(gpt4->leading_special_ids(), std::vector<int>{*gpt4->TokenId("<|endoftext|>")});
  EXPECT_TRUE(qwen->leading_special_ids().empty());
  EXPECT_EQ(gpt4->Encode("x", false, true)->size(), 2u);
  EXPECT_EQ(gpt4->Encode("x", false, false)->size(), 1u);
}

TEST(BpeTokenizerTest, RejectsTextThatIsNotUtf8AndIdsOutsideTheVocabulary) {
  auto tok = LoadVariant("qwen2");
  ASSERT_NE(tok, nullptr);
  const auto bad_text = tok->Encode("ab\xC3(", true, false);
  ASSERT_FALSE(bad_text.ok());
  EXPECT_THAT(bad_text.status().message(), HasSubstr("offset 2"));
  const auto bad_id = tok->Decode({5, 5000}, true);
  ASSERT_FALSE(bad_id.ok());
  EXPECT_THAT(bad_id.status().message(), HasSubstr("5000"));
}

// A long run with no pre-tokenizer split is one BPE word: the merge loop must stay
// near-linear (a quadratic one would take minutes here) and agree with shorter runs.
TEST(BpeTokenizerTest, EncodesAVeryLongWord) {
  auto tok = LoadVariant("qwen2");
  ASSERT_NE(tok, nullptr);
  std::string word;
  for (int i = 0; i < 70000; ++i) word += "the";
  const auto ids = tok->Encode(word, false, false);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_LT(ids->size(), word.size() / 2);
  EXPECT_EQ(*tok->Decode(*ids, true), word);
}

// One malformed file per check: each error names the field and what is wrong with it.
struct Malformed {
  const char* name;
  std::function<void(json&)> edit;
  const char* expected;
};

class MalformedTokenizerTest : public ::testing::TestWithParam<Malformed> {};

TEST_P(MalformedTokenizerTest, IsRejectedWithAClearMessage) {
  json doc = json::parse(ReadFile(DataPath("qwen2/tokenizer.json")));
  GetParam().edit(doc);
  const auto tok = BpeTokenizer::FromJson(doc.dump(), "bad/tokenizer.json", kVocab);
  ASSERT_FALSE(tok.ok()) << GetParam().name;
  EXPECT_THAT(std::string(tok.status().message()), HasSubstr("bad/tokenizer.json"));
  EXPECT_THAT(std::string(tok.status().message()), HasSubstr(GetParam().expected));
}

INSTANTIATE_TEST_SUITE_P(
    Files, MalformedTokenizerTest,
    ::testing::Values(
        Malformed{"WordPiece", [](json& d) { d["model"]["type"] = "WordPiece"; }, "model.type"},
        Malformed{"IdOutOfRange", [](json& d) { d["model"]["vocab"]["zz"] = 5000; },
                  "token id 5000 is outside the model's vocabulary [0, 1024)"},
        Malformed{"NegativeId", [](json& d) { d["model"]["vocab"]["zz"] = -1; }, "token id -1"},
        Malformed{"DuplicateId", [](json& d) { d["model"]["vocab"]["zz"] = 7; }, "id 7 is given to both"},
        Malformed{"MergeOfUnknownToken",
                  [](json& d) { d["model"]["merges"][3] = "nosuch t"; },
                  "model.merges[3]: \"nosuch\" is not in the vocabulary"},
        Malformed{"MergeWithoutSpace", [](json& d) { d["model"]["merges"][0] = "ab"; },
                  "not two tokens separated by one space"},
        Malformed{"MergeOfThree", [](json& d) { d["model"]["merges"][0] = json::array({"a", "b", "c"}); },
                  "model.merges[0]: must be"},
        Malformed{"Metaspace",
                  [](json& d) { d["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "_"}}; },
                  "pre-tokenizer \"Metaspace\" is not supported"},
        Malformed{"RegexThatDoesNotCompile",
                  [](json& d) { d["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(\\p{L}"; },
                  "does not compile"},
        Malformed{"UnknownBehavior",
                  [](json& d) { d["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Sideways"; },
                  "unknown split behavior \"Sideways\""},
        Malformed{"NoPreTokenizer", [](json& d) { d.erase("pre_tokenizer"); }, "pre_tokenizer: missing"},
        Malformed{"ByteLevelNotLast",
                  [](json& d) {
                    auto& seq = d["pre_tokenizer"]["pretokenizers"];
                    std::swap(seq[0], seq[1]);
                  },
                  "must end with exactly one ByteLevel"},
        Malformed{"AddedTokenIdNotAnInteger", [](json& d) { d["added_tokens"][0]["id"] = "x"; },
                  "added_tokens[0].id: token id must be an integer"},
        Malformed{"AddedTokenClash", [](json& d) { d["added_tokens"][1]["id"] = 65; },
                  "id 65 is \"<|im_start|>\" here but \"A\" in the vocabulary"},
        Malformed{"ByteFallback", [](json& d) { d["model"]["byte_fallback"] = true; }, "byte_fallback"},
        Malformed{"Dropout", [](json& d) { d["model"]["dropout"] = 0.1; }, "model.dropout"},
        Malformed{"MissingByteSymbol", [](json& d) { d["model"]["vocab"].erase("A"); },
                  "lacks the byte-level symbol \"A\" for byte 65"},
        Malformed{"TokenTooLong",
                  [](json& d) { d["model"]["vocab"][std::string(5000, 'x')] = 1000; },
                  "token of 5000 bytes"},
        Malformed{"UnknownNormalizer", [](json& d) { d["normalizer"] = {{"type", "Lowercase"}}; },
                  "normalizer \"Lowercase\" is not supported"},
        Malformed{"WrongDecoder", [](json& d) { d["decoder"] = {{"type", "WordPiece"}}; },
                  "decoder \"WordPiece\" is not supported"},
        Malformed{"VocabNotAnObject", [](json& d) { d["model"]["vocab"] = json::array(); },
                  "model.vocab: must be an object"},
        Malformed{"PostProcessorUnknownToken",
                  [](json& d) {
                    d["post_processor"] = {{"type", "TemplateProcessing"},
                                           {"single", json::array({{{"SpecialToken", {{"id", "<nope>"}}}}})}};
                  },
                  "special token \"<nope>\" is not in the vocabulary"}),
    [](const ::testing::TestParamInfo<Malformed>& info) { return info.param.name; });

TEST(BpeTokenizerTest, RejectsAFileThatIsNotJson) {
  const auto tok = BpeTokenizer::FromJson("{\"model\": ", "cut/tokenizer.json", kVocab);
  ASSERT_FALSE(tok.ok());
  EXPECT_THAT(std::string(tok.status().message()), HasSubstr("cut/tokenizer.json"));
}

// Hostile files: a valid file with leaves replaced by odd values (wrong types, huge or
// negative numbers, bad regexes), or cut short, either loads or fails with a status, and
// what loads still encodes and decodes (a crash or hang fails the test).
TEST(BpeTokenizerTest, SurvivesMutatedFiles) {
  const json good = json::parse(ReadFile(DataPath("gpt4/tokenizer.json")));
  const json flat = good.flatten();
  std::vector<std::string> leaves;
  for (const auto& [pointer, value] : flat.items()) leaves.push_back(pointer);
  const std::vector<json> odd = {nullptr, true, false, 0, -1, 2147483648LL, 1e300, "", "x", "(", "\\p{L}+",
                                 "(?!)", "<|im_end|>", "Isolated"};
  std::mt19937 rng(17);
  int loaded = 0, rejected = 0;
  for (int i = 0; i < 400; ++i) {
    std::string text;
    if (i % 10 == 0) {
      text = good.dump();
      text.resize(rng() % text.size());
    } else {
      json mutated = good;
      for (int k = 0; k < 1 + static_cast<int>(rng() % 3); ++k) {
        mutated[json::json_pointer(leaves[rng() % leaves.size()])] = odd[rng() % odd.size()];
      }
      text = mutated.dump();
    }
    const auto tok = BpeTokenizer::FromJson(text, "mutated/tokenizer.json", kVocab);
    if (!tok.ok()) {
      ++rejected;
      EXPECT_FALSE(tok.status().message().empty());
      continue;
    }
    ++loaded;
    const auto ids = (*tok)->Encode("Hello <|im_end|> 123 w\xC3\xB6rld  ", true, true);
    if (!ids.ok()) continue;  // e.g. a regex that exceeds PCRE2's limits
    EXPECT_TRUE((*tok)->Decode(*ids, false).ok());
  }
  EXPECT_GT(loaded, 0);
  EXPECT_GT(rejected, 0);
}

TEST(BpeTokenizerTest, RejectsAVocabularyLargerThanTheModel) {
  const auto tok = BpeTokenizer::Load(DataPath("qwen2/tokenizer.json"), 500);
  ASSERT_FALSE(tok.ok());
  EXPECT_THAT(std::string(tok.status().message()), HasSubstr("vocab_size is 500"));
}

}  // namespace
}  // namespace moe
