#include "common/logging.h"

#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace moe::logging {
namespace {
std::atomic<Severity> g_min_severity{Severity::kInfo};

char Letter(Severity s) {
  switch (s) {
    case Severity::kDebug: return 'D';
    case Severity::kInfo: return 'I';
    case Severity::kWarning: return 'W';
    case Severity::kError: return 'E';
    case Severity::kFatal: return 'F';
  }
  return '?';
}
}  // namespace

void SetMinSeverity(Severity severity) {
  g_min_severity.store(severity < Severity::kFatal ? severity : Severity::kError);
}
Severity MinSeverity() { return g_min_severity.load(std::memory_order_relaxed); }

absl::StatusOr<Severity> ParseSeverity(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  if (lower == "debug") return Severity::kDebug;
  if (lower == "info") return Severity::kInfo;
  if (lower == "warning") return Severity::kWarning;
  if (lower == "error") return Severity::kError;
  return absl::InvalidArgumentError(
      absl::StrCat("--log-level \"", name, "\" is not one of debug, info, warning, error"));
}

std::string Prefix(Severity severity, const char* file, int line) {
  timeval now;
  ::gettimeofday(&now, nullptr);
  std::tm utc;
  ::gmtime_r(&now.tv_sec, &utc);
  const char* base = std::strrchr(file, '/');
  return absl::StrFormat("%c %04d-%02d-%02dT%02d:%02d:%02d.%06dZ %d %s:%d] ", Letter(severity),
                         utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min,
                         utc.tm_sec, static_cast<int>(now.tv_usec), static_cast<int>(::getpid()),
                         base ? base + 1 : file, line);
}

LogMessage::LogMessage(Severity severity, const char* file, int line) : severity_(severity) {
  stream_ << Prefix(severity, file, line);
}

LogMessage::~LogMessage() {
  stream_ << '\n';
  const std::string text = stream_.str();
  std::fwrite(text.data(), 1, text.size(), stderr);
  if (severity_ == Severity::kFatal) {
    std::fflush(stderr);
    std::abort();
  }
}

}  // namespace moe::logging
