#include "coordinator/openai_json.h"

#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace moe::coordinator {
namespace {

using nlohmann::json;

TEST(ParseApiRequestTest, ChatRequestGetsMessagesAndTheDefaults) {
  auto parsed = ParseApiRequest(ApiEndpoint::kChatCompletions, R"({
      "model": "m", "messages": [{"role": "system", "content": "Be brief."},
                                 {"role": "user", "content": [{"type": "text", "text": "Hi "},
                                                              {"type": "text", "text": "there"}]}],
      "user": "ignored", "frequency_penalty": null})");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->model, "m");
  ASSERT_EQ(parsed->generate.messages_size(), 2);
  EXPECT_EQ(parsed->generate.messages(0).role(), "system");
  EXPECT_EQ(parsed->generate.messages(1).content(), "Hi there");
  EXPECT_TRUE(parsed->generate.prompt().empty());
  // Left out, so the service applies the shared defaults (generation_defaults.h).
  EXPECT_FALSE(parsed->generate.has_max_new_tokens());
  EXPECT_FALSE(parsed->generate.has_temperature());
  EXPECT_FALSE(parsed->generate.has_top_p());
  EXPECT_FALSE(parsed->stream);
}

TEST(ParseApiRequestTest, CompletionRequestTakesEveryField) {
  auto parsed = ParseApiRequest(ApiEndpoint::kCompletions, R"({
      "model": "m", "prompt": ["Once"], "max_completion_tokens": 7, "temperature": 0,
      "top_p": 0.5, "top_k": 3, "seed": 42, "stop": ["\n", "END"], "n": 1, "stream": true,
      "stream_options": {"include_usage": true}, "logprobs": false})");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const v1::GenerateRequest& g = parsed->generate;
  EXPECT_EQ(g.prompt(), "Once");
  EXPECT_EQ(g.max_new_tokens(), 7u);
  EXPECT_EQ(parsed->max_tokens_field, "max_completion_tokens");
  EXPECT_TRUE(g.has_temperature());  // 0 given is greedy, not "absent"
  EXPECT_EQ(g.temperature(), 0.0f);
  EXPECT_FLOAT_EQ(g.top_p(), 0.5f);
  EXPECT_EQ(g.top_k(), 3u);
  EXPECT_EQ(g.seed(), 42u);
  ASSERT_EQ(g.stop_size(), 2);
  EXPECT_EQ(g.stop(1), "END");
  EXPECT_TRUE(parsed->stream);
  EXPECT_TRUE(parsed->include_usage);
  auto one_stop = ParseApiRequest(ApiEndpoint::kCompletions, R"({"model": "m", "prompt": "a", "stop": "x"})");
  ASSERT_TRUE(one_stop.ok());
  EXPECT_EQ(one_stop->generate.stop_size(), 1);
}

TEST(ParseApiRequestTest, BadFieldsAreInvalidArgumentNamingTheField) {
  struct Case {
    ApiEndpoint endpoint;
    const char* body;
    const char* param;
  };
  const auto chat = ApiEndpoint::kChatCompletions;
  const auto completion = ApiEndpoint::kCompletions;
  const std::vector<Case> cases = {
      {chat, R"({"messages": [{"role": "user", "content": "x"}]})", "model"},
      {chat, R"({"model": 3, "messages": []})", "model"},
      {chat, R"({"model": "m"})", "messages"},
      {chat, R"({"model": "m", "messages": []})", "messages"},
      {chat, R"({"model": "m", "messages": ["hi"]})", "messages[0]"},
      {chat, R"({"model": "m", "messages": [{"content": "x"}]})", "messages[0].role"},
      {chat, R"({"model": "m", "messages": [{"role": "user"}]})", "messages[0].content"},
      {chat, R"({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]})",
       "messages[0].content"},
      {completion, R"({"model": "m"})", "prompt"},
      {completion, R"({"model": "m", "prompt": [1, 2]})", "prompt"},
      {completion, R"({"model": "m", "prompt": "a", "max_tokens": 0})", "max_tokens"},
      {completion, R"({"model": "m", "prompt": "a", "max_tokens": -5})", "max_tokens"},
      {completion, R"({"model": "m", "prompt": "a", "max_tokens": 1.5})", "max_tokens"},
      {completion, R"({"model": "m", "prompt": "a", "max_tokens": 99999999999})", "max_tokens"},
      {completion, R"({"model": "m", "prompt": "a", "max_completion_tokens": "9"})", "max_completion_tokens"},
      {completion, R"({"model": "m", "prompt": "a", "temperature": "hot"})", "temperature"},
      {completion, R"({"model": "m", "prompt": "a", "top_p": 0})", "top_p"},
      {completion, R"({"model": "m", "prompt": "a", "top_k": -1})", "top_k"},
      {completion, R"({"model": "m", "prompt": "a", "seed": -1})", "seed"},
      {completion, R"({"model": "m", "prompt": "a", "stop": 5})", "stop"},
      {completion, R"({"model": "m", "prompt": "a", "stop": ["a", "b", "c", "d", "e"]})", "stop"},
      {completion, R"({"model": "m", "prompt": "a", "stop": [""]})", "stop"},
      {completion, R"({"model": "m", "prompt": "a", "n": 2})", "n"},
      {completion, R"({"model": "m", "prompt": "a", "logprobs": 3})", "logprobs"},
      {completion, R"({"model": "m", "prompt": "a", "echo": true})", "echo"},
      {completion, R"({"model": "m", "prompt": "a", "stream": "yes"})", "stream"},
      {completion, R"({"model": "m", "prompt": "a", "stream_options": {"include_usage": true}})",
       "stream_options"},
      {completion, R"({"model": "m", "prompt": "a", "stream": true, "stream_options": {"include_usage": 1}})",
       "stream_options.include_usage"},
  };
  for (const Case& c : cases) {
    auto parsed = ParseApiRequest(c.endpoint, c.body);
    ASSERT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << c.body;
    EXPECT_EQ(ApiErrorParam(parsed.status()), c.param) << c.body << ": " << parsed.status();
    EXPECT_NE(parsed.status().message().find(c.param), absl::string_view::npos) << parsed.status();
    const ApiError error = ToApiError(parsed.status());
    EXPECT_EQ(error.http_status, 400);
    EXPECT_EQ(json::parse(error.body)["error"]["param"], c.param);
  }
}

TEST(ParseApiRequestTest, BodiesThatAreNotJsonObjectsAreRefused) {
  for (const char* body : {"", "not json", "[1]", "{\"model\": ", "[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]"}) {
    EXPECT_EQ(ParseApiRequest(ApiEndpoint::kCompletions, body).status().code(),
              absl::StatusCode::kInvalidArgument)
        << body;
  }
}

TEST(ToApiErrorTest, StatusCodesMapToOpenAisHttpStatusesAndShape) {
  EXPECT_EQ(ToApiError(absl::UnauthenticatedError("k")).http_status, 401);
  EXPECT_EQ(ToApiError(absl::NotFoundError("m")).http_status, 404);
  EXPECT_EQ(ToApiError(absl::ResourceExhaustedError("q")).http_status, 429);
  EXPECT_EQ(ToApiError(absl::UnavailableError("w")).http_status, 503);
  EXPECT_EQ(ToApiError(absl::DeadlineExceededError("d")).http_status, 504);
  EXPECT_EQ(ToApiError(absl::InternalError("i")).http_status, 500);
  const json body = json::parse(ToApiError(absl::ResourceExhaustedError("queue full")).body);
  EXPECT_EQ(body["error"]["message"], "queue full");
  EXPECT_EQ(body["error"]["type"], "rate_limit_error");
  EXPECT_TRUE(body["error"]["param"].is_null());
  const json model = json::parse(
      ToApiError(WithApiErrorParam(absl::NotFoundError("no such model"), "model")).body);
  EXPECT_EQ(model["error"]["code"], "model_not_found");
}

v1::GenerateResponse Piece(const std::string& text) {
  v1::GenerateResponse r;
  r.set_text(text);
  return r;
}

v1::GenerateResponse Last(v1::FinishReason reason) {
  v1::GenerateResponse r;
  r.set_finish_reason(reason);
  r.mutable_stats()->set_prompt_tokens(5);
  r.mutable_stats()->set_generated_tokens(3);
  r.mutable_stats()->set_expert_cache_hits(3);
  r.mutable_stats()->set_expert_cache_misses(1);
  r.mutable_stats()->set_decode_tokens_per_s(12.5);
  return r;
}

// The JSON of each "data:" event; "[DONE]" as a string.
std::vector<json> Events(const std::string& sse) {
  std::vector<json> out;
  for (absl::string_view event : absl::StrSplit(sse, "\n\n", absl::SkipEmpty())) {
    EXPECT_TRUE(absl::ConsumePrefix(&event, "data: ")) << event;
    out.push_back(event == "[DONE]" ? json("[DONE]") : json::parse(event));
  }
  return out;
}

TEST(ApiResponderTest, ChatStreamSendsRoleTextFinishUsageAndDone) {
  ApiResponder responder(ApiEndpoint::kChatCompletions, "m", /*include_usage=*/true);
  std::vector<json> events = Events(responder.StreamEvents(Piece("Hel")));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0]["object"], "chat.completion.chunk");
  EXPECT_EQ(events[0]["model"], "m");
  EXPECT_EQ(events[0]["id"], responder.id());
  EXPECT_EQ(events[0]["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(events[0]["choices"][0]["delta"]["content"], "Hel");
  EXPECT_TRUE(responder.StreamEvents(Piece("")).empty());  // an incomplete character
  events = Events(responder.StreamEvents(Piece("lo")));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_FALSE(events[0]["choices"][0]["delta"].contains("role"));
  events = Events(responder.StreamEvents(Last(v1::FINISH_REASON_EOS)));
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0]["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(events[0]["moe_stats"]["expert_cache_hit_ratio"], 0.75);
  EXPECT_EQ(events[0]["moe_stats"]["decode_tokens_per_s"], 12.5);
  EXPECT_TRUE(events[1]["choices"].empty());
  EXPECT_EQ(events[1]["usage"]["prompt_tokens"], 5);
  EXPECT_EQ(events[1]["usage"]["completion_tokens"], 3);
  EXPECT_EQ(events[1]["usage"]["total_tokens"], 8);
  EXPECT_EQ(events[2], "[DONE]");
}

TEST(ApiResponderTest, CompletionStreamWithoutUsageEndsWithLength) {
  ApiResponder responder(ApiEndpoint::kCompletions, "m", /*include_usage=*/false);
  std::vector<json> events = Events(responder.StreamEvents(Piece("a")));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0]["object"], "text_completion");
  EXPECT_EQ(events[0]["choices"][0]["text"], "a");
  events = Events(responder.StreamEvents(Last(v1::FINISH_REASON_LENGTH)));
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0]["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(events[1], "[DONE]");
  events = Events(ApiResponder::StreamError(absl::UnavailableError("worker gone")));
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0]["error"]["message"], "worker gone");
}

TEST(ApiResponderTest, NonStreamedRepliesCarryTextUsageAndFinishReason) {
  const std::vector<v1::GenerateResponse> responses = {Piece("Hel"), Piece("lo"),
                                                       Last(v1::FINISH_REASON_STOP_STRING)};
  const json chat = json::parse(ApiResponder(ApiEndpoint::kChatCompletions, "m", false).Complete(responses));
  EXPECT_EQ(chat["object"], "chat.completion");
  EXPECT_EQ(chat["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(chat["choices"][0]["message"]["content"], "Hello");
  EXPECT_EQ(chat["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(chat["usage"]["total_tokens"], 8);
  const json text = json::parse(ApiResponder(ApiEndpoint::kCompletions, "m", false).Complete(responses));
  EXPECT_EQ(text["object"], "text_completion");
  EXPECT_EQ(text["choices"][0]["text"], "Hello");
  EXPECT_EQ(json::parse(ModelsJson("m", 1))["data"][0]["id"], "m");
}

}  // namespace
}  // namespace moe::coordinator
