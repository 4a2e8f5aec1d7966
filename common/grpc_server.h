// What both servers share: listening address parsing, health and reflection, message
// size limits, and shutdown on SIGINT/SIGTERM.
#ifndef MOE_COMMON_GRPC_SERVER_H_
#define MOE_COMMON_GRPC_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/grpc_security.h"

namespace moe {

struct ServerOptions {
  std::string listen;                      // "unix:/path" or "host:port"
  int max_message_bytes = 64 << 20;        // larger requests are refused
  absl::Duration shutdown_grace = absl::Seconds(10);
  // TCP only: TLS (mutual when tls.ca is set). A unix socket is guarded by peer uids.
  TlsFiles tls;
  // Unix sockets: uids whose connections are accepted (SO_PEERCRED, checked before gRPC
  // reads a byte); empty: ours only. The socket file is 0600 unless others are allowed.
  std::vector<uint32_t> allowed_peer_uids;
};

// Checks an address is "unix:PATH" or "HOST:PORT".
absl::Status ValidateAddress(const std::string& address);

// Checks that a server could listen on `address` now, without listening: the syntax
// (ValidateAddress), then for unix:PATH a short enough path in an existing writable
// directory, for HOST:PORT a host that resolves and a port that binds (the trial socket
// is closed at once). Called before a model loads, which takes minutes at Mixtral size,
// so a typo or a taken port fails at once. The error names the address and why.
absl::Status CheckListenAddress(const std::string& address);

// Builds and starts a server with `services`, the standard grpc.health.v1 service
// (every service SERVING) and server reflection. Blocks until SIGINT or SIGTERM, then
// shuts down gracefully (in-flight calls get `shutdown_grace`). `on_started` runs once
// the server listens (readiness logs, health monitors); `on_stopping` runs after the
// signal, before shutdown (to stop what on_started began).
absl::Status ServeUntilSignal(const ServerOptions& options,
                              const std::vector<grpc::Service*>& services,
                              const std::function<void(grpc::Server*)>& on_started = {},
                              const std::function<void()>& on_stopping = {});

}  // namespace moe

#endif  // MOE_COMMON_GRPC_SERVER_H_
