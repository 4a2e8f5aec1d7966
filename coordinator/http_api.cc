#include "coordinator/http_api.h"

#include <dirent.h>
#include <httplib.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

#include "nlohmann/json.hpp"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "common/http_server.h"
#include "common/status.h"
#include "coordinator/web/chat_page.h"  // generated from web/chat.html: kChatPageHtml

namespace moe::coordinator {
namespace {

constexpr char kJson[] = "application/json";

void ReplyError(httplib::Response& res, const absl::Status& status) {
  ApiError error = ToApiError(status);
  res.status = error.http_status;
  res.set_content(std::move(error.body), kJson);
}

// Numeric host and port of a socket address, as httplib writes them into a Request.
bool SameEndpoint(const sockaddr_storage& addr, socklen_t len, const std::string& host, int port) {
  char h[NI_MAXHOST], p[NI_MAXSERV];
  if (::getnameinfo(reinterpret_cast<const sockaddr*>(&addr), len, h, sizeof(h), p, sizeof(p),
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
    return false;
  }
  return host == h && std::atoi(p) == port;
}

// The socket a request came on, found by its two addresses (httplib 0.11 does not
// give handlers their socket); -1 when none matches. Only while its handler runs is
// the descriptor certain to be this connection's: httplib closes it afterwards.
int ConnectionSocket(const httplib::Request& req) {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  int found = -1;
  while (const dirent* entry = ::readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(entry->d_name, &end, 10);
    struct stat st;
    if (*end != '\0' || fd == ::dirfd(dir) || ::fstat(int(fd), &st) != 0 || !S_ISSOCK(st.st_mode)) {
      continue;
    }
    sockaddr_storage local{}, peer{};
    socklen_t local_len = sizeof(local), peer_len = sizeof(peer);
    if (::getsockname(int(fd), reinterpret_cast<sockaddr*>(&local), &local_len) == 0 &&
        ::getpeername(int(fd), reinterpret_cast<sockaddr*>(&peer), &peer_len) == 0 &&
        SameEndpoint(peer, peer_len, req.remote_addr, req.remote_port) &&
        SameEndpoint(local, local_len, req.local_addr, req.local_port)) {
      found = int(fd);
      break;
    }
  }
  ::closedir(dir);
  return found;
}

// Whether the client closed its end (or reset it): a peek that reads end-of-stream
// or fails for any reason but "nothing to read yet".
bool PeerClosed(int fd) {
  if (fd < 0) return false;
  char byte;
  const ssize_t n = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

// One streamed generation on a thread of its own, so that the HTTP status can still
// follow the outcome until the first response: the handler waits for that, then the
// content provider forwards the rest as it comes.
class StreamedGeneration {
 public:
  StreamedGeneration(GenerationService* service, v1::GenerateRequest request, int socket)
      : socket_(socket) {
    thread_ = std::thread([this, service, request = std::move(request)] {
      const absl::Status status = service->Serve(
          request, [this] { return cancelled_.load() || PeerClosed(socket_); },
          [this](const v1::GenerateResponse& response) {
            std::lock_guard<std::mutex> lock(mu_);
            queue_.push_back(response);
            changed_.notify_all();
            return !cancelled_.load();
          });
      std::lock_guard<std::mutex> lock(mu_);
      status_ = status;
      done_ = true;
      changed_.notify_all();
    });
  }
  ~StreamedGeneration() {
    cancelled_ = true;
    thread_.join();
  }

  // Waits for the first response or the end. Returns the status of a generation that
  // ended before answering anything, OK otherwise.
  absl::Status WaitFirst() {
    std::unique_lock<std::mutex> lock(mu_);
    changed_.wait(lock, [this] { return done_ || !queue_.empty(); });
    return queue_.empty() ? status_ : absl::OkStatus();
  }
  // The next response; false at the end (then status()).
  bool Next(v1::GenerateResponse* out) {
    std::unique_lock<std::mutex> lock(mu_);
    changed_.wait(lock, [this] { return done_ || !queue_.empty(); });
    if (queue_.empty()) return false;
    *out = std::move(queue_.front());
    queue_.pop_front();
    return true;
  }
  absl::Status status() {
    std::lock_guard<std::mutex> lock(mu_);
    return status_;
  }
  // The client went away: the generation stops before its next layer step.
  void Cancel() { cancelled_ = true; }

 private:
  const int socket_;
  std::atomic<bool> cancelled_{false};
  std::mutex mu_;
  std::condition_variable changed_;
  std::deque<v1::GenerateResponse> queue_;  // guarded by mu_
  bool done_ = false;                        // guarded by mu_
  absl::Status status_;                      // guarded by mu_
  std::thread thread_;
};

// Constant-time comparison: the key must not leak through response times.
bool SameKey(absl::string_view a, absl::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= a[i] ^ b[i % (b.empty() ? 1 : b.size())];
  return diff == 0 && !b.empty();
}

class HttpApi {
 public:
  HttpApi(GenerationService* service, HttpApiOptions options)
      : service_(service), options_(std::move(options)), created_(absl::ToUnixSeconds(absl::Now())) {}

  absl::Status Authorize(const httplib::Request& req) const {
    if (options_.api_key.empty()) return absl::OkStatus();
    const std::string header = req.get_header_value("Authorization");
    if (!absl::StartsWith(header, "Bearer ") || !SameKey(header.substr(7), options_.api_key)) {
      return absl::UnauthenticatedError(header.empty()
                                            ? "this server needs an API key: Authorization: Bearer KEY"
                                            : "the API key is not valid");
    }
    return absl::OkStatus();
  }

  void Generate(ApiEndpoint endpoint, const httplib::Request& req, httplib::Response& res) {
    absl::StatusOr<ApiRequest> request = Parse(endpoint, req);
    if (!request.ok()) return ReplyError(res, request.status());
    const int socket = ConnectionSocket(req);
    if (request->stream) return Stream(endpoint, *std::move(request), socket, res);

    std::vector<v1::GenerateResponse> responses;
    const absl::Status status = service_->Serve(
        request->generate, [socket] { return PeerClosed(socket); },
        [&responses](const v1::GenerateResponse& r) {
          responses.push_back(r);
          return true;
        });
    if (!status.ok()) return ReplyError(res, NameField(status, *request));
    ApiResponder responder(endpoint, request->model, false);
    res.set_content(responder.Complete(responses), kJson);
  }

  void Models(httplib::Response& res) const { res.set_content(ModelsJson(options_.model_id, created_), kJson); }

  void Health(httplib::Response& res) const {
    const absl::Status status = options_.health ? options_.health() : absl::OkStatus();
    nlohmann::json body = {{"status", status.ok() ? "ok" : "unavailable"}};
    if (!status.ok()) body["reason"] = std::string(status.message());
    res.status = status.ok() ? 200 : 503;
    // The reason may quote a worker's message: never throw on bytes that are not UTF-8.
    res.set_content(body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), kJson);
  }

  std::string Metrics() const { return options_.metrics ? options_.metrics() : std::string(); }

 private:
  absl::StatusOr<ApiRequest> Parse(ApiEndpoint endpoint, const httplib::Request& req) const {
    MOE_RETURN_IF_ERROR(Authorize(req));
    MOE_ASSIGN_OR_RETURN(ApiRequest request, ParseApiRequest(endpoint, req.body));
    if (request.model != options_.model_id) {
      return WithApiErrorParam(
          absl::NotFoundError(absl::StrCat("the model '", request.model, "' does not exist; this server serves '",
                                           options_.model_id, "' (GET /v1/models)")),
          "model");
    }
    return request;
  }

  // The service's checks speak of max_new_tokens, the gRPC field; say the client's name.
  static absl::Status NameField(const absl::Status& status, const ApiRequest& request) {
    if (!absl::IsInvalidArgument(status) || !ApiErrorParam(status).empty()) return status;
    for (const char* field : {"max_new_tokens", "temperature", "top_p", "top_k"}) {
      if (absl::StrContains(status.message(), field)) {
        const std::string name = std::string(field) == "max_new_tokens" ? request.max_tokens_field : field;
        return WithApiErrorParam(
            absl::InvalidArgumentError(absl::StrReplaceAll(status.message(), {{"max_new_tokens", name}})), name);
      }
    }
    return WithApiErrorParam(status, request.generate.messages_size() > 0 ? "messages" : "prompt");
  }

  void Stream(ApiEndpoint endpoint, ApiRequest request, int socket, httplib::Response& res) {
    auto generation = std::make_shared<StreamedGeneration>(service_, request.generate, socket);
    if (absl::Status status = generation->WaitFirst(); !status.ok()) {
      return ReplyError(res, NameField(status, request));
    }
    auto responder = std::make_shared<ApiResponder>(endpoint, request.model, request.include_usage);
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");  // proxies: pass each event on at once
    res.set_chunked_content_provider(
        "text/event-stream",
        [generation, responder](size_t, httplib::DataSink& sink) {
          v1::GenerateResponse response;
          while (generation->Next(&response)) {
            const std::string events = responder->StreamEvents(response);
            if (!events.empty() && !sink.write(events.data(), events.size())) {
              generation->Cancel();
              return false;
            }
          }
          if (absl::Status status = generation->status(); !status.ok()) {
            const std::string events = ApiResponder::StreamError(status);
            sink.write(events.data(), events.size());
          }
          sink.done();
          return true;
        },
        // Runs however the response ends: a stream cut short stops its generation.
        [generation](bool) { generation->Cancel(); });
  }

  GenerationService* const service_;
  const HttpApiOptions options_;
  const int64_t created_;
};

}  // namespace

void AddHttpApi(httplib::Server& server, GenerationService* service, HttpApiOptions options) {
  auto api = std::make_shared<HttpApi>(service, std::move(options));
  server.Post("/v1/chat/completions", [api](const httplib::Request& req, httplib::Response& res) {
    api->Generate(ApiEndpoint::kChatCompletions, req, res);
  });
  server.Post("/v1/completions", [api](const httplib::Request& req, httplib::Response& res) {
    api->Generate(ApiEndpoint::kCompletions, req, res);
  });
  server.Get("/v1/models", [api](const httplib::Request& req, httplib::Response& res) {
    if (absl::Status status = api->Authorize(req); !status.ok()) return ReplyError(res, status);
    api->Models(res);
  });
  server.Get("/health", [api](const httplib::Request&, httplib::Response& res) { api->Health(res); });
  AddMetricsRoute(server, [api] { return api->Metrics(); });
  server.Get("/", [](const httplib::Request&, httplib::Response& res) {
    // Everything the page needs is in it: nothing may come from elsewhere.
    res.set_header("Content-Security-Policy",
                   "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                   "connect-src 'self'");
    res.set_content(kChatPageHtml, "text/html; charset=utf-8");
  });
  // Unknown paths and methods: OpenAI's error shape, not an empty page.
  server.set_error_handler(httplib::Server::HandlerWithResponse(
      [](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    const int http_status = res.status;
    ReplyError(res, absl::Status(http_status == 404 ? absl::StatusCode::kNotFound
                                                    : absl::StatusCode::kInvalidArgument,
                                 http_status == 404 ? absl::StrCat("no route for ", req.method, " ", req.path)
                                                    : absl::StrCat("HTTP ", http_status)));
    res.status = http_status;
    return httplib::Server::HandlerResponse::Handled;
  }));
}

}  // namespace moe::coordinator
