#include "common/grpc_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/server_posix.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/arena_trust.h"
#include "common/logging.h"
#include "common/status.h"

namespace moe {

absl::Status ValidateAddress(const std::string& address) {
  if (absl::StartsWith(address, "unix:")) {
    if (address.size() > 5) return absl::OkStatus();
  } else {
    const size_t colon = address.rfind(':');
    int port;
    if (colon != std::string::npos && colon > 0 &&
        absl::SimpleAtoi(address.substr(colon + 1), &port) && port >= 0 && port < 65536) {
      return absl::OkStatus();
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("address \"", address, "\" is neither unix:PATH nor HOST:PORT"));
}

absl::Status CheckListenAddress(const std::string& address) {
  MOE_RETURN_IF_ERROR(ValidateAddress(address));
  if (absl::StartsWith(address, "unix:")) {
    const std::string path = address.substr(5);
    if (path.size() >= sizeof(sockaddr_un{}.sun_path)) {
      return absl::InvalidArgumentError(absl::StrCat("cannot listen on ", address, ": the path is longer than ",
                                                     sizeof(sockaddr_un{}.sun_path) - 1, " bytes"));
    }
    const size_t slash = path.rfind('/');
    const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
    struct stat st;
    if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot listen on ", address, ": directory ", dir, " does not exist"));
    }
    if (::access(dir.c_str(), W_OK | X_OK) != 0) {
      return absl::PermissionDeniedError(absl::StrCat("cannot listen on ", address, ": directory ",
                                                      dir, " is not writable: ", std::strerror(errno)));
    }
    return absl::OkStatus();
  }
  const size_t colon = address.rfind(':');
  std::string host = address.substr(0, colon);
  const std::string port = address.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const int resolved = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &found);
  if (resolved != 0) {
    return absl::InvalidArgumentError(absl::StrCat("cannot listen on ", address, ": host \"", host,
                                                   "\" does not resolve (", ::gai_strerror(resolved), ")"));
  }
  std::string why;
  bool bound = false;
  for (addrinfo* a = found; a != nullptr && !bound; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      why = std::strerror(errno);
      continue;
    }
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));  // as gRPC binds
    bound = ::bind(fd, a->ai_addr, a->ai_addrlen) == 0;
    if (!bound) why = std::strerror(errno);
    ::close(fd);
  }
  ::freeaddrinfo(found);
  if (!bound) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", address, ": ", why));
  }
  return absl::OkStatus();
}

namespace {

// A unix-socket listener that hands gRPC only the connections of allowed uids. gRPC's
// own unix listener cannot tell who connected; SO_PEERCRED on each accepted socket can.
class PeerCheckedUnixListener {
 public:
  static absl::StatusOr<std::unique_ptr<PeerCheckedUnixListener>> Listen(
      const std::string& path, const std::vector<uint32_t>& allowed) {
    sockaddr_un addr{};
    if (path.size() >= sizeof(addr.sun_path)) {
      return absl::InvalidArgumentError(absl::StrCat("unix socket path ", path, " is longer than ",
                                                     sizeof(addr.sun_path) - 1, " bytes"));
    }
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.data(), path.size());
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return absl::UnavailableError(absl::StrCat("socket: ", std::strerror(errno)));
    ::unlink(path.c_str());
    // Bound with a private umask, then opened up only as far as the allow-list needs.
    const mode_t old = ::umask(0177);
    const int bound = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    ::umask(old);
    if (bound != 0 || ::listen(fd, 128) != 0) {
      const std::string why = std::strerror(errno);
      ::close(fd);
      return absl::UnavailableError(absl::StrCat("cannot listen on unix:", path, ": ", why));
    }
    bool others = false;
    for (uint32_t uid : allowed) others |= uid != ::geteuid();
    if (others) ::chmod(path.c_str(), 0666);
    return std::unique_ptr<PeerCheckedUnixListener>(new PeerCheckedUnixListener(fd, allowed));
  }

  // Accepts until Stop(), handing allowed connections to `server`.
  void Start(grpc::Server* server) {
    thread_ = std::thread([this, server] {
      while (true) {
        const int conn = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (conn < 0) {
          if (errno == EINTR || errno == ECONNABORTED) continue;
          return;  // Stop() shut the socket down
        }
        ucred peer{};
        socklen_t len = sizeof(peer);
        if (::getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &peer, &len) != 0 ||
            !UidAllowed(peer.uid, allowed_)) {
          MOE_LOG(WARNING) << "refused a connection from uid " << peer.uid << " (pid " << peer.pid
                           << "): not an allowed uid";
          ::close(conn);
          continue;
        }
        // gRPC's endpoints expect a non-blocking socket (accept4 made it one).
        grpc::AddInsecureChannelFromFd(server, conn);  // gRPC owns conn now
      }
    });
  }

  void Stop() {
    ::shutdown(fd_, SHUT_RDWR);
    if (thread_.joinable()) thread_.join();
  }

  ~PeerCheckedUnixListener() {
    Stop();
    ::close(fd_);
  }

 private:
  PeerCheckedUnixListener(int fd, std::vector<uint32_t> allowed)
      : fd_(fd), allowed_(std::move(allowed)) {}
  const int fd_;
  const std::vector<uint32_t> allowed_;
  std::thread thread_;
};

}  // namespace

absl::Status ServeUntilSignal(const ServerOptions& options,
                              const std::vector<grpc::Service*>& services,
                              const std::function<void(grpc::Server*)>& on_started,
                              const std::function<void()>& on_stopping) {
  if (auto s = ValidateAddress(options.listen); !s.ok()) return s;
  const bool unix_socket = absl::StartsWith(options.listen, "unix:");
  if (unix_socket && options.tls.server_enabled()) {
    return absl::InvalidArgumentError(
        "TLS is for TCP listeners; a unix socket is guarded by peer uids (--allow-uids)");
  }
  MOE_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials,
                       MakeServerCredentials(options.tls));
  std::unique_ptr<PeerCheckedUnixListener> unix_listener;
  if (unix_socket) {
    MOE_ASSIGN_OR_RETURN(unix_listener, (PeerCheckedUnixListener::Listen(
                                            options.listen.substr(5), options.allowed_peer_uids)));
  }

  // Block the signals in every thread; one thread waits for them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  if (!unix_socket) builder.AddListeningPort(options.listen, credentials, &port);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  for (grpc::Service* service : services) builder.RegisterService(service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || (!unix_socket && port == 0)) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.listen));
  }
  if (unix_listener != nullptr) unix_listener->Start(server.get());
  server->GetHealthCheckService()->SetServingStatus(true);
  if (on_started) on_started(server.get());

  int received = 0;
  sigwait(&signals, &received);
  MOE_LOG(INFO) << "signal " << received << ": shutting down";
  if (on_stopping) on_stopping();
  server->GetHealthCheckService()->SetServingStatus(false);
  const auto deadline = std::chrono::system_clock::now() +
                        absl::ToChronoMilliseconds(options.shutdown_grace);
  if (unix_listener != nullptr) unix_listener->Stop();  // no new connections
  server->Shutdown(deadline);
  server->Wait();
  if (absl::StartsWith(options.listen, "unix:")) ::unlink(options.listen.c_str() + 5);
  return absl::OkStatus();
}

}  // namespace moe
