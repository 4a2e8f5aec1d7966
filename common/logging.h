// The project's one logging facility (Debian's Abseil predates absl/log). Messages go to
// stderr with a severity letter; MOE_CHECK aborts on broken invariants, never on bad
// input (bad input is an absl::Status).
#ifndef MOE_COMMON_LOGGING_H_
#define MOE_COMMON_LOGGING_H_

#include <sstream>

namespace moe::logging {

enum class Severity { kInfo, kWarning, kError, kFatal };

// Minimum severity printed; set once at start-up (e.g. from a --verbose flag).
void SetMinSeverity(Severity severity);
Severity MinSeverity();

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
