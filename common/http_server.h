// HTTP for both processes, on cpp-httplib (Debian's libcpp-httplib-dev): the
// coordinator's OpenAI-compatible API and chat page (coordinator/http_api), and the
// Prometheus scrape endpoint GET /metrics of both processes.
#ifndef MOE_COMMON_HTTP_SERVER_H_
#define MOE_COMMON_HTTP_SERVER_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace httplib {
class Server;
}  // namespace httplib

namespace moe {

struct HostPort {
  std::string host;  // numeric, without brackets: "127.0.0.1", "::1", "0.0.0.0", "::"
  int port = 0;      // 0: any free port
};

// Parses "HOST:PORT": HOST is a numeric IPv4 address, "localhost" (127.0.0.1) or a
// bracketed numeric IPv6 address ("[::1]:8080", "[::]:8080" for every interface). No
// name lookups: a listen address must not depend on DNS. INVALID_ARGUMENT naming the
// address otherwise.
absl::StatusOr<HostPort> ParseHostPort(absl::string_view address);

struct HttpServerOptions {
  // Connections served at once (threads); further ones wait in the accept queue. A
  // slow client holds one, so scrapes and health checks need spares beside the
  // generations a server admits.
  int threads = 4;
  // Largest request body accepted (413 beyond).
  size_t max_body_bytes = size_t{1} << 20;
  // Seconds a read or write may block; a client that sends nothing for this long is
  // dropped.
  int io_timeout_s = 5;
};

// One httplib::Server on a thread of its own. Bind() claims the address at once (so a
// process can fail on a taken port before loading a model); Serve() installs the
// routes and starts answering. Destruction stops accepting, lets the requests in
// flight finish and joins the threads. Not thread-safe; handlers run on the server's
// threads.
class HttpServer {
 public:
  static absl::StatusOr<std::unique_ptr<HttpServer>> Bind(const std::string& address,
                                                          const HttpServerOptions& options = {});
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // `routes` registers the handlers (Get, Post, ...) on the server; then it serves.
  // Call once.
  void Serve(const std::function<void(httplib::Server&)>& routes);

  int port() const { return port_; }
  const std::string& address() const { return address_; }

 private:
  HttpServer(std::unique_ptr<httplib::Server> server, std::string address, int port);

  std::unique_ptr<httplib::Server> server_;
  const std::string address_;
  const int port_;
  std::thread thread_;
};

// The standard process_* metrics (CPU seconds, resident and virtual memory, start
// time, open and maximum file descriptors) of this process, from /proc.
std::string ProcessMetrics();

// Registers GET /metrics answering render() and ProcessMetrics() as Prometheus text.
void AddMetricsRoute(httplib::Server& server, std::function<std::string()> render);

// A server of /metrics alone (--metrics-listen of both processes).
absl::StatusOr<std::unique_ptr<HttpServer>> StartMetricsServer(const std::string& address,
                                                               std::function<std::string()> render);

}  // namespace moe

#endif  // MOE_COMMON_HTTP_SERVER_H_
