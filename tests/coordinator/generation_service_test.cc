// The Generation service over a real gRPC channel (in-process server on a unix socket),
// with the bundled model and the experts linked in.
#include "coordinator/generation_service.h"

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/chat_template.h"
#include "coordinator/generation_defaults.h"
#include "coordinator/kv_cache.h"
#include "gtest/gtest.h"
#include "tools/cli/local_engine.h"

namespace moe::coordinator {
namespace {

class GenerationServiceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto engine = LocalEngine::Open(std::string(MOE_SOURCE_DIR) + "/models/kjv-moe");
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = engine->release();
    auto tokenizer = engine_->dir().LoadTokenizer();
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = tokenizer->release();
    service_ = new GenerationService(&engine_->model(), tokenizer_, GenerationServiceOptions{});
    address_ = absl::StrCat("unix:", ::testing::TempDir(), "/gen-", ::getpid(), ".sock");
    grpc::ServerBuilder builder;
    builder.AddListeningPort(address_, grpc::InsecureServerCredentials());
    builder.RegisterService(service_);
    server_ = builder.BuildAndStart().release();
    ASSERT_NE(server_, nullptr);
  }
  static void TearDownTestSuite() {
    server_->Shutdown();
    delete server_;
    delete service_;
    delete tokenizer_;
    delete engine_;
  }

  // Streams a request; returns the concatenated text and the last response.
  grpc::Status Run(const v1::GenerateRequest& request, std::string* text,
                   v1::GenerateResponse* last = nullptr) {
    auto stub = v1::Generation::NewStub(grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
    grpc::ClientContext context;
    auto reader = stub->Generate(&context, request);
    v1::GenerateResponse response;
    while (reader->Read(&response)) {
      *text += response.text();
      if (last != nullptr) *last = response;
    }
    return reader->Finish();
  }

  // Greedy text from the generator directly, for comparison.
  std::string DirectGreedy(const std::string& prompt, int n) {
    auto ids = tokenizer_->Encode(prompt, true);
    GenerateOptions options;
    options.max_new_tokens = n;
    auto result = Generate(engine_->model(), *ids, options, nullptr);
    EXPECT_TRUE(result.ok());
    std::vector<int> all = *ids;
    for (int t : result->tokens) if (t != tokenizer_->eos_id()) all.push_back(t);
    return tokenizer_->Decode(all)->substr(tokenizer_->Decode(*ids)->size());
  }

  static inline LocalEngine* engine_;
  static inline Tokenizer* tokenizer_;
  static inline GenerationService* service_;
  static inline grpc::Server* server_;
  static inline std::string address_;
};

TEST_F(GenerationServiceTest, GreedyStreamEqualsDirectGeneration) {
  v1::GenerateRequest request;
  request.set_prompt("In the beginning");
  request.set_max_new_tokens(24);
  request.set_temperature(0);
  std::string text;
  v1::GenerateResponse last;
  ASSERT_TRUE(Run(request, &text, &last).ok());
  EXPECT_EQ(text, DirectGreedy("In the beginning", 24));
  EXPECT_NE(last.finish_reason(), v1::FINISH_REASON_UNSPECIFIED);
  EXPECT_EQ(last.stats().generated_tokens() > 0, true);
  EXPECT_GT(last.stats().decode_tokens_per_s(), 0);
}

TEST_F(GenerationServiceTest, StopStringEndsTheStreamBeforeIt) {
  const std::string full = DirectGreedy("And the LORD said unto Moses,", 32);
  ASSERT_GT(full.size(), 12u);
  const std::string stop = full.substr(8, 4);  // a string the model will produce
  v1::GenerateRequest request;
  request.set_prompt("And the LORD said unto Moses,");
  request.set_max_new_tokens(32);
  request.set_temperature(0);
  request.add_stop(stop);
  std::string text;
  v1::GenerateResponse last;
  ASSERT_TRUE(Run(request, &text, &last).ok());
  EXPECT_EQ(last.finish_reason(), v1::FINISH_REASON_STOP_STRING);
  EXPECT_EQ(text, full.substr(0, full.find(stop)));
}

TEST_F(GenerationServiceTest, SameSeedSameSampledText) {
  v1::GenerateRequest request;
  request.set_prompt("Blessed are the");
  request.set_max_new_tokens(16);
  request.set_temperature(0.9f);
  request.set_seed(7);
  std::string a, b;
  ASSERT_TRUE(Run(request, &a).ok());
  ASSERT_TRUE(Run(request, &b).ok());
  EXPECT_EQ(a, b);
}

TEST_F(GenerationServiceTest, AbsentFieldsTakeTheSharedDefaults) {
  v1::GenerateRequest bare;
  bare.set_prompt("Blessed are the");
  bare.set_seed(11);
  v1::GenerateRequest spelled = bare;
  spelled.set_max_new_tokens(kGenerationDefaults.max_new_tokens);
  spelled.set_temperature(kGenerationDefaults.temperature);
  spelled.set_top_p(kGenerationDefaults.top_p);
  spelled.set_top_k(kGenerationDefaults.top_k);
  std::string a, b;
  v1::GenerateResponse last_a, last_b;
  ASSERT_TRUE(Run(bare, &a, &last_a).ok());
  ASSERT_TRUE(Run(spelled, &b, &last_b).ok());
  EXPECT_EQ(a, b);
  EXPECT_EQ(last_a.stats().generated_tokens(), last_b.stats().generated_tokens());
  EXPECT_LE(last_a.stats().generated_tokens(), kGenerationDefaults.max_new_tokens);
  // And the defaults sample: a greedy run of the same request differs.
  v1::GenerateRequest greedy = bare;
  greedy.set_temperature(0);
  std::string g;
  ASSERT_TRUE(Run(greedy, &g).ok());
  EXPECT_NE(a, g);
}

TEST_F(GenerationServiceTest, BadRequestsAreInvalidArgumentWithTheReason) {
  const int64_t context = engine_->config().max_position_embeddings;
  struct Case {
    std::function<void(v1::GenerateRequest*)> make;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {[](auto* r) { r->set_max_new_tokens(4); }, "prompt is empty"},
      {[](auto* r) { r->set_prompt("hi"); r->set_max_new_tokens(0); }, "max_new_tokens must be at least 1"},
      {[&](auto* r) { r->set_prompt("hi"); r->set_max_new_tokens(context); }, "context"},
      {[&](auto* r) {
         std::string long_prompt;
         for (int i = 0; i < context; ++i) long_prompt += " And";
         r->set_prompt(long_prompt);
         r->set_max_new_tokens(1);
       }, "the prompt has"},
      {[](auto* r) {
         auto* m = r->add_messages();
         m->set_role("wizard");
         m->set_content("hi");
         r->set_max_new_tokens(4);
       }, "unknown chat role"},
      {[](auto* r) { r->set_prompt("hi"); r->add_messages()->set_role("user"); r->set_max_new_tokens(4); },
       "not both"},
      {[](auto* r) { r->set_prompt("hi"); r->set_max_new_tokens(4); r->set_top_p(1.5f); }, "top_p"},
  };
  for (const Case& c : cases) {
    v1::GenerateRequest request;
    c.make(&request);
    std::string text;
    const grpc::Status status = Run(request, &text);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.expected;
    EXPECT_NE(status.error_message().find(c.expected), std::string::npos)
        << status.error_message() << " lacks " << c.expected;
  }
}

TEST_F(GenerationServiceTest, ChatRequestUsesTheTemplate) {
  v1::GenerateRequest request;
  auto* m = request.add_messages();
  m->set_role("user");
  m->set_content("Who made the heaven?");
  request.set_max_new_tokens(8);
  std::string text;
  v1::GenerateResponse last;
  ASSERT_TRUE(Run(request, &text, &last).ok());
  const std::vector<ChatMessage> chat = {{"user", "Who made the heaven?"}};
  EXPECT_EQ(last.stats().prompt_tokens(), RenderChat(*tokenizer_, chat)->size());
}

TEST_F(GenerationServiceTest, TokenizeAndModelInfoAnswer) {
  auto stub = v1::Generation::NewStub(grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
  grpc::ClientContext c1, c2;
  v1::TokenizeRequest tr;
  tr.set_text("In the beginning");
  tr.set_add_bos(true);
  v1::TokenizeResponse tokens;
  ASSERT_TRUE(stub->Tokenize(&c1, tr, &tokens).ok());
  EXPECT_EQ(tokens.token_ids(0), 1u);
  v1::ModelInfo info;
  ASSERT_TRUE(stub->GetModelInfo(&c2, v1::GetModelInfoRequest(), &info).ok());
  EXPECT_EQ(info.num_experts(), engine_->config().num_local_experts);
  EXPECT_EQ(info.vocab_size(), engine_->config().vocab_size);
}

// Polls KvCache::LiveCaches() until it is 0 (the server's handler may still be unwinding
// when the client has its status).
bool KvCachesFreed() {
  for (int i = 0; i < 200 && KvCache::LiveCaches() != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return KvCache::LiveCaches() == 0 && KvCache::LiveBytes() == 0;
}

v1::GenerateRequest LongRequest() {
  v1::GenerateRequest request;
  request.set_prompt("In the beginning");
  request.set_max_new_tokens(1000);  // seconds of work: it never ends by itself here
  request.set_temperature(0);        // greedy, as measured: no early end-of-sequence
  return request;
}

TEST_F(GenerationServiceTest, CancelledAndTimedOutStreamsFreeTheirKvCache) {
  auto stub = v1::Generation::NewStub(grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
  {
    grpc::ClientContext context;
    auto reader = stub->Generate(&context, LongRequest());
    v1::GenerateResponse response;
    ASSERT_TRUE(reader->Read(&response));
    EXPECT_EQ(KvCache::LiveCaches(), 1);
    EXPECT_GT(KvCache::LiveBytes(), 0);
    context.TryCancel();
    while (reader->Read(&response)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
    EXPECT_TRUE(KvCachesFreed()) << KvCache::LiveCaches() << " caches still live";
  }
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(50));
    auto reader = stub->Generate(&context, LongRequest());
    v1::GenerateResponse response;
    while (reader->Read(&response)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
    EXPECT_TRUE(KvCachesFreed()) << KvCache::LiveCaches() << " caches still live";
  }
}

TEST_F(GenerationServiceTest, ShutdownRefusesNewRequestsAndEndsInFlightOnesWithUnavailable) {
  // A service of its own: the shared one must keep serving.
  GenerationService service(&engine_->model(), tokenizer_, GenerationServiceOptions{});
  const std::string address = absl::StrCat(address_, ".drain");
  grpc::ServerBuilder builder;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials());
  builder.RegisterService(&service);
  auto server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  auto stub = v1::Generation::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));

  grpc::ClientContext in_flight;
  auto reader = stub->Generate(&in_flight, LongRequest());
  v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));
  service.BeginShutdown(absl::Now() + absl::Milliseconds(100));

  grpc::ClientContext late;
  v1::GenerateRequest small;
  small.set_prompt("In the beginning");
  small.set_max_new_tokens(4);
  auto refused = stub->Generate(&late, small);
  while (refused->Read(&response)) {
  }
  const grpc::Status refused_status = refused->Finish();
  EXPECT_EQ(refused_status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(refused_status.error_message().find("shutting down"), std::string::npos);

  int more = 0;
  while (reader->Read(&response)) ++more;
  const grpc::Status status = reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_NE(status.error_message().find("shut down before this generation finished"),
            std::string::npos);
  EXPECT_LT(more, 999);
  EXPECT_TRUE(KvCachesFreed());
  server->Shutdown();
}

}  // namespace
}  // namespace moe::coordinator
