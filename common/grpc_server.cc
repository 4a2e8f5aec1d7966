#include "common/grpc_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/logging.h"

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

absl::Status ServeUntilSignal(const ServerOptions& options,
                              const std::vector<grpc::Service*>& services,
                              const std::function<void(grpc::Server*)>& on_started,
                              const std::function<void()>& on_stopping) {
  if (auto s = ValidateAddress(options.listen); !s.ok()) return s;
  if (absl::StartsWith(options.listen, "unix:")) ::unlink(options.listen.c_str() + 5);

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
  builder.AddListeningPort(options.listen, grpc::InsecureServerCredentials(), &port);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  for (grpc::Service* service : services) builder.RegisterService(service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.listen));
  }
  server->GetHealthCheckService()->SetServingStatus(true);
  if (on_started) on_started(server.get());

  int received = 0;
  sigwait(&signals, &received);
  MOE_LOG(INFO) << "signal " << received << ": shutting down";
  if (on_stopping) on_stopping();
  server->GetHealthCheckService()->SetServingStatus(false);
  const auto deadline = std::chrono::system_clock::now() +
                        absl::ToChronoMilliseconds(options.shutdown_grace);
  server->Shutdown(deadline);
  server->Wait();
  if (absl::StartsWith(options.listen, "unix:")) ::unlink(options.listen.c_str() + 5);
  return absl::OkStatus();
}

}  // namespace moe
