// The tokenizer and chat template over the bundled model's sentencepiece model, and
// tokenizers loaded from model directories (SentencePiece or tokenizer.json, with the
// model's chat template or its family's).
#include "common/tokenizer.h"

#include <filesystem>
#include <fstream>

#include "common/chat_template.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace moe {
namespace {

class TokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto t = Tokenizer::Load(std::string(MOE_SOURCE_DIR) + "/models/kjv-moe/tokenizer.model", 2000);
    ASSERT_TRUE(t.ok()) << t.status();
    tokenizer_ = *std::move(t);
  }
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(TokenizerTest, EncodeDecodeRoundTripsWithBos) {
  const std::string text = "In the beginning God created the heaven and the earth.";
  auto ids = tokenizer_->Encode(text, /*add_bos=*/true);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ((*ids)[0], 1);
  EXPECT_EQ(tokenizer_->bos_id(), 1);
  EXPECT_EQ(tokenizer_->eos_id(), 2);
  EXPECT_EQ(*tokenizer_->Decode(*ids), text);
}

TEST_F(TokenizerTest, DecodeRejectsIdsOutsideTheVocabulary) {
  const auto bad = tokenizer_->Decode({5, 99999});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("99999"), absl::string_view::npos);
}

TEST_F(TokenizerTest, LoadRejectsATokenizerLargerThanTheModel) {
  auto t = Tokenizer::Load(std::string(MOE_SOURCE_DIR) + "/models/kjv-moe/tokenizer.model", 100);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("vocab_size"), absl::string_view::npos);
}

TEST_F(TokenizerTest, LoadRejectsAFileThatIsNotAModel) {
  auto t = Tokenizer::Load(std::string(MOE_SOURCE_DIR) + "/models/kjv-moe/config.json", 2000);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("config.json"), absl::string_view::npos);
}

// Streaming pieces concatenate to the full decode, spaces and multi-byte text included.
TEST_F(TokenizerTest, StreamingDecoderReproducesFullDecode) {
  const std::string prompt = "And God said,";
  const std::string continuation = " Let there be light: and there was light. \xC3\xA9\xE2\x82\xAC caf\xC3\xA9";
  auto prompt_ids = *tokenizer_->Encode(prompt, true);
  auto all_ids = *tokenizer_->Encode(prompt + continuation, true);
  ASSERT_TRUE(std::equal(prompt_ids.begin(), prompt_ids.end() - 1, all_ids.begin()));
  // Continue from wherever the joint encoding diverges from the prompt's.
  size_t common = 0;
  while (common < prompt_ids.size() && prompt_ids[common] == all_ids[common]) ++common;
  StreamingDecoder decoder(*tokenizer_, absl::MakeConstSpan(all_ids).first(common));
  std::string streamed;
  for (size_t i = common; i < all_ids.size(); ++i) streamed += *decoder.Push(all_ids[i]);
  streamed += *decoder.Flush();
  const std::string head = *tokenizer_->Decode(absl::MakeConstSpan(all_ids).first(common));
  EXPECT_EQ(head + streamed, prompt + continuation);
}

TEST_F(TokenizerTest, ChatTemplateWrapsTurnsInInstTags) {
  const std::vector<ChatMessage> chat = {
      {"user", "Who made the earth?"}, {"assistant", "God."}, {"user", "When?"}};
  auto ids = RenderChat(*tokenizer_, chat);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ((*ids)[0], tokenizer_->bos_id());
  EXPECT_EQ(*tokenizer_->Decode(*ids),
            "[INST] Who made the earth? [/INST] God. [INST] When? [/INST]");
  // The assistant turn ends with EOS.
  const auto eos = std::find(ids->begin(), ids->end(), tokenizer_->eos_id());
  ASSERT_NE(eos, ids->end());
  EXPECT_EQ(*tokenizer_->Decode(std::vector<int>(ids->begin(), eos)),
            "[INST] Who made the earth? [/INST] God.");
}

TEST_F(TokenizerTest, ChatTemplateFoldsSystemIntoFirstUserTurn) {
  const std::vector<ChatMessage> chat = {{"system", "Be brief."}, {"user", "Hi"}};
  auto ids = RenderChat(*tokenizer_, chat);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*tokenizer_->Decode(*ids), "[INST] Be brief.\n\nHi [/INST]");
}

TEST_F(TokenizerTest, ChatTemplateRejectsUnknownRolesAndBadOrder) {
  using Chat = std::vector<ChatMessage>;
  auto unknown = RenderChat(*tokenizer_, Chat{{"wizard", "abracadabra"}});
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("wizard"), absl::string_view::npos);
  EXPECT_FALSE(RenderChat(*tokenizer_, Chat{{"assistant", "hi"}}).ok());
  EXPECT_FALSE(RenderChat(*tokenizer_, Chat{{"user", "a"}, {"user", "b"}}).ok());
  EXPECT_FALSE(RenderChat(*tokenizer_, Chat{{"user", "a"}, {"assistant", "b"}}).ok());
  EXPECT_FALSE(RenderChat(*tokenizer_, Chat{}).ok());
}

namespace fs = std::filesystem;

std::string Source(const std::string& relative) { return std::string(MOE_SOURCE_DIR) + "/" + relative; }

// A model directory holding `files` (source path -> name in the directory).
void Populate(const fs::path& dir, const std::vector<std::pair<std::string, std::string>>& files) {
  for (const auto& [from, name] : files) fs::copy_file(Source(from), dir / name);
}

ModelConfig Config(int64_t vocab_size, const std::string& model_type) {
  ModelConfig c;
  c.vocab_size = vocab_size;
  c.model_type = model_type;
  return c;
}

constexpr char kKjvModel[] = "models/kjv-moe/tokenizer.model";
constexpr char kQwenJson[] = "tests/data/tokenizers/qwen2/tokenizer.json";

TEST(TokenizerDirectoryTest, PrefersTheSentencePieceModelOverTokenizerJson) {
  testing_util::ScopedTempDir dir;
  EXPECT_EQ(Tokenizer::FindTokenizerFile(dir.path().string()), "");
  Populate(dir.path(), {{kQwenJson, "tokenizer.json"}});
  EXPECT_EQ(Tokenizer::FindTokenizerFile(dir.path().string()), (dir.path() / "tokenizer.json").string());
  Populate(dir.path(), {{kKjvModel, "tokenizer.model"}});
  EXPECT_EQ(Tokenizer::FindTokenizerFile(dir.path().string()), (dir.path() / "tokenizer.model").string());
  const auto none = Tokenizer::LoadFromDirectory("/nonexistent-model-dir", Config(2000, "mixtral"));
  EXPECT_EQ(none.status().code(), absl::StatusCode::kFailedPrecondition);
}

// Mixtral's own template (the revision with a system message), tokenized with special
// tokens parsed, gives the ids of the built-in format: what mistral-common produces.
TEST(TokenizerDirectoryTest, MixtralsTemplateGivesTheBuiltInFormatsIds) {
  testing_util::ScopedTempDir dir;
  Populate(dir.path(), {{kKjvModel, "tokenizer.model"},
                        {"tests/data/chat_templates/mixtral-8x7b-instruct-v0.1/tokenizer_config.json",
                         "tokenizer_config.json"}});
  auto with_template = Tokenizer::LoadFromDirectory(dir.path().string(), Config(2000, "mixtral"));
  ASSERT_TRUE(with_template.ok()) << with_template.status();
  ASSERT_NE((*with_template)->chat_template(), nullptr);
  auto built_in = Tokenizer::Load(Source(kKjvModel), 2000);
  ASSERT_TRUE(built_in.ok());
  ASSERT_EQ((*built_in)->chat_template(), nullptr);
  for (const std::vector<ChatMessage>& chat :
       {std::vector<ChatMessage>{{"user", "Who made the earth?"}, {"assistant", "God."}, {"user", "When?"}},
        std::vector<ChatMessage>{{"system", "Be brief."}, {"user", "Hi there"}}}) {
    const auto a = RenderChat(**with_template, chat);
    const auto b = RenderChat(**built_in, chat);
    ASSERT_TRUE(a.ok() && b.ok()) << a.status() << " " << b.status();
    EXPECT_EQ(*a, *b);
  }
  // The template's own error reaches the caller.
  const auto bad = RenderChat(**with_template, std::vector<ChatMessage>{{"user", "a"}, {"user", "b"}});
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), ::testing::HasSubstr("must alternate"));
}

TEST(TokenizerDirectoryTest, SentencePieceParsesControlPiecesOnlyWhenAsked) {
  auto tok = Tokenizer::Load(Source(kKjvModel), 2000);
  ASSERT_TRUE(tok.ok());
  const auto parsed = (*tok)->Encode("<s> light</s>", false, /*parse_special=*/true);
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->front(), (*tok)->bos_id());
  EXPECT_EQ(parsed->back(), (*tok)->eos_id());
  EXPECT_EQ(*(*tok)->Decode(*parsed), "light");
  const auto plain = (*tok)->Encode("<s> light</s>", false);
  ASSERT_TRUE(plain.ok());
  EXPECT_THAT(*plain, ::testing::Not(::testing::Contains((*tok)->bos_id())));
}

TEST(TokenizerDirectoryTest, QwenDirectoryChatsInChatMlWithSpecialTokenIds) {
  testing_util::ScopedTempDir dir;
  Populate(dir.path(), {{kQwenJson, "tokenizer.json"},
                        {"tests/data/chat_templates/qwen3-30b-a3b/tokenizer_config.json", "tokenizer_config.json"}});
  auto tok = Tokenizer::LoadFromDirectory(dir.path().string(), Config(1024, "qwen3_moe"));
  ASSERT_TRUE(tok.ok()) << tok.status();
  ASSERT_NE((*tok)->chat_template(), nullptr);
  EXPECT_EQ((*tok)->bos_id(), -1);  // bos_token is null: nothing is prepended
  const std::vector<ChatMessage> chat = {{"user", "Who made the earth?"}, {"assistant", "God."}, {"user", "When?"}};
  const auto ids = RenderChat(**tok, chat);
  ASSERT_TRUE(ids.ok()) << ids.status();
  const int im_start = *(*tok)->Encode("<|im_start|>", false, true)->begin();
  EXPECT_EQ((*tok)->eos_id(), *(*tok)->Encode("<|im_end|>", false, true)->begin());
  EXPECT_EQ(std::count(ids->begin(), ids->end(), im_start), 4);
  EXPECT_EQ(std::count(ids->begin(), ids->end(), (*tok)->eos_id()), 3);
  EXPECT_EQ(ids->front(), im_start);
  EXPECT_EQ(*(*tok)->Decode(*ids), "user\nWho made the earth?\nassistant\nGod.\nuser\nWhen?\nassistant\n");
}

TEST(TokenizerDirectoryTest, UnsupportedTemplateFallsBackToTheFamilyFormat) {
  testing_util::ScopedTempDir dir;
  Populate(dir.path(), {{kQwenJson, "tokenizer.json"}});
  std::ofstream(dir.path() / "tokenizer_config.json")
      << R"({"eos_token": "<|im_end|>", "chat_template": "{% include 'chatml.jinja' %}"})";
  auto tok = Tokenizer::LoadFromDirectory(dir.path().string(), Config(1024, "qwen3_moe"));
  ASSERT_TRUE(tok.ok()) << tok.status();
  ASSERT_NE((*tok)->chat_template(), nullptr);
  const std::vector<ChatMessage> chat = {{"user", "Hi"}};
  EXPECT_EQ(*(*tok)->chat_template()->Render(chat, true), "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  // Mixtral's family has no template source: the built-in format.
  testing_util::ScopedTempDir sp_dir;
  Populate(sp_dir.path(), {{kKjvModel, "tokenizer.model"}});
  std::ofstream(sp_dir.path() / "tokenizer_config.json") << R"({"chat_template": "{% include 'x' %}"})";
  auto sp = Tokenizer::LoadFromDirectory(sp_dir.path().string(), Config(2000, "mixtral"));
  ASSERT_TRUE(sp.ok()) << sp.status();
  EXPECT_EQ((*sp)->chat_template(), nullptr);
}

TEST(TokenizerDirectoryTest, TokenizerConfigNamingAnUnknownTokenIsAnError) {
  testing_util::ScopedTempDir dir;
  Populate(dir.path(), {{kQwenJson, "tokenizer.json"}});
  std::ofstream(dir.path() / "tokenizer_config.json") << R"({"eos_token": "<|no_such_token|>"})";
  const auto tok = Tokenizer::LoadFromDirectory(dir.path().string(), Config(1024, "qwen3_moe"));
  ASSERT_FALSE(tok.ok());
  EXPECT_THAT(std::string(tok.status().message()), ::testing::HasSubstr("tokenizer_config.json: eos_token"));
}

// Byte-level tokens split characters: pieces are held back until complete.
TEST(TokenizerDirectoryTest, StreamingDecoderReassemblesByteLevelCharacters) {
  auto tok = Tokenizer::Load(Source(kQwenJson), 1024);
  ASSERT_TRUE(tok.ok());
  // (Not "café": the test tokenizer has it as an added token, which decodes as HF does.)
  const std::string text = "And God said 太初有道 😀👍🏽 naïve.";
  const auto ids = (*tok)->Encode(text, false);
  ASSERT_TRUE(ids.ok());
  StreamingDecoder decoder(**tok, {});
  std::string streamed;
  for (int id : *ids) {
    const auto piece = decoder.Push(id);
    ASSERT_TRUE(piece.ok());
    EXPECT_EQ(piece->find("\xEF\xBF\xBD"), std::string::npos) << "a cut character was emitted";
    streamed += *piece;
  }
  streamed += *decoder.Flush();
  EXPECT_EQ(streamed, text);
}

}  // namespace
}  // namespace moe
