// A minimal HTTP/1.0 server for Prometheus scrapes: GET /metrics answers the text a
// callback renders; anything else gets 404 or 405. One thread, one request per
// connection, bounded request size and read time, so a bad client cannot hold it long.
// (Debian ships no Prometheus client library for C++; a scrape endpoint needs no more.)
#ifndef MOE_COMMON_METRICS_HTTP_SERVER_H_
#define MOE_COMMON_METRICS_HTTP_SERVER_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace moe {

// Thread-safe to destroy from any thread; `render` runs on the server's thread.
class MetricsHttpServer {
 public:
  // Listens on "HOST:PORT" (IPv4 numeric host or "localhost"; port 0 picks a free one).
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      const std::string& address, std::function<std::string()> render);
  // Stops accepting and joins the thread.
  ~MetricsHttpServer();

  int port() const { return port_; }

 private:
  MetricsHttpServer(int listen_fd, int wake_fd, int port, std::function<std::string()> render);
  void Loop();
  void Serve(int fd);

  const int listen_fd_;
  const int wake_fd_;  // eventfd: written once to stop the loop
  const int port_;
  std::function<std::string()> render_;
  std::thread thread_;
};

}  // namespace moe

#endif  // MOE_COMMON_METRICS_HTTP_SERVER_H_
