// The HTTP API over real sockets (cpp-httplib client), with the bundled model and the
// experts linked in.
#include "coordinator/http_api.h"

#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/http_server.h"
#include "coordinator/kv_cache.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tools/cli/local_engine.h"

namespace moe::coordinator {
namespace {

using nlohmann::json;

constexpr char kModel[] = "kjv-moe";
constexpr char kPrompt[] = "In the beginning";

// One service and its HTTP server on a free loopback port.
struct Served {
  std::unique_ptr<GenerationService> service;
  std::unique_ptr<HttpServer> server;
  int port() const { return server->port(); }
};

class HttpApiTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto engine = LocalEngine::Open(std::string(MOE_SOURCE_DIR) + "/models/kjv-moe");
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = engine->release();
    auto tokenizer = engine_->dir().LoadTokenizer();
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = tokenizer->release();
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    delete engine_;
  }

  static Served Serve(GenerationServiceOptions service_options = {}, HttpApiOptions api = {}) {
    Served s;
    s.service = std::make_unique<GenerationService>(&engine_->model(), tokenizer_, service_options);
    auto server = HttpServer::Bind("127.0.0.1:0", {.threads = 6});
    EXPECT_TRUE(server.ok()) << server.status();
    s.server = *std::move(server);
    api.model_id = kModel;
    GenerationService* service = s.service.get();
    api.metrics = [service] { return service->RenderMetrics(); };
    s.server->Serve([&](httplib::Server& http) { AddHttpApi(http, service, api); });
    return s;
  }

  static json Body(const httplib::Result& reply) {
    EXPECT_TRUE(reply) << httplib::to_string(reply.error());
    return reply ? json::parse(reply->body, nullptr, false) : json();
  }

  // Greedy text from the generator directly, for comparison.
  static std::string DirectGreedy(const std::string& prompt, int n) {
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
};

// Polls until every KV cache is freed (a handler may still be unwinding).
bool KvCachesFreed() {
  for (int i = 0; i < 200 && KvCache::LiveCaches() != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return KvCache::LiveCaches() == 0;
}

// Whether the service's metrics come to hold `line` within 2 s: a request's outcome is
// counted by its handler after the step thread has freed its KV cache, so a test that saw
// the cache go must wait for the count.
bool MetricsSoonContain(const GenerationService& service, absl::string_view line) {
  for (int i = 0; i < 200 && !absl::StrContains(service.RenderMetrics(), line); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return absl::StrContains(service.RenderMetrics(), line);
}

// A streamed request on a raw socket, read until its first event; the caller closes it.
int OpenStream(int port, const std::string& body) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return -1;
  const std::string request =
      absl::StrCat("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n",
                   "Content-Length: ", body.size(), "\r\n\r\n", body);
  ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string got;
  char buffer[512];
  while (!absl::StrContains(got, "data: ")) {
    const ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
    if (n <= 0) break;
    got.append(buffer, size_t(n));
  }
  EXPECT_TRUE(absl::StrContains(got, "200 OK")) << got;
  return fd;
}

TEST_F(HttpApiTest, GreedyCompletionEqualsTheGeneratorsText) {
  Served s = Serve();
  httplib::Client client("127.0.0.1", s.port());
  const json body = Body(client.Post(
      "/v1/completions",
      json{{"model", kModel}, {"prompt", kPrompt}, {"max_tokens", 12}, {"temperature", 0}}.dump(),
      "application/json"));
  EXPECT_EQ(body["choices"][0]["text"], DirectGreedy(kPrompt, 12)) << body;
  EXPECT_EQ(body["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(body["usage"]["completion_tokens"], 12);
  EXPECT_GT(body["usage"]["prompt_tokens"].get<int>(), 1);
}

TEST_F(HttpApiTest, StreamedChatCarriesTheNonStreamedTextThenUsageAndDone) {
  Served s = Serve();
  httplib::Client client("127.0.0.1", s.port());
  json request = {{"model", kModel},
                  {"messages", {{{"role", "user"}, {"content", "Who made the heaven?"}}}},
                  {"max_tokens", 10},
                  {"temperature", 0}};
  const json whole = Body(client.Post("/v1/chat/completions", request.dump(), "application/json"));
  request["stream"] = true;
  request["stream_options"] = {{"include_usage", true}};
  auto streamed = client.Post("/v1/chat/completions", request.dump(), "application/json");
  ASSERT_TRUE(streamed);
  EXPECT_EQ(streamed->status, 200);
  EXPECT_EQ(streamed->get_header_value("Content-Type"), "text/event-stream");
  std::string text, finish;
  json usage;
  bool done = false;
  for (absl::string_view event : absl::StrSplit(streamed->body, "\n\n", absl::SkipEmpty())) {
    ASSERT_TRUE(absl::ConsumePrefix(&event, "data: ")) << event;
    ASSERT_FALSE(done) << "an event after [DONE]";
    if (event == "[DONE]") {
      done = true;
      continue;
    }
    const json chunk = json::parse(event);
    if (chunk.contains("usage")) usage = chunk["usage"];
    for (const json& choice : chunk["choices"]) {
      text += choice["delta"].value("content", "");
      if (!choice["finish_reason"].is_null()) finish = choice["finish_reason"];
    }
  }
  EXPECT_TRUE(done);
  EXPECT_EQ(text, whole["choices"][0]["message"]["content"]);
  EXPECT_EQ(finish, whole["choices"][0]["finish_reason"]);
  EXPECT_EQ(usage, whole["usage"]);
}

TEST_F(HttpApiTest, WithAKeyUnauthenticatedCallsAre401AndNeverReachTheGenerator) {
  HttpApiOptions api;
  api.api_key = "sesame";
  Served s = Serve({}, api);
  httplib::Client client("127.0.0.1", s.port());
  const std::string request = json{{"model", kModel}, {"prompt", kPrompt}, {"max_tokens", 2}}.dump();
  const std::string before = s.service->RenderMetrics();
  for (const char* header : {"", "Bearer wrong", "Basic sesame", "Bearer sesamee"}) {
    httplib::Headers headers;
    if (*header != '\0') headers.emplace("Authorization", header);
    auto reply = client.Post("/v1/completions", headers, request, "application/json");
    ASSERT_TRUE(reply);
    EXPECT_EQ(reply->status, 401) << header;
    EXPECT_EQ(json::parse(reply->body)["error"]["type"], "authentication_error");
    EXPECT_EQ(client.Get("/v1/models", headers)->status, 401);
  }
  EXPECT_EQ(s.service->RenderMetrics(), before) << "a refused call reached the service";
  auto ok = client.Post("/v1/completions", {{"Authorization", "Bearer sesame"}}, request, "application/json");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200) << ok->body;
  EXPECT_EQ(client.Get("/health")->status, 200);  // probes need no key
}

TEST_F(HttpApiTest, BadRequestsAre400NamingTheFieldAndUnknownModels404) {
  Served s = Serve();
  httplib::Client client("127.0.0.1", s.port());
  auto post = [&](const json& body) { return client.Post("/v1/completions", body.dump(), "application/json"); };
  auto unknown = post({{"model", "gpt-4"}, {"prompt", kPrompt}});
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->status, 404);
  EXPECT_EQ(json::parse(unknown->body)["error"]["code"], "model_not_found");
  auto n = post({{"model", kModel}, {"prompt", kPrompt}, {"n", 3}});
  ASSERT_TRUE(n);
  EXPECT_EQ(n->status, 400);
  EXPECT_EQ(json::parse(n->body)["error"]["param"], "n");
  // The service's own check (the context), reported with the client's field name.
  auto long_request = post({{"model", kModel}, {"prompt", kPrompt}, {"max_tokens", 1 << 20}});
  ASSERT_TRUE(long_request);
  EXPECT_EQ(long_request->status, 400);
  const json error = json::parse(long_request->body)["error"];
  EXPECT_EQ(error["param"], "max_tokens");
  EXPECT_TRUE(absl::StrContains(error["message"].get<std::string>(), "max_tokens")) << error;
  auto temperature = post({{"model", kModel}, {"prompt", kPrompt}, {"temperature", -1}});
  ASSERT_TRUE(temperature);
  EXPECT_EQ(temperature->status, 400);
  EXPECT_EQ(json::parse(temperature->body)["error"]["param"], "temperature");
  auto chat = client.Post("/v1/chat/completions",
                          json{{"model", kModel}, {"messages", {{{"role", "wizard"}, {"content", "x"}}}}}.dump(),
                          "application/json");
  ASSERT_TRUE(chat);
  EXPECT_EQ(chat->status, 400) << chat->body;
  auto garbage = client.Post("/v1/completions", "{", "application/json");
  ASSERT_TRUE(garbage);
  EXPECT_EQ(garbage->status, 400);
  EXPECT_EQ(client.Get("/v1/nothing")->status, 404);
  EXPECT_TRUE(KvCachesFreed());
}

TEST_F(HttpApiTest, FullQueueIs429AndADisconnectedStreamFreesItsKvCache) {
  GenerationServiceOptions options;
  options.max_requests = 1;
  Served s = Serve(options);
  const int stream = OpenStream(
      s.port(), json{{"model", kModel}, {"prompt", kPrompt}, {"max_tokens", 1000}, {"stream", true}}.dump());
  ASSERT_GE(stream, 0);
  EXPECT_EQ(KvCache::LiveCaches(), 1);
  httplib::Client client("127.0.0.1", s.port());
  const std::string small = json{{"model", kModel}, {"prompt", kPrompt}, {"max_tokens", 2}}.dump();
  auto refused = client.Post("/v1/completions", small, "application/json");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 429);
  EXPECT_EQ(json::parse(refused->body)["error"]["type"], "rate_limit_error");
  ::close(stream);  // the client goes away mid-stream
  EXPECT_TRUE(KvCachesFreed()) << KvCache::LiveCaches() << " caches still live";
  EXPECT_TRUE(MetricsSoonContain(*s.service, "moe_coordinator_requests_total{outcome=\"error\"} 1"));
  auto admitted = client.Post("/v1/completions", small, "application/json");
  ASSERT_TRUE(admitted);
  EXPECT_EQ(admitted->status, 200);
}

TEST_F(HttpApiTest, ANonStreamedRequestWhoseClientLeavesIsCancelled) {
  Served s = Serve();
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(s.port()));
  ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  const std::string body = json{{"model", kModel}, {"prompt", kPrompt}, {"max_tokens", 1000}}.dump();
  const std::string request = absl::StrCat("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: ",
                                           body.size(), "\r\n\r\n", body);
  ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  for (int i = 0; i < 500 && KvCache::LiveCaches() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  ASSERT_EQ(KvCache::LiveCaches(), 1) << "the generation did not start";
  ::close(fd);
  EXPECT_TRUE(KvCachesFreed());
  EXPECT_TRUE(MetricsSoonContain(*s.service, "moe_coordinator_requests_total{outcome=\"error\"} 1"));
}

TEST_F(HttpApiTest, NoWorkerIs503AndHealthSaysWhy) {
  GenerationServiceOptions options;
  options.experts_available = [] { return false; };
  HttpApiOptions api;
  api.health = [] { return absl::UnavailableError("no expert worker is answering"); };
  Served s = Serve(options, api);
  httplib::Client client("127.0.0.1", s.port());
  auto reply = client.Post("/v1/completions", json{{"model", kModel}, {"prompt", kPrompt}}.dump(),
                           "application/json");
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->status, 503);
  auto health = client.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 503);
  EXPECT_EQ(json::parse(health->body)["reason"], "no expert worker is answering");
  s.service->BeginShutdown(absl::Now());
  auto shutting = client.Post("/v1/completions", json{{"model", kModel}, {"prompt", kPrompt}}.dump(),
                              "application/json");
  ASSERT_TRUE(shutting);
  EXPECT_EQ(shutting->status, 503);
  EXPECT_TRUE(absl::StrContains(shutting->body, "shutting down"));
}

TEST_F(HttpApiTest, ServesModelsMetricsAndASelfContainedChatPage) {
  Served s = Serve();
  httplib::Client client("127.0.0.1", s.port());
  const json models = Body(client.Get("/v1/models"));
  EXPECT_EQ(models["data"][0]["id"], kModel);
  auto metrics = client.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_TRUE(absl::StrContains(metrics->body, "moe_coordinator_requests_total"));
  auto page = client.Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_EQ(page->get_header_value("Content-Type"), "text/html; charset=utf-8");
  EXPECT_TRUE(absl::StrContains(page->body, "id=\"stop\""));
  EXPECT_TRUE(absl::StrContains(page->body, "/v1/chat/completions"));
  // Nothing is fetched from elsewhere, and the browser is told so.
  EXPECT_FALSE(absl::StrContains(page->body, "http://"));
  EXPECT_FALSE(absl::StrContains(page->body, "https://"));
  EXPECT_TRUE(absl::StrContains(page->get_header_value("Content-Security-Policy"), "default-src 'none'"));
}

}  // namespace
}  // namespace moe::coordinator
