// Who may talk to our gRPC servers, in one place for both processes and every client:
// - TLS from PEM files (server certificate and key; a client CA turns on mutual TLS), on
//   TCP listeners and the channels that dial them;
// - a bearer token (`authorization: Bearer KEY` metadata) for the public API;
// - on unix sockets, the peer's uid (SO_PEERCRED) against an allow-list, enforced per
//   connection before gRPC reads a byte (common/grpc_server.cc);
// - default socket paths in a private directory, never bare /tmp where another user
//   could bind the name first.
#ifndef MOE_COMMON_GRPC_SECURITY_H_
#define MOE_COMMON_GRPC_SECURITY_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moe {

// PEM file paths. Server: cert+key, and ca to require client certificates signed by it.
// Client: ca to verify the server (empty: the system roots), cert+key for mutual TLS.
struct TlsFiles {
  std::string cert;
  std::string key;
  std::string ca;
  bool server_enabled() const { return !cert.empty() || !key.empty(); }
  bool client_enabled() const { return !ca.empty() || !cert.empty(); }
};

// Insecure credentials when TLS is off; INVALID_ARGUMENT naming a missing half or an
// unreadable file.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const TlsFiles& tls);
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(const TlsFiles& tls);

// UNAUTHENTICATED unless the call carries `authorization: Bearer <api_key>` (compared in
// constant time). OK for any call when api_key is empty.
absl::Status CheckBearerToken(const grpc::ServerContext& context, const std::string& api_key);
// Adds the header a CheckBearerToken server expects (nothing when api_key is empty).
void AddBearerToken(grpc::ClientContext* context, const std::string& api_key);

// Parses "1000,1001" (flag values); INVALID_ARGUMENT naming a bad entry.
absl::StatusOr<std::vector<uint32_t>> ParseUids(const std::vector<std::string>& values);

// "unix:DIR/name" in a directory only we can enter: $XDG_RUNTIME_DIR/moe-offload when
// that is set, else /tmp/moe-offload-UID. Created 0700 if missing; an existing one that
// is not ours or is open to others is refused, naming why.
absl::StatusOr<std::string> DefaultSocketAddress(absl::string_view name);

}  // namespace moe

#endif  // MOE_COMMON_GRPC_SECURITY_H_
