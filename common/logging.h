// The project's one logging facility (Debian's Abseil predates absl/log). Each message is
// one line on stderr: severity letter, UTC time to the microsecond, pid, file:line
//   I 2026-12-03T13:20:01.123456Z 4711 worker_main.cc:96] moe-expert-worker serving ...
// so that the interleaved logs of a coordinator and its worker can be told apart and
// ordered. MOE_CHECK aborts on broken invariants, never on bad input (bad input is an
// absl::Status).
#ifndef MOE_COMMON_LOGGING_H_
#define MOE_COMMON_LOGGING_H_

#include <sstream>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moe::logging {

enum class Severity { kDebug, kInfo, kWarning, kError, kFatal };

// Minimum severity printed (kFatal always is); set once at start-up from --log-level.
void SetMinSeverity(Severity severity);
Severity MinSeverity();

// "debug", "info", "warning" or "error" (any case); INVALID_ARGUMENT naming the choices
// otherwise.
absl::StatusOr<Severity> ParseSeverity(absl::string_view name);

// The line prefix of a message: "I 2026-12-03T13:20:01.123456Z 4711 file.cc:12] ".
std::string Prefix(Severity severity, const char* file, int line);

// Collects one message and emits it (and aborts for kFatal) on destruction.
class LogMessage {
 public:
  LogMessage(Severity severity, const char* file, int line);
  ~LogMessage();
  LogMessage(const LogMessage&) = delete;
  LogMessage& operator=(const LogMessage&) = delete;
  std::ostream& stream() { return stream_; }

 private:
  Severity severity_;
  std::ostringstream stream_;
};

// Swallows a stream expression when the log statement is disabled.
struct Voidify {
  void operator&(std::ostream&) {}
};

}  // namespace moe::logging

#define MOE_LOG_SEVERITY_DEBUG ::moe::logging::Severity::kDebug
#define MOE_LOG_SEVERITY_INFO ::moe::logging::Severity::kInfo
#define MOE_LOG_SEVERITY_WARNING ::moe::logging::Severity::kWarning
#define MOE_LOG_SEVERITY_ERROR ::moe::logging::Severity::kError
#define MOE_LOG_SEVERITY_FATAL ::moe::logging::Severity::kFatal

#define MOE_LOG(severity)                                                     \
  (MOE_LOG_SEVERITY_##severity < ::moe::logging::MinSeverity())               \
      ? (void)0                                                               \
      : ::moe::logging::Voidify() &                                           \
            ::moe::logging::LogMessage(MOE_LOG_SEVERITY_##severity, __FILE__, \
                                       __LINE__)                              \
                .stream()

#define MOE_CHECK(condition)                                                  \
  (condition) ? (void)0                                                       \
              : ::moe::logging::Voidify() &                                   \
                    ::moe::logging::LogMessage(MOE_LOG_SEVERITY_FATAL,        \
                                               __FILE__, __LINE__)            \
                            .stream()                                         \
                        << "Check failed: " #condition " "

#endif  // MOE_COMMON_LOGGING_H_
