// The tokenizer and chat template over the bundled model's sentencepiece model.
#include "common/tokenizer.h"

#include "common/chat_template.h"
#include "gtest/gtest.h"

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

}  // namespace
}  // namespace moe
