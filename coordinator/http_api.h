// The coordinator's HTTP face (--http-listen): the OpenAI-compatible API
// (POST /v1/chat/completions and /v1/completions, streamed as server-sent events or not;
// GET /v1/models), GET /health, GET /metrics and the chat page at /. A thin adapter:
// every generation goes through GenerationService::Serve, the path gRPC's Generate
// takes, with its admission, request checks and shutdown; openai_json converts.
#ifndef MOE_COORDINATOR_HTTP_API_H_
#define MOE_COORDINATOR_HTTP_API_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "coordinator/generation_service.h"
#include "coordinator/openai_json.h"

namespace httplib {
class Server;
}  // namespace httplib

namespace moe::coordinator {

struct HttpApiOptions {
  // The served model's id: GET /v1/models lists it, and a request naming another gets 404.
  std::string model_id;
  // When set, /v1/* requests need "Authorization: Bearer <api_key>" (401 otherwise,
  // before anything reaches the generator). /, /health and /metrics stay open.
  std::string api_key;
  // OK while generations can be served; otherwise the reason (GET /health answers 503).
  std::function<absl::Status()> health;
  // Prometheus text for GET /metrics.
  std::function<std::string()> metrics;
};

// Registers the routes on `server`. `service` must outlive the server.
void AddHttpApi(httplib::Server& server, GenerationService* service, HttpApiOptions options);

}  // namespace moe::coordinator

#endif  // MOE_COORDINATOR_HTTP_API_H_
