#include "coordinator/openai_json.h"

#include <algorithm>
#include <limits>
#include <random>

#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "common/expert_stats.h"
#include "common/json_util.h"
#include "nlohmann/json.hpp"

namespace moe::coordinator {
namespace {

using nlohmann::json;

constexpr char kParamPayload[] = "moe.openai/param";
constexpr int kMaxStops = 4;                // as OpenAI
constexpr size_t kMaxStopBytes = 1024;      // each; the filter holds this much text back

absl::Status FieldError(absl::string_view field, absl::string_view message) {
  return WithApiErrorParam(absl::InvalidArgumentError(absl::StrCat(field, " ", message)), field);
}

// A present, non-null field (OpenAI's clients send null for "not given").
const json* Field(const json& body, const char* name) {
  auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

absl::StatusOr<uint64_t> UnsignedField(const json& value, absl::string_view name, uint64_t max) {
  if (value.is_number_unsigned()) {
    const uint64_t v = value.get<uint64_t>();
    if (v <= max) return v;
    return FieldError(name, absl::StrCat("must be at most ", max, ", got ", v));
  }
  if (value.is_number_integer()) {
    return FieldError(name, absl::StrCat("must be >= 0, got ", value.get<int64_t>()));
  }
  return FieldError(name, "must be an integer");
}

absl::StatusOr<float> NumberField(const json& value, absl::string_view name) {
  if (!value.is_number()) return FieldError(name, "must be a number");
  return static_cast<float>(value.get<double>());
}

// A message's content: a string, or an array of text parts.
absl::StatusOr<std::string> ContentText(const json& content, absl::string_view name) {
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) return FieldError(name, "must be a string or an array of text parts");
  std::string text;
  for (const json& part : content) {
    const json* type = part.is_object() ? Field(part, "type") : nullptr;
    const json* part_text = part.is_object() ? Field(part, "text") : nullptr;
    if (type == nullptr || *type != "text" || part_text == nullptr || !part_text->is_string()) {
      return FieldError(name, "parts must be {\"type\": \"text\", \"text\": STRING} (only text is supported)");
    }
    text += part_text->get<std::string>();
  }
  return text;
}

absl::Status ParsePrompt(ApiEndpoint endpoint, const json& body, v1::GenerateRequest* out) {
  if (endpoint == ApiEndpoint::kCompletions) {
    const json* prompt = Field(body, "prompt");
    if (prompt == nullptr) return FieldError("prompt", "is required");
    if (prompt->is_array() && prompt->size() == 1 && (*prompt)[0].is_string()) prompt = &(*prompt)[0];
    if (!prompt->is_string()) return FieldError("prompt", "must be a string (or a list of one string)");
    out->set_prompt(prompt->get<std::string>());
    return absl::OkStatus();
  }
  const json* messages = Field(body, "messages");
  if (messages == nullptr) return FieldError("messages", "is required");
  if (!messages->is_array() || messages->empty()) return FieldError("messages", "must be a non-empty array");
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& m = (*messages)[i];
    const std::string name = absl::StrCat("messages[", i, "]");
    if (!m.is_object()) return FieldError(name, "must be an object");
    const json* role = Field(m, "role");
    if (role == nullptr || !role->is_string()) return FieldError(name + ".role", "must be a string");
    const json* content = Field(m, "content");
    if (content == nullptr) return FieldError(name + ".content", "is required");
    auto* message = out->add_messages();
    message->set_role(role->get<std::string>());
    auto text = ContentText(*content, name + ".content");
    if (!text.ok()) return text.status();
    message->set_content(*std::move(text));
  }
  return absl::OkStatus();
}

absl::Status ParseStops(const json& stop, v1::GenerateRequest* out) {
  std::vector<const json*> stops;
  if (stop.is_string()) {
    stops.push_back(&stop);
  } else if (stop.is_array()) {
    if (stop.size() > kMaxStops) return FieldError("stop", absl::StrCat("has more than ", kMaxStops, " strings"));
    for (const json& s : stop) stops.push_back(&s);
  } else {
    return FieldError("stop", "must be a string or an array of strings");
  }
  for (const json* s : stops) {
    if (!s->is_string()) return FieldError("stop", "must be a string or an array of strings");
    const std::string& text = s->get_ref<const std::string&>();
    if (text.empty()) return FieldError("stop", "strings must not be empty");
    if (text.size() > kMaxStopBytes) {
      return FieldError("stop", absl::StrCat("strings must be at most ", kMaxStopBytes, " bytes"));
    }
    out->add_stop(text);
  }
  return absl::OkStatus();
}

std::string RandomId(absl::string_view prefix) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return absl::StrCat(prefix, absl::Hex(rng(), absl::kZeroPad16), absl::Hex(rng() >> 32, absl::kZeroPad8));
}

std::string Dump(const json& value) {
  // Generated text is valid UTF-8 piece by piece; replace rather than throw should a
  // tokenizer ever emit a broken sequence.
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string Event(const json& value) { return absl::StrCat("data: ", Dump(value), "\n\n"); }

json Usage(const v1::GenerationStats& stats) {
  return {{"prompt_tokens", stats.prompt_tokens()},
          {"completion_tokens", stats.generated_tokens()},
          {"total_tokens", uint64_t{stats.prompt_tokens()} + stats.generated_tokens()}};
}

// The run's own figures (not part of OpenAI's API): the chat page shows them.
json MoeStats(const v1::GenerationStats& stats) {
  return {{"time_to_first_token_s", stats.time_to_first_token_s()},
          {"prefill_tokens_per_s", stats.prefill_tokens_per_s()},
          {"decode_tokens_per_s", stats.decode_tokens_per_s()},
          {"expert_cache_hits", stats.expert_cache_hits()},
          {"expert_cache_misses", stats.expert_cache_misses()},
          {"expert_cache_hit_ratio", HitRatio(stats.expert_cache_hits(), stats.expert_cache_misses())},
          {"expert_prefetch_hits", stats.expert_prefetch_hits()}};
}

absl::string_view ErrorType(int http_status) {
  switch (http_status) {
    case 400: return "invalid_request_error";
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 429: return "rate_limit_error";
    case 503: return "service_unavailable";
    default: return "server_error";
  }
}

json ErrorObject(const absl::Status& status, int http_status) {
  const std::string param = ApiErrorParam(status);
  json error = {{"message", std::string(status.message())},
                {"type", ErrorType(http_status)},
                {"param", param.empty() ? json() : json(param)},
                {"code", param == "model" && http_status == 404 ? json("model_not_found") : json()}};
  return {{"error", std::move(error)}};
}

}  // namespace

absl::Status WithApiErrorParam(absl::Status status, absl::string_view param) {
  status.SetPayload(kParamPayload, absl::Cord(param));
  return status;
}

std::string ApiErrorParam(const absl::Status& status) {
  auto payload = status.GetPayload(kParamPayload);
  return payload.has_value() ? std::string(*payload) : std::string();
}

absl::StatusOr<ApiRequest> ParseApiRequest(ApiEndpoint endpoint, absl::string_view body_text) {
  absl::StatusOr<json> parsed = ParseJsonObject(body_text, "the request body", /*max_depth=*/8);
  if (!parsed.ok()) return parsed.status();
  const json& body = *parsed;
  ApiRequest out;
  const json* model = Field(body, "model");
  if (model == nullptr || !model->is_string() || model->get_ref<const std::string&>().empty()) {
    return FieldError("model", "is required (a string; GET /v1/models lists it)");
  }
  out.model = model->get<std::string>();
  if (absl::Status s = ParsePrompt(endpoint, body, &out.generate); !s.ok()) return s;

  v1::GenerateRequest& g = out.generate;
  // A field left out stays absent: the service applies the shared defaults.
  for (const char* name : {"max_tokens", "max_completion_tokens"}) {
    if (const json* v = Field(body, name)) {
      auto n = UnsignedField(*v, name, std::numeric_limits<uint32_t>::max());
      if (!n.ok()) return n.status();
      if (*n < 1) return FieldError(name, "must be at least 1");
      g.set_max_new_tokens(static_cast<uint32_t>(*n));
      out.max_tokens_field = name;
    }
  }
  if (const json* v = Field(body, "temperature")) {
    auto t = NumberField(*v, "temperature");
    if (!t.ok()) return t.status();
    g.set_temperature(*t);
  }
  if (const json* v = Field(body, "top_p")) {
    auto p = NumberField(*v, "top_p");
    if (!p.ok()) return p.status();
    // 0 means "no cut" on the wire; here it is a value the sampler refuses.
    if (!(*p > 0.0f)) return FieldError("top_p", absl::StrCat("must be in (0, 1], got ", *p));
    g.set_top_p(*p);
  }
  if (const json* v = Field(body, "top_k")) {
    auto k = UnsignedField(*v, "top_k", std::numeric_limits<int32_t>::max());
    if (!k.ok()) return k.status();
    g.set_top_k(static_cast<uint32_t>(*k));
  }
  if (const json* v = Field(body, "seed")) {
    auto seed = UnsignedField(*v, "seed", std::numeric_limits<uint64_t>::max());
    if (!seed.ok()) return seed.status();
    g.set_seed(*seed);
  }
  if (const json* v = Field(body, "stop")) {
    if (absl::Status s = ParseStops(*v, &g); !s.ok()) return s;
  }
  if (const json* v = Field(body, "n")) {
    if (!v->is_number_integer() || v->get<int64_t>() != 1) return FieldError("n", "must be 1 (one choice per request)");
  }
  for (const char* name : {"logprobs", "echo"}) {
    if (const json* v = Field(body, name); v != nullptr && *v != false) {
      return FieldError(name, "is not supported");
    }
  }
  if (const json* v = Field(body, "stream")) {
    if (!v->is_boolean()) return FieldError("stream", "must be a boolean");
    out.stream = v->get<bool>();
  }
  if (const json* v = Field(body, "stream_options")) {
    if (!out.stream) return FieldError("stream_options", "is only allowed when stream is true");
    if (!v->is_object()) return FieldError("stream_options", "must be an object");
    if (const json* usage = Field(*v, "include_usage")) {
      if (!usage->is_boolean()) return FieldError("stream_options.include_usage", "must be a boolean");
      out.include_usage = usage->get<bool>();
    }
  }
  return out;
}

ApiError ToApiError(const absl::Status& status) {
  int http = 500;
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition: http = 400; break;
    case absl::StatusCode::kUnauthenticated: http = 401; break;
    case absl::StatusCode::kPermissionDenied: http = 403; break;
    case absl::StatusCode::kNotFound: http = 404; break;
    case absl::StatusCode::kResourceExhausted: http = 429; break;
    case absl::StatusCode::kCancelled: http = 499; break;
    case absl::StatusCode::kUnavailable: http = 503; break;
    case absl::StatusCode::kDeadlineExceeded: http = 504; break;
    default: break;
  }
  return {http, Dump(ErrorObject(status, http))};
}

absl::string_view FinishReasonJson(v1::FinishReason reason) {
  return reason == v1::FINISH_REASON_LENGTH ? "length" : "stop";
}

ApiResponder::ApiResponder(ApiEndpoint endpoint, std::string model, bool include_usage)
    : endpoint_(endpoint),
      model_(std::move(model)),
      include_usage_(include_usage),
      id_(RandomId(endpoint == ApiEndpoint::kChatCompletions ? "chatcmpl-" : "cmpl-")),
      created_(absl::ToUnixSeconds(absl::Now())) {}

std::string ApiResponder::StreamEvents(const v1::GenerateResponse& response) {
  const bool chat = endpoint_ == ApiEndpoint::kChatCompletions;
  auto chunk = [&](json choice) {
    choice["index"] = 0;
    if (!chat) choice["logprobs"] = nullptr;
    return json{{"id", id_},
                {"object", chat ? "chat.completion.chunk" : "text_completion"},
                {"created", created_},
                {"model", model_},
                {"choices", json::array({std::move(choice)})}};
  };
  std::string events;
  if (!response.text().empty() || (chat && !sent_role_)) {
    json delta = {{"content", response.text()}};
    if (chat && !sent_role_) delta["role"] = "assistant";
    sent_role_ = true;
    events += Event(chunk(chat ? json{{"delta", std::move(delta)}, {"finish_reason", nullptr}}
                               : json{{"text", response.text()}, {"finish_reason", nullptr}}));
  }
  if (response.finish_reason() == v1::FINISH_REASON_UNSPECIFIED) return events;
  const std::string finish(FinishReasonJson(response.finish_reason()));
  json last = chunk(chat ? json{{"delta", json::object()}, {"finish_reason", finish}}
                         : json{{"text", ""}, {"finish_reason", finish}});
  last["moe_stats"] = MoeStats(response.stats());
  events += Event(last);
  if (include_usage_) {
    events += Event({{"id", id_},
                     {"object", chat ? "chat.completion.chunk" : "text_completion"},
                     {"created", created_},
                     {"model", model_},
                     {"choices", json::array()},
                     {"usage", Usage(response.stats())}});
  }
  return events + "data: [DONE]\n\n";
}

std::string ApiResponder::StreamError(const absl::Status& status) {
  return Event(ErrorObject(status, ToApiError(status).http_status)) + "data: [DONE]\n\n";
}

std::string ApiResponder::Complete(absl::Span<const v1::GenerateResponse> responses) const {
  std::string text;
  for (const auto& r : responses) text += r.text();
  const v1::GenerateResponse empty;
  const v1::GenerateResponse& last = responses.empty() ? empty : responses.back();
  const bool chat = endpoint_ == ApiEndpoint::kChatCompletions;
  json choice = {{"index", 0}, {"finish_reason", FinishReasonJson(last.finish_reason())}};
  if (chat) {
    choice["message"] = {{"role", "assistant"}, {"content", std::move(text)}};
    choice["logprobs"] = nullptr;
  } else {
    choice["text"] = std::move(text);
    choice["logprobs"] = nullptr;
  }
  return Dump({{"id", id_},
               {"object", chat ? "chat.completion" : "text_completion"},
               {"created", created_},
               {"model", model_},
               {"choices", json::array({std::move(choice)})},
               {"usage", Usage(last.stats())},
               {"moe_stats", MoeStats(last.stats())}});
}

std::string ModelsJson(const std::string& model, int64_t created) {
  return Dump({{"object", "list"},
               {"data", json::array({{{"id", model},
                                      {"object", "model"},
                                      {"created", created},
                                      {"owned_by", "moe-offload"}}})}});
}

}  // namespace moe::coordinator
