// The security flags both servers share, declared once: --tls-cert, --tls-key,
// --tls-client-ca (TCP listeners) and --allow-uids (unix sockets; arenas on the worker).
#ifndef MOE_COMMON_SERVER_FLAGS_H_
#define MOE_COMMON_SERVER_FLAGS_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "common/grpc_server.h"

namespace moe {

// Fills options->tls and options->allowed_peer_uids from the flags; INVALID_ARGUMENT
// naming the flag for a bad value.
absl::Status ApplyServerSecurityFlags(ServerOptions* options);
// --allow-uids, parsed (empty: our own uid only).
absl::StatusOr<std::vector<uint32_t>> AllowedUidsFlag();

}  // namespace moe

#endif  // MOE_COMMON_SERVER_FLAGS_H_
