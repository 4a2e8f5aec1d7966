// The OpenAI HTTP API's JSON (chat completions, completions, models, errors) to and from
// moe.v1 messages. Pure functions over strings: coordinator/http_api serves them, and
// every request check beyond JSON types stays in the generation service.
#ifndef MOE_COORDINATOR_OPENAI_JSON_H_
#define MOE_COORDINATOR_OPENAI_JSON_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "moe/v1/generation.pb.h"

namespace moe::coordinator {

enum class ApiEndpoint { kChatCompletions, kCompletions };

// A request body, parsed.
struct ApiRequest {
  v1::GenerateRequest generate;  // prompt or messages, sampling, stop strings
  std::string model;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  // The name the client gave the token limit ("max_tokens" or "max_completion_tokens"),
  // so that errors about it name the client's field.
  std::string max_tokens_field = "max_tokens";
};

// Parses and type-checks a body of POST /v1/chat/completions or /v1/completions:
// model (required), messages or prompt, max_tokens / max_completion_tokens, temperature,
// top_p, seed, stop (a string or up to 4), stream, stream_options.include_usage, n (1
// only), and the extension top_k. Unknown fields are ignored, as OpenAI's clients send
// many; logprobs, echo and n other than 1 are refused. INVALID_ARGUMENT naming the field
// (ApiErrorParam gives it back). Sampling and length fields left out stay absent in
// `generate`: the service gives them the shared defaults (generation_defaults.h).
absl::StatusOr<ApiRequest> ParseApiRequest(ApiEndpoint endpoint, absl::string_view body);

// The request field a status is about, "" when none.
std::string ApiErrorParam(const absl::Status& status);
// `status` marked as being about request field `param`.
absl::Status WithApiErrorParam(absl::Status status, absl::string_view param);

struct ApiError {
  int http_status;
  std::string body;  // {"error": {"message", "type", "param", "code"}}
};
// OpenAI's error object for a failed status, with its HTTP status: 400 INVALID_ARGUMENT
// (and OUT_OF_RANGE, FAILED_PRECONDITION), 401 UNAUTHENTICATED, 404 NOT_FOUND, 429
// RESOURCE_EXHAUSTED, 503 UNAVAILABLE, 504 DEADLINE_EXCEEDED, 499 CANCELLED, 500 others.
ApiError ToApiError(const absl::Status& status);

// Turns the responses of one generation into the API's replies. One per request; not
// thread-safe.
class ApiResponder {
 public:
  ApiResponder(ApiEndpoint endpoint, std::string model, bool include_usage);

  // The server-sent events ("data: {json}\n\n") for one streamed response: the text
  // as a chunk (the first chat chunk also carries the role); after the last response
  // the finish chunk (finish_reason, and the run's figures as "moe_stats"), the usage
  // chunk when asked for, and "data: [DONE]".
  std::string StreamEvents(const v1::GenerateResponse& response);
  // An error after the stream began: one event with OpenAI's error object, then [DONE].
  static std::string StreamError(const absl::Status& status);
  // The non-streamed reply to a finished generation (its responses in order; the last
  // carries the finish reason and figures).
  std::string Complete(absl::Span<const v1::GenerateResponse> responses) const;

  const std::string& id() const { return id_; }

 private:
  const ApiEndpoint endpoint_;
  const std::string model_;
  const bool include_usage_;
  const std::string id_;
  const int64_t created_;
  bool sent_role_ = false;
};

// "stop" for EOS and stop strings, "length" for the token limit.
absl::string_view FinishReasonJson(v1::FinishReason reason);

// GET /v1/models: the one served model.
std::string ModelsJson(const std::string& model, int64_t created);

}  // namespace moe::coordinator

#endif  // MOE_COORDINATOR_OPENAI_JSON_H_
