#include "common/server_flags.h"

#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

ABSL_FLAG(std::string, tls_cert, "", "TCP listener: PEM server certificate (turns on TLS)");
ABSL_FLAG(std::string, tls_key, "", "TCP listener: PEM private key of --tls-cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "TCP listener: PEM CA that client certificates must be signed by (mutual TLS)");
ABSL_FLAG(std::vector<std::string>, allow_uids, {},
          "uids that may connect to the unix socket (and, on the worker, share an arena); "
          "default: this process's own uid");

namespace moe {

absl::StatusOr<std::vector<uint32_t>> AllowedUidsFlag() {
  absl::StatusOr<std::vector<uint32_t>> uids = ParseUids(absl::GetFlag(FLAGS_allow_uids));
  if (!uids.ok()) return Annotate(uids.status(), "--allow-uids");
  return uids;
}

absl::Status ApplyServerSecurityFlags(ServerOptions* options) {
  options->tls.cert = absl::GetFlag(FLAGS_tls_cert);
  options->tls.key = absl::GetFlag(FLAGS_tls_key);
  options->tls.ca = absl::GetFlag(FLAGS_tls_client_ca);
  MOE_ASSIGN_OR_RETURN(options->allowed_peer_uids, AllowedUidsFlag());
  // Fail at start, not at the first connection, on an unreadable file.
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      MakeServerCredentials(options->tls);
  if (!credentials.ok()) return Annotate(credentials.status(), "--tls-cert/--tls-key/--tls-client-ca");
  return absl::OkStatus();
}

}  // namespace moe
