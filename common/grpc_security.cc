#include "common/grpc_security.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace moe {
namespace {

absl::StatusOr<std::string> ReadPem(absl::string_view what, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat("cannot read the ", what, " ", path, ": ",
                                                   std::strerror(errno)));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (text.str().find("-----BEGIN ") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("the ", what, " ", path, " is not PEM"));
  }
  return text.str();
}

constexpr absl::string_view kBearer = "Bearer ";

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const TlsFiles& tls) {
  if (!tls.server_enabled()) {
    if (!tls.ca.empty()) {
      return absl::InvalidArgumentError("a TLS client CA needs a server certificate and key");
    }
    return grpc::InsecureServerCredentials();
  }
  if (tls.cert.empty() || tls.key.empty()) {
    return absl::InvalidArgumentError("TLS needs both a certificate and its key");
  }
  grpc::SslServerCredentialsOptions options(
      tls.ca.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                     : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  MOE_ASSIGN_OR_RETURN(pair.cert_chain, ReadPem("TLS certificate", tls.cert));
  MOE_ASSIGN_OR_RETURN(pair.private_key, ReadPem("TLS key", tls.key));
  options.pem_key_cert_pairs.push_back(std::move(pair));
  if (!tls.ca.empty()) {
    MOE_ASSIGN_OR_RETURN(options.pem_root_certs, ReadPem("TLS client CA", tls.ca));
  }
  return grpc::SslServerCredentials(options);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(const TlsFiles& tls) {
  if (!tls.client_enabled()) return grpc::InsecureChannelCredentials();
  if (tls.cert.empty() != tls.key.empty()) {
    return absl::InvalidArgumentError("a TLS client certificate needs its key, and a key its certificate");
  }
  grpc::SslCredentialsOptions options;
  if (!tls.ca.empty()) {
    MOE_ASSIGN_OR_RETURN(options.pem_root_certs, ReadPem("TLS CA", tls.ca));
  }
  if (!tls.cert.empty()) {
    MOE_ASSIGN_OR_RETURN(options.pem_cert_chain, ReadPem("TLS client certificate", tls.cert));
    MOE_ASSIGN_OR_RETURN(options.pem_private_key, ReadPem("TLS client key", tls.key));
  }
  return grpc::SslCredentials(options);
}

absl::Status CheckBearerToken(const grpc::ServerContext& context, const std::string& api_key) {
  if (api_key.empty()) return absl::OkStatus();
  const auto& metadata = context.client_metadata();
  const auto found = metadata.find("authorization");
  if (found == metadata.end()) {
    return absl::UnauthenticatedError("this server needs an API key: send authorization: Bearer KEY");
  }
  const absl::string_view value(found->second.data(), found->second.size());
  const std::string expected = absl::StrCat(kBearer, api_key);
  // Constant time in the key's length: no early exit on the first differing byte.
  unsigned diff = value.size() != expected.size();
  for (size_t i = 0; i < expected.size(); ++i) {
    diff |= static_cast<unsigned>(expected[i] ^ (i < value.size() ? value[i] : 0));
  }
  if (diff != 0) return absl::UnauthenticatedError("the API key is not valid");
  return absl::OkStatus();
}

void AddBearerToken(grpc::ClientContext* context, const std::string& api_key) {
  if (!api_key.empty()) context->AddMetadata("authorization", absl::StrCat(kBearer, api_key));
}

absl::StatusOr<std::vector<uint32_t>> ParseUids(const std::vector<std::string>& values) {
  std::vector<uint32_t> uids;
  for (const std::string& v : values) {
    uint32_t uid;
    if (!absl::SimpleAtoi(v, &uid)) {
      return absl::InvalidArgumentError(absl::StrCat(QuoteForMessage(v), " is not a uid"));
    }
    uids.push_back(uid);
  }
  return uids;
}

absl::StatusOr<std::string> DefaultSocketAddress(absl::string_view name) {
  const char* runtime = std::getenv("XDG_RUNTIME_DIR");
  const std::string dir = runtime != nullptr && runtime[0] == '/'
                              ? absl::StrCat(runtime, "/moe-offload")
                              : absl::StrCat("/tmp/moe-offload-", ::geteuid());
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::FailedPreconditionError(absl::StrCat("cannot create the socket directory ", dir,
                                                      ": ", std::strerror(errno)));
  }
  struct stat st;
  if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat("the socket directory ", dir,
                                                      " is not a directory"));
  }
  if (st.st_uid != ::geteuid() || (st.st_mode & 077) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the socket directory ", dir, " belongs to uid ", st.st_uid, " with mode ",
        absl::StrFormat("%03o", st.st_mode & 0777),
        "; it must be ours and 0700 (another user may have made it: remove it, or pass an "
        "explicit unix: address)"));
  }
  return absl::StrCat("unix:", dir, "/", name);
}

}  // namespace moe
