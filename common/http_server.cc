#include "common/http_server.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <httplib.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iterator>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/logging.h"
#include "common/prometheus_text.h"
#include "common/status.h"

namespace moe {
namespace {

// httplib::Server keeps its listening socket to itself until it listens; a server
// bound but never served closes it here.
class BindableServer : public httplib::Server {
 public:
  void CloseUnserved() {
    const auto sock = svr_sock_.exchange(INVALID_SOCKET);
    if (sock != INVALID_SOCKET) ::close(sock);
  }
};

}  // namespace

absl::StatusOr<HostPort> ParseHostPort(absl::string_view address) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("listen address ", QuoteForMessage(address), ": ", why));
  };
  const size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos) return bad("not HOST:PORT");
  HostPort out;
  if (!absl::SimpleAtoi(address.substr(colon + 1), &out.port) || out.port < 0 || out.port > 65535) {
    return bad("the port must be a number in [0, 65535]");
  }
  const absl::string_view host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    out.host = std::string(host.substr(1, host.size() - 2));
    in6_addr v6;
    if (::inet_pton(AF_INET6, out.host.c_str(), &v6) != 1) return bad("not a numeric IPv6 address");
    return out;
  }
  out.host = host == "localhost" ? "127.0.0.1" : std::string(host);
  in_addr v4;
  if (::inet_pton(AF_INET, out.host.c_str(), &v4) != 1) {
    return bad("the host must be a numeric IPv4 address, localhost or [IPv6]");
  }
  return out;
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Bind(const std::string& address,
                                                             const HttpServerOptions& options) {
  MOE_ASSIGN_OR_RETURN(const HostPort where, ParseHostPort(address));
  if (options.threads < 1 || options.io_timeout_s < 1) {
    return absl::InvalidArgumentError("an HTTP server needs threads >= 1 and io_timeout_s >= 1");
  }
  auto server = std::make_unique<BindableServer>();
  const int threads = options.threads;
  server->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  server->set_payload_max_length(options.max_body_bytes);
  server->set_read_timeout(options.io_timeout_s, 0);
  server->set_write_timeout(options.io_timeout_s, 0);
  server->set_keep_alive_timeout(options.io_timeout_s);
  // httplib's default is SO_REUSEPORT, which lets a second process share a port in use
  // instead of failing: only SO_REUSEADDR (restart while old connections linger).
  server->set_socket_options([](auto sock) {
    const int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  // Server-sent events carry a token each: Nagle's algorithm would hold them back.
  server->set_tcp_nodelay(true);
  errno = 0;
  int port = where.port;
  if (port == 0) {
    port = server->bind_to_any_port(where.host);
  } else if (!server->bind_to_port(where.host, port)) {
    port = -1;
  }
  if (port <= 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", address, ": ",
                                               errno != 0 ? std::strerror(errno) : "bind failed"));
  }
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(server), address, port));
}

HttpServer::HttpServer(std::unique_ptr<httplib::Server> server, std::string address, int port)
    : server_(std::move(server)), address_(std::move(address)), port_(port) {}

void HttpServer::Serve(const std::function<void(httplib::Server&)>& routes) {
  MOE_CHECK(!thread_.joinable()) << "HttpServer::Serve called twice";
  routes(*server_);
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  // stop() is a no-op until the server runs: wait for it, so destruction cannot race.
  while (!server_->is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

HttpServer::~HttpServer() {
  if (thread_.joinable()) {
    server_->stop();
    thread_.join();
  } else {
    static_cast<BindableServer*>(server_.get())->CloseUnserved();
  }
}

std::string ProcessMetrics() {
  PrometheusText out;
  // /proc/self/stat: fields after the command name (which may hold spaces) in ")".
  std::ifstream stat_file("/proc/self/stat");
  std::string stat((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
  const size_t close = stat.rfind(')');
  std::vector<std::string> f;
  if (close != std::string::npos) f = absl::StrSplit(stat.substr(close + 2), ' ', absl::SkipEmpty());
  const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(::sysconf(_SC_PAGESIZE));
  auto field = [&](size_t stat_index) {  // 1-based index in proc(5); f starts at field 3
    double v = 0;
    return stat_index - 3 < f.size() && absl::SimpleAtod(f[stat_index - 3], &v) ? v : 0.0;
  };
  out.Counter("process_cpu_seconds_total", "User and system CPU time spent in seconds",
              (field(14) + field(15)) / ticks);
  out.Gauge("process_resident_memory_bytes", "Resident memory size in bytes", field(24) * page);
  out.Gauge("process_virtual_memory_bytes", "Virtual memory size in bytes", field(23));
  // Start time: ticks after boot, plus the boot time from /proc/stat.
  std::ifstream proc_stat("/proc/stat");
  double boot = 0;
  for (std::string line; std::getline(proc_stat, line);) {
    absl::string_view rest = line;
    if (absl::ConsumePrefix(&rest, "btime ")) absl::SimpleAtod(rest, &boot);
  }
  out.Gauge("process_start_time_seconds", "Start time of the process since unix epoch in seconds",
            boot + field(22) / ticks);
  int fds = 0;
  if (DIR* dir = ::opendir("/proc/self/fd")) {
    while (const dirent* e = ::readdir(dir)) fds += e->d_name[0] != '.';
    ::closedir(dir);
    --fds;  // the directory's own descriptor
  }
  out.Gauge("process_open_fds", "Number of open file descriptors", fds);
  rlimit limit{};
  ::getrlimit(RLIMIT_NOFILE, &limit);
  out.Gauge("process_max_fds", "Maximum number of open file descriptors", double(limit.rlim_cur));
  return out.text();
}

void AddMetricsRoute(httplib::Server& server, std::function<std::string()> render) {
  server.Get("/metrics", [render = std::move(render)](const httplib::Request&, httplib::Response& res) {
    res.set_content(render() + ProcessMetrics(), "text/plain; version=0.0.4; charset=utf-8");
  });
}

absl::StatusOr<std::unique_ptr<HttpServer>> StartMetricsServer(const std::string& address,
                                                               std::function<std::string()> render) {
  MOE_ASSIGN_OR_RETURN(auto server, HttpServer::Bind(address));
  server->Serve([&](httplib::Server& s) { AddMetricsRoute(s, std::move(render)); });
  return server;
}

}  // namespace moe
